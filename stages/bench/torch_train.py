#!/usr/bin/env python3
"""The PyTorch peer of `distill bench train`: a plain eager PyTorch distillation step (teacher
forward, student forward and backward on KL(teacher || student), gradient clipping, AdamW, bf16)
for a Llama student and for its 50% Mamba-2 hybrid, on random token windows, in the shape of a
Hugging Face config.json (random weights: speed does not depend on them).

The hybrid's Mamba-2 mixer is written here from METHOD.md section 1, like
tests/golden/make_hybrid_golden.py, but with the chunked SSD scan (the sequential recurrence of
the golden script is far too slow to time): in_proj rows [z | x | B | C | dt], depthwise causal
conv over [x, B, C] before the grouped-query repeat, softplus(dt + dt_bias), A = -exp(A_log),
D skip, gated RMSNorm per head, out_proj.

    python3 stages/bench/torch_train.py CONFIG.json [--batch 16] [--seq 2048] [--steps 10]

Prints one JSON line per student (the fields of `distill bench train --distill`).
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM


def segment_sums(a):
    """a [..., T] -> [..., T, T]: out[i, j] = a[j+1] + ... + a[i] for j <= i, -inf above."""
    t = a.shape[-1]
    cs = torch.cumsum(a, dim=-1)
    out = cs[..., :, None] - cs[..., None, :]
    keep = torch.ones(t, t, dtype=torch.bool, device=a.device).tril()
    return out.masked_fill(~keep, float("-inf"))


def ssd_chunked(x, dt_a, b, c, chunk):
    """y_t = sum_{s<=t} C_t . (prod_{s<r<=t} exp(dtA_r)) B_s x_s (x already scaled by dt).
    x [b, l, h, p], dt_a [b, l, h], b/c [b, l, h, n]; l a multiple of chunk."""
    bs, l, h, p = x.shape
    n = b.shape[-1]
    k = l // chunk
    x, b, c = (t.reshape(bs, k, chunk, h, -1) for t in (x, b, c))
    a = dt_a.reshape(bs, k, chunk, h).permute(0, 3, 1, 2)  # [b, h, k, chunk]
    a_cum = torch.cumsum(a, dim=-1)
    # Within a chunk: a masked, decayed attention-like product.
    decay = torch.exp(segment_sums(a))  # [b, h, k, chunk, chunk]
    scores = torch.einsum("bkihn,bkjhn->bhkij", c, b) * decay
    y_diag = torch.einsum("bhkij,bkjhp->bkihp", scores, x)
    # Each chunk's final state, then carried across chunks.
    to_end = torch.exp(a_cum[..., -1:] - a_cum)  # [b, h, k, chunk]
    states = torch.einsum("bkjhn,bhkj,bkjhp->bkhpn", b, to_end, x)
    chunk_decay = torch.exp(segment_sums(F.pad(a_cum[..., -1], (1, 0))))  # [b, h, k+1, k+1]
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)
    carried = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)[:, :-1]
    y_off = torch.einsum("bkihn,bkhpn,bhki->bkihp", c, carried, torch.exp(a_cum))
    return (y_diag + y_off).reshape(bs, l, h, p)


class Mamba2(nn.Module):
    def __init__(self, d_model, n_heads, n_kv, d_state, chunk, d_conv=4):
        super().__init__()
        self.h, self.kv, self.n, self.chunk = n_heads, n_kv, d_state, chunk
        self.d_inner, self.d_xb = n_heads * d_state, n_kv * d_state
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * self.d_xb + n_heads, bias=False)
        ch = self.d_inner + 2 * self.d_xb
        self.conv1d = nn.Conv1d(ch, ch, d_conv, groups=ch, padding=d_conv - 1, bias=True)
        self.dt_bias = nn.Parameter(torch.zeros(n_heads))
        self.A_log = nn.Parameter(torch.log(torch.empty(n_heads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(n_heads))
        self.norm_weight = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, u):
        bs, l, _ = u.shape
        h, kv, n = self.h, self.kv, self.n
        z, xbc, dt = torch.split(self.in_proj(u), [self.d_inner, 2 * self.d_xb + self.d_inner, h], dim=-1)
        xbc = F.silu(self.conv1d(xbc.transpose(1, 2))[..., :l].transpose(1, 2))
        x, b, c = torch.split(xbc, [self.d_xb, self.d_xb, self.d_inner], dim=-1)
        x = x.reshape(bs, l, kv, n).repeat_interleave(h // kv, dim=2)
        b = b.reshape(bs, l, kv, n).repeat_interleave(h // kv, dim=2)
        c = c.reshape(bs, l, h, n)
        dt = F.softplus(dt.float() + self.dt_bias.float())  # [b, l, h], f32 like the reference
        a = -torch.exp(self.A_log.float())
        y = ssd_chunked((x.float() * dt[..., None]), dt * a, b.float(), c.float(), self.chunk)
        y = (y + self.D.float()[:, None] * x.float()).to(u.dtype)
        g = (y.reshape(bs, l, self.d_inner) * F.silu(z)).reshape(bs, l, h, n).float()
        g = (g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + 1e-5)).to(u.dtype)
        return self.out_proj(g.reshape(bs, l, self.d_inner) * self.norm_weight)


class MambaLayer(nn.Module):
    def __init__(self, layer, mamba):
        super().__init__()
        self.mamba, self.mlp = mamba, layer.mlp
        self.input_layernorm, self.post_attention_layernorm = layer.input_layernorm, layer.post_attention_layernorm

    def forward(self, hidden_states, **kwargs):
        h = hidden_states + self.mamba(self.input_layernorm(hidden_states))
        return h + self.mlp(self.post_attention_layernorm(h))


def interleaved(n_layers, fraction):
    """The paper's interleaving: keep attention every 1/fraction layers (the last of each group)."""
    every = round(1 / fraction)
    return [i for i in range(n_layers) if i % every == every - 1]


def hybrid(cfg, fraction, chunk):
    model = LlamaForCausalLM(cfg)
    keep = interleaved(cfg.num_hidden_layers, fraction)
    for i, layer in enumerate(model.model.layers):
        if i not in keep:
            model.model.layers[i] = MambaLayer(layer, Mamba2(cfg.hidden_size, cfg.num_attention_heads,
                                                             cfg.num_key_value_heads, cfg.head_dim, chunk))
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--micro-batch", type=int)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--freeze", choices=["none", "non_mamba"], default="none",
                    help="non_mamba: the paper's layerwise step, only the Mamba mixers train (hybrid only)")
    args = ap.parse_args()
    micro = args.micro_batch or args.batch
    cfg = LlamaConfig.from_json_file(args.config)
    cfg._attn_implementation = "sdpa"
    dev, dtype = "cuda", torch.bfloat16
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(cfg).to(dev, dtype).eval()
    students = [("hybrid 50%", lambda: hybrid(cfg, 0.5, args.chunk))]
    if args.freeze == "none":  # frozen outside its Mamba mixers a Llama would train nothing
        students.insert(0, ("llama", lambda: LlamaForCausalLM(cfg)))
    for name, build in students:
        student = build().to(dev, dtype).train()
        if args.freeze == "non_mamba":
            for pname, p in student.named_parameters():
                p.requires_grad_(".mamba." in pname)
        opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)
        gen = torch.Generator(device=dev).manual_seed(0)
        times = []
        for step in range(args.warmup + args.steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.batch // micro):
                ids = torch.randint(0, cfg.vocab_size, (micro, args.seq), device=dev, generator=gen)
                with torch.no_grad():
                    t_logp = F.log_softmax(teacher(input_ids=ids).logits.float(), -1)
                s_logp = F.log_softmax(student(input_ids=ids).logits.float(), -1)
                kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean() * (micro / args.batch)
                kl.backward()
                del t_logp, s_logp
            torch.nn.utils.clip_grad_norm_([p for p in student.parameters() if p.requires_grad], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            if step >= args.warmup:
                times.append(time.perf_counter() - t0)
        secs = statistics.median(times)
        tok_s = args.batch * args.seq / secs
        p_student = sum(p.numel() for p in student.parameters())  # tied head counted once = the head
        p_teacher = sum(p.numel() for p in teacher.parameters())
        hd = cfg.num_attention_heads * cfg.head_dim
        attn_layers = cfg.num_hidden_layers if name == "llama" else len(interleaved(cfg.num_hidden_layers, 0.5))
        # Frozen weights skip their weight gradients: 4 FLOPs per parameter (forward, input
        # gradient) instead of 6, as `distill bench train` counts them.
        p_trained = sum(p.numel() for p in student.parameters() if p.requires_grad)
        flops = 4 * p_student + 2 * p_trained + 12 * attn_layers * hd * args.seq + 2 * p_teacher + 4 * cfg.num_hidden_layers * hd * args.seq
        print(json.dumps({"bench": "distill_step", "impl": "pytorch", "model": name, "batch": args.batch,
                          "micro_batch": micro, "seq": args.seq, "freeze": args.freeze, "steps": args.steps, "tokens_per_s": tok_s,
                          "ms_per_step": 1e3 * secs, "flops_per_token": flops, "tflops": flops * tok_s / 1e12,
                          "mfu": flops * tok_s / 1e12 / args.peak_tflops,
                          "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30}), flush=True)
        del student, opt
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


if __name__ == "__main__":
    main()

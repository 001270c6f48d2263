#!/usr/bin/env python3
"""Golden fixtures for the hybrids (issue 4): a tiny GQA Llama converted into 50% Mamba-2 and
Mamba-1 hybrids the reference way, with their logits, for our Rust tests to match.

Plain PyTorch written from docs/METHOD.md section 1 (not the reference code): the mixers below
use the sequential recurrence, the definition our chunked scan must equal.

How to rerun (CPU only, seconds; the same venv as make_llama_golden.py):

    /tmp/golden-venv/bin/python tests/golden/make_hybrid_golden.py

It writes, under tests/golden/:
  tiny-hybrid-teacher/  a 4-layer LlamaForCausalLM (4 heads, 2 KV heads, head_dim 8, d_model 32)
  tiny-hybrid-mamba2/   its 50% Mamba-2 hybrid (attention kept at layers 1 and 3): config.json,
                        mamba_config.json (chunk_size 5, so 12 tokens are 2 chunks and a ragged
                        one), model.safetensors, golden.safetensors (input_ids [2, 12], logits)
  tiny-hybrid-mamba1/   the same with Mamba-1 (d_state 4 so the 16-wide-slice quirk shows at
                        this size: slices of d_state channels, not heads)
"""
import json
import math
import pathlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

HERE = pathlib.Path(__file__).resolve().parent
ATTN_LAYERS = [1, 3]  # 50%: keep every 2nd layer's attention (METHOD.md 2)


def dt_bias_init(n):
    dt = torch.exp(torch.rand(n) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
    return dt + torch.log(-torch.expm1(-dt))  # softplus^-1


def causal_conv(conv, v):
    """Depthwise causal conv of v [b, l, c]: PyTorch's padded Conv1d cut to the first l outputs."""
    return conv(v.transpose(1, 2))[..., : v.shape[1]].transpose(1, 2)


class Mamba2(nn.Module):
    """in_proj rows [z | x | B | C | dt]; conv over [x, B, C] before the GQA repeat; heads = query
    heads, headdim = d_state = head_dim; gated RMSNorm per head; out_proj."""

    def __init__(self, d_model, n_heads, n_kv, d_state, d_conv=4):
        super().__init__()
        self.h, self.kv, self.n = n_heads, n_kv, d_state
        self.d_inner, self.d_xb = n_heads * d_state, n_kv * d_state
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * self.d_xb + n_heads, bias=False)
        ch = self.d_inner + 2 * self.d_xb
        self.conv1d = nn.Conv1d(ch, ch, d_conv, groups=ch, padding=d_conv - 1, bias=True)
        self.dt_bias = nn.Parameter(dt_bias_init(n_heads))
        self.A_log = nn.Parameter(torch.log(torch.empty(n_heads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(n_heads))
        self.norm = nn.Module()
        self.norm.weight = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, u):
        b, l, _ = u.shape
        h, kv, n = self.h, self.kv, self.n
        z, xbc, dt = torch.split(self.in_proj(u), [self.d_inner, 2 * self.d_xb + self.d_inner, h], dim=-1)
        xbc = F.silu(causal_conv(self.conv1d, xbc))
        x, B, C = torch.split(xbc, [self.d_xb, self.d_xb, self.d_inner], dim=-1)
        x = x.reshape(b, l, kv, n).repeat_interleave(h // kv, dim=2)  # head i reads KV head i // (h/kv)
        B = B.reshape(b, l, kv, n).repeat_interleave(h // kv, dim=2)
        C = C.reshape(b, l, h, n)
        dt = F.softplus(dt + self.dt_bias)  # [b, l, h]
        A = -torch.exp(self.A_log)
        state = torch.zeros(b, h, n, n)  # [b, h, p, n]
        ys = []
        for t in range(l):
            state = torch.exp(dt[:, t] * A)[..., None, None] * state \
                + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
            ys.append((state * C[:, t, :, None, :]).sum(-1))
        y = torch.stack(ys, 1) + self.D[:, None] * x  # [b, l, h, p]
        g = (y.reshape(b, l, self.d_inner) * F.silu(z)).reshape(b, l, h, n)
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + 1e-5)
        return self.out_proj(g.reshape(b, l, self.d_inner) * self.norm.weight)


class Mamba1(nn.Module):
    """The reference's Mamba-1 variant with its quirks: x and B repeated in d_state-wide slices,
    conv after the repeat, channel i reads B/C slice i // d_state, dt bias added twice."""

    def __init__(self, d_model, d_inner, d_xb, d_state, d_conv=4):
        super().__init__()
        self.d_inner, self.d_xb, self.n = d_inner, d_xb, d_state
        r = math.ceil(d_model / 16)
        self.in_proj_x = nn.Linear(d_model, d_xb, bias=False)
        self.in_proj_z = nn.Linear(d_model, d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=True)
        self.B_proj = nn.Linear(d_model, d_xb, bias=False)
        self.C_proj = nn.Linear(d_model, d_inner, bias=False)
        self.dt_proj_down = nn.Linear(d_model, r, bias=False)
        self.dt_proj = nn.Linear(r, d_inner, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -r ** -0.5, r ** -0.5)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt_bias_init(d_inner))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, u):
        b, l, _ = u.shape
        n, rep = self.n, self.d_inner // self.d_xb
        slices = lambda v: v.reshape(b, l, -1, n).repeat_interleave(rep, dim=2)  # noqa: E731
        x = F.silu(causal_conv(self.conv1d, slices(self.in_proj_x(u)).reshape(b, l, self.d_inner)))
        B = slices(self.B_proj(u)).repeat_interleave(n, dim=2)  # [b, l, d_inner, n]
        C = self.C_proj(u).reshape(b, l, -1, n).repeat_interleave(n, dim=2)
        dt = F.softplus(self.dt_proj(self.dt_proj_down(u)) + self.dt_proj.bias)  # bias twice
        A = -torch.exp(self.A_log)  # [d_inner, n]
        state = torch.zeros(b, self.d_inner, n)
        ys = []
        for t in range(l):
            state = torch.exp(dt[:, t, :, None] * A) * state + (dt[:, t] * x[:, t])[..., None] * B[:, t]
            ys.append((state * C[:, t]).sum(-1))
        y = (torch.stack(ys, 1) + self.D * x) * F.silu(self.in_proj_z(u))
        return self.out_proj(y)


class MambaLayer(nn.Module):
    """A decoder layer with the teacher's norms and MLP around a Mamba mixer."""

    def __init__(self, teacher_layer, mamba):
        super().__init__()
        self.mamba = mamba
        self.mlp = teacher_layer.mlp
        self.input_layernorm = teacher_layer.input_layernorm
        self.post_attention_layernorm = teacher_layer.post_attention_layernorm

    def forward(self, hidden_states, **kwargs):
        h = hidden_states + self.mamba(self.input_layernorm(hidden_states))
        return h + self.mlp(self.post_attention_layernorm(h))


def convert(teacher, cfg, variant):
    """The reference conversion: x <- v_proj, B <- k_proj, C <- q_proj, out_proj <- o_proj."""
    model = LlamaForCausalLM(cfg).eval()
    model.load_state_dict(teacher.state_dict())
    h, kv, hd, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.hidden_size
    d_inner, d_xb = h * hd, kv * hd
    for i, layer in enumerate(model.model.layers):
        if i in ATTN_LAYERS:
            continue
        attn = layer.self_attn
        with torch.no_grad():
            if variant == "mamba2":
                m = Mamba2(d, h, kv, hd)
                rows = m.in_proj.weight
                rows[d_inner:d_inner + d_xb] = attn.v_proj.weight
                rows[d_inner + d_xb:d_inner + 2 * d_xb] = attn.k_proj.weight
                rows[d_inner + 2 * d_xb:2 * d_inner + 2 * d_xb] = attn.q_proj.weight
            else:
                m = Mamba1(d, d_inner, d_xb, 4)
                m.in_proj_x.weight.copy_(attn.v_proj.weight)
                m.B_proj.weight.copy_(attn.k_proj.weight)
                m.C_proj.weight.copy_(attn.q_proj.weight)
            m.out_proj.weight.copy_(attn.o_proj.weight)
        model.model.layers[i] = MambaLayer(layer, m)
    mamba_config = {
        "d_model": d, "rms_norm_eps": cfg.rms_norm_eps, "vocab_size": cfg.vocab_size, "d_inner": d_inner,
        "d_xb": d_xb, "intermediate_size": cfg.intermediate_size, "hidden_act": "silu",
        "n_layer": cfg.num_hidden_layers, "attn_layers": ATTN_LAYERS,
        "ssm_cfg": {"expand": 1, "ngroups": h, "d_state": hd, "chunk_size": 5} if variant == "mamba2"
        else {"expand": 1, "d_state": 4},
    }
    return model.eval(), mamba_config


def main():
    torch.manual_seed(4)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                      rms_norm_eps=1e-5, tie_word_embeddings=False)
    teacher = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger weights than the default init, so logits are not all ~0
        for name, p in teacher.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
    teacher.save_pretrained(HERE / "tiny-hybrid-teacher", safe_serialization=True)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(11))
    for variant in ["mamba2", "mamba1"]:
        model, mamba_config = convert(teacher, cfg, variant)
        out = HERE / f"tiny-hybrid-{variant}"
        out.mkdir(exist_ok=True)
        cfg.to_json_file(out / "config.json")
        (out / "mamba_config.json").write_text(json.dumps(mamba_config, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"),
                  metadata={"format": "pt"})
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits.float()
        save_file({"input_ids": ids.to(torch.int64), "logits": logits.contiguous()}, str(out / "golden.safetensors"))
        print(variant, "logits", tuple(logits.shape), "max |logit|", float(logits.abs().max()))


if __name__ == "__main__":
    main()

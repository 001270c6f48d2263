#!/usr/bin/env python3
"""transformers' own bf16 error on the golden fixtures, measured like `distill bench parity`:
the fixture's checkpoint in bf16 on the GPU against the f32 logits stored in the fixture. A bf16
forward pass of ours should land near this, not at zero.

    python3 stages/bench/parity_transformers.py tests/golden/tiny-gqa-untied ...
"""
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM


def main():
    for folder in sys.argv[1:]:
        g = load_file(f"{folder}/golden.safetensors")
        model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).to("cuda").eval()
        with torch.no_grad():
            out = model(input_ids=g["input_ids"].cuda(), attention_mask=g["attention_mask"].cuda()).logits.float().cpu()
        ref, valid = g["logits"], g["attention_mask"].bool()
        o, r = out[valid], ref[valid]  # [positions, vocab]
        rel = ((o - r).norm(dim=-1) / r.norm(dim=-1)).max().item()
        print(json.dumps({"bench": "parity", "impl": "transformers", "fixture": folder.rstrip("/").split("/")[-1],
                          "dtype": "bf16", "max_abs": (o - r).abs().max().item(), "max_rel_l2": rel,
                          "positions": int(valid.sum())}), flush=True)


if __name__ == "__main__":
    main()

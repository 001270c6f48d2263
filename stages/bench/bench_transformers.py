#!/usr/bin/env python3
"""transformers' side of the teacher benchmark (see examples/bench_teacher.rs): prefill and decode
throughput of a model folder, batch 1 and 32, prompt 512, 128 decoded tokens, same inputs.

    python stages/bench/bench_transformers.py MODEL_DIR [cuda|cpu] [bf16|f32]
"""
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM

PROMPT, DECODE, REPEATS = 512, 128, 3


def main():
    folder = sys.argv[1]
    device = sys.argv[2] if len(sys.argv) > 2 else "cuda"
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[sys.argv[3] if len(sys.argv) > 3 else "bf16"]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for batch in (1, 32):
        ids = torch.tensor([[(i * 7919 % 30000) + 100 for i in range(b * PROMPT, (b + 1) * PROMPT)]
                            for b in range(batch)], device=device)

        def run(decode):
            with torch.no_grad():
                sync()
                t0 = time.perf_counter()
                out = model(input_ids=ids, use_cache=True)
                cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                sync()
                prefill = time.perf_counter() - t0
                t1 = time.perf_counter()
                for _ in range(decode):
                    out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
                    cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                sync()
                return prefill, time.perf_counter() - t1

        run(DECODE)  # warm-up over the same lengths, then the median of REPEATS runs
        runs = [run(DECODE) for _ in range(REPEATS)]
        prefill = sorted(r[0] for r in runs)[REPEATS // 2]
        decode = sorted(r[1] for r in runs)[REPEATS // 2]
        print(json.dumps({"impl": "transformers", "device": device, "dtype": str(dtype).split(".")[-1],
                          "batch": batch, "prompt": PROMPT, "decode": DECODE, "repeats": REPEATS,
                          "prefill_tok_s": batch * PROMPT / prefill, "decode_tok_s": batch * DECODE / decode}))


if __name__ == "__main__":
    main()

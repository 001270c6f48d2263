#!/usr/bin/env python3
"""transformers' side of `distill bench decode`: prefill and greedy decoding throughput with the
same inputs, batch sizes and context lengths, printing the same JSON fields.

    python3 stages/bench/bench_transformers.py (--model DIR | --random CONFIG.json)
        [--batch 1,32] [--prompt 512] [--decode 128] [--repeats 3] [--dtype bf16]
"""
import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM


def ints(s):
    return [int(x) for x in s.split(",")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--random")
    ap.add_argument("--batch", type=ints, default=[1, 32])
    ap.add_argument("--prompt", type=ints, default=[512])
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[args.dtype]
    if args.model:
        model, label = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype), args.model
    else:
        torch.manual_seed(0)
        model, label = LlamaForCausalLM(LlamaConfig.from_json_file(args.random)), "random 100% attention"
    model = model.to(args.device, dtype).eval()
    vocab = model.config.vocab_size
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for batch in args.batch:
        for prompt in args.prompt:
            ids = torch.tensor([[(i * 7919 + 13) % vocab for i in range(b * prompt, (b + 1) * prompt)]
                                for b in range(batch)], device=args.device)

            def run():
                with torch.no_grad():
                    sync()
                    t0 = time.perf_counter()
                    out = model(input_ids=ids, use_cache=True)
                    cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                    sync()
                    prefill = time.perf_counter() - t0
                    t1 = time.perf_counter()
                    for _ in range(args.decode):
                        out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
                        cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                    sync()
                    return prefill, time.perf_counter() - t1

            run()  # warm-up over the same shapes
            runs = [run() for _ in range(args.repeats)]
            prefill = statistics.median(r[0] for r in runs)
            decode = statistics.median(r[1] for r in runs)
            print(json.dumps({"bench": "decode", "impl": "transformers", "model": label, "dtype": args.dtype,
                              "batch": batch, "prompt": prompt, "decode": args.decode, "repeats": args.repeats,
                              "prefill_tok_s": batch * prompt / prefill, "decode_tok_s": batch * args.decode / decode,
                              "ms_per_step": 1e3 * decode / args.decode}), flush=True)


if __name__ == "__main__":
    main()

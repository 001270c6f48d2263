"""PyTorch's side of `distill bench matmul`: the same shapes (MxKxN, `t`: left operand stored
transposed), bf16 on the GPU, median of timed products after 3 warm-up ones. One JSON line per
shape, in the fields our bench prints.

    python3 stages/bench/matmul_torch.py [--shapes 16384x576x1536,...] [--repeats 20]
"""
import argparse
import json

import torch

DEFAULT = ("16384x576x576,16384x576x192,16384x576x1536,16384x1536x576,16384x576x49152,"
           "576x16384x1536t,1536x16384x576t,576x16384x49152t")


def parse(s):
    t = s.endswith("t")
    m, k, n = (int(x) for x in s.rstrip("t").split("x"))
    return m, k, n, t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=DEFAULT)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    dev, dtype = "cuda", torch.bfloat16
    for s in args.shapes.split(","):
        m, k, n, t = parse(s)
        lhs = torch.randn(k, m, device=dev, dtype=dtype).t() if t else torch.randn(m, k, device=dev, dtype=dtype)
        rhs = torch.randn(k, n, device=dev, dtype=dtype)
        times = []
        for i in range(args.repeats + 3):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            out = lhs @ rhs
            end.record()
            torch.cuda.synchronize()
            if i >= 3:
                times.append(start.elapsed_time(end) / 1e3)
            del out
        secs = sorted(times)[len(times) // 2]
        print(json.dumps({"bench": "matmul", "impl": "torch", "device": torch.cuda.get_device_name(), "dtype": "bf16",
                          "shape": s, "ms": secs * 1e3, "tflops": 2 * m * k * n / secs / 1e12}), flush=True)


if __name__ == "__main__":
    main()

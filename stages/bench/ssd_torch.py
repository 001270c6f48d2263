#!/usr/bin/env python3
"""The PyTorch peer of `distill bench ssd`: the chunked SSD scan of torch_train.py (plain eager
PyTorch, einsums on cuBLAS) timed forward and forward with backward, f32, at the same shape.

    python3 stages/bench/ssd_torch.py [--shape 16,2048,9,64,64] [--chunk 256] [--repeats 5]

Prints one JSON line with the fields of `distill bench ssd`.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_train import ssd_chunked  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="16,2048,9,64,64")
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    bs, l, h, p, n = (int(v) for v in args.shape.split(","))
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(bs, l, h, p, device=dev, generator=g, requires_grad=True)
    dt = (torch.rand(bs, l, h, device=dev, generator=g) * 0.099 + 0.001).requires_grad_()
    a = -(torch.rand(h, device=dev, generator=g) * 15 + 1)
    b = torch.randn(bs, l, h, n, device=dev, generator=g, requires_grad=True)
    c = torch.randn(bs, l, h, n, device=dev, generator=g, requires_grad=True)
    w = torch.randn(bs, l, h, p, device=dev, generator=g)

    def forward():
        with torch.no_grad():
            return ssd_chunked(x * dt[..., None], dt * a, b, c, args.chunk)

    def backward():
        y = ssd_chunked(x * dt[..., None], dt * a, b, c, args.chunk)
        (y * w).sum().backward()
        x.grad = b.grad = c.grad = dt.grad = None

    def timed(f):
        ms = []
        for i in range(args.repeats + 2):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            f()
            torch.cuda.synchronize()
            if i >= 2:
                ms.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(ms)

    print(json.dumps({"bench": "ssd_scan", "impl": "pytorch", "shape": [bs, l, h, p, n], "chunk": args.chunk,
                      "forward_ms": timed(forward), "forward_backward_ms": timed(backward),
                      "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30}), flush=True)


if __name__ == "__main__":
    main()

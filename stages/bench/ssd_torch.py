#!/usr/bin/env python3
"""The peers of `distill bench ssd`, timed forward and forward with backward, f32, at the same
shape: the chunked SSD scan of torch_train.py (`--impl pytorch`: plain eager PyTorch, einsums on
cuBLAS), or mamba_ssm's fused Triton scan (`--impl triton`, `mamba_chunk_scan_combined`), the
kernel issue 9's 1.5x is measured against.

    python3 stages/bench/ssd_torch.py [--impl pytorch|triton] [--shape 16,2048,9,64,64] [--chunk 256] [--repeats 5]

The Triton peer needs mamba_ssm's sources only, not its package: its `ops/triton` modules are
Triton and PyTorch, while its `__init__` imports CUDA extensions that no wheel for this machine
carries. `MAMBA_SSM_SRC` names the unpacked sdist (stages/bench/fetch_mamba_ssm.sh); the
packages on the import path of those modules are registered bare, so no `__init__` runs.

Prints one JSON line with the fields of `distill bench ssd`; the Triton line adds how far its
output lies from the eager scan's (`rel_diff_to_pytorch`), so a wrong call cannot pass for a
fast one.
"""
import argparse
import json
import os
import statistics
import sys
import time
import types

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_train import ssd_chunked  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="16,2048,9,64,64")
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--impl", choices=["pytorch", "triton"], default="pytorch")
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

    def eager():
        return ssd_chunked(x * dt[..., None], dt * a, b, c, args.chunk)

    # The same scan: mamba_ssm scales x by dt and decays by exp(dt A) itself; B and C a group
    # per head, as here.
    scan = eager
    if args.impl == "triton":
        combined = mamba_chunk_scan_combined()
        scan = lambda: combined(x, dt, a, b, c, args.chunk)  # noqa: E731

    def forward():
        with torch.no_grad():
            return scan()

    def backward():
        (scan() * w).sum().backward()
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

    line = {"bench": "ssd_scan", "impl": args.impl, "shape": [bs, l, h, p, n], "chunk": args.chunk,
            "forward_ms": timed(forward), "forward_backward_ms": timed(backward),
            "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30}
    if args.impl == "triton":
        with torch.no_grad():
            want = eager()
            line["rel_diff_to_pytorch"] = ((forward() - want).abs().max() / want.abs().max()).item()
    print(json.dumps(line), flush=True)


def mamba_chunk_scan_combined():
    """mamba_ssm's fused scan from the sources under MAMBA_SSM_SRC, its packages' `__init__`
    skipped (they import compiled extensions)."""
    src = os.environ.get("MAMBA_SSM_SRC")
    if not src or not os.path.isdir(os.path.join(src, "mamba_ssm", "ops", "triton")):
        sys.exit(f"ssd_torch.py --impl triton: MAMBA_SSM_SRC={src!r} is not an unpacked mamba_ssm sdist "
                 "(stages/bench/fetch_mamba_ssm.sh makes one)")
    for name in ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton", "mamba_ssm.utils"):
        package = types.ModuleType(name)
        package.__path__ = [os.path.join(src, *name.split("."))]
        sys.modules[name] = package
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined as combined  # noqa: E402
    return combined


if __name__ == "__main__":
    main()

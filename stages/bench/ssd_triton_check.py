#!/usr/bin/env python3
"""Checks on the CPU that ssd_torch.py's Triton peer computes the scan it is compared with: the
fused mamba_ssm forward in Triton's interpreter against torch_train.py's eager scan at a tiny
shape (session 13: relative difference 1.2e-7). Needs torch, triton, einops and transformers
(torch_train.py imports it); no GPU.

    MAMBA_SSM_SRC=DIR TRITON_INTERPRET=1 python3 stages/bench/ssd_triton_check.py

The interpreter has no benchmarker, so each autotuned kernel keeps its first configuration, and
no CUDA device, so mamba_ssm's device guards become no-ops. Its backward needs CUDA and is left
to the GPU run.
"""
import contextlib
import os
import sys

import torch
import triton

if os.environ.get("TRITON_INTERPRET") != "1":
    sys.exit("ssd_triton_check.py: run with TRITON_INTERPRET=1 (Triton's interpreter, on the CPU)")
_autotune = triton.autotune
triton.autotune = lambda configs, key, **kw: _autotune(configs=configs[:1], key=key, **kw)
torch.cuda.device = lambda *a, **k: contextlib.nullcontext()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ssd_torch  # noqa: E402
from torch_train import ssd_chunked  # noqa: E402

combined = ssd_torch.mamba_chunk_scan_combined()
bs, l, h, p, n, chunk = 1, 32, 2, 16, 16, 16
g = torch.Generator().manual_seed(0)
x = torch.randn(bs, l, h, p, generator=g)
dt = torch.rand(bs, l, h, generator=g) * 0.099 + 0.001
a = -(torch.rand(h, generator=g) * 15 + 1)
b = torch.randn(bs, l, h, n, generator=g)
c = torch.randn(bs, l, h, n, generator=g)
want = ssd_chunked(x * dt[..., None], dt * a, b, c, chunk)
rel = ((combined(x, dt, a, b, c, chunk) - want).abs().max() / want.abs().max()).item()
print(f"mamba_chunk_scan_combined against the eager scan: relative difference {rel:.3g}")
sys.exit(0 if rel < 1e-4 else 1)

#!/usr/bin/env bash
# Every kernel of distill-kernels against its plain-tensor twin on the GPU, in one command:
# f32 and bf16, batch 1..64, SmolLM2 / Llama-3-8B / Mamba-2 layer shapes; each case's relative
# difference, the kernel's and the twin's time, and the kernel's time against the bytes it must
# move at the H200's 4.3 TB/s. Exits non-zero when a case is out of tolerance.
#
#   kernels/gpu_parity.sh DISTILL_BIN OUT_DIR     (the binary built with --features cuda)
set -euo pipefail
bin=$1 out=$2
mkdir -p "$out"
"$bin" bench --device cuda --dtype bf16 --json "$out/kernels.jsonl" kernels 2> "$out/kernels.log" | tee "$out/kernels.txt"

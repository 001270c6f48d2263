#!/usr/bin/env bash
# The teacher's GPU benchmark for BENCHMARKS.md: ours (the `bench_teacher` example) and
# transformers (`bench_transformers.py`) on the same model and GPU, one after the other.
#
#   stages/bench/teacher_gpu.sh BENCH_TEACHER_BIN MODEL.gguf OUT_DIR
#
# BENCH_TEACHER_BIN: `cargo build -p distill-stages --release --features cuda --example bench_teacher`
# (with CUDARC_CUDA_VERSION=13000), i.e. target/release/examples/bench_teacher.
# Ours exports the GGUF to MODEL.gguf.hf/ (f32 safetensors) first; transformers reads that folder,
# so both run the same dequantized weights, in bf16. Writes ours.jsonl, transformers.jsonl and
# their logs to OUT_DIR. OURS_TIMEOUT (e.g. 420) bounds ours, so transformers still runs.
set -uo pipefail
bin=$1 gguf=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
start=$(date +%s)
timeout "${OURS_TIMEOUT:-1d}" "$bin" "$gguf" cuda bf16 > "$out/ours.jsonl" 2> "$out/ours.log"
echo "ours: exit $?, $(( $(date +%s) - start )) s (export, load, warm-up, timed runs)"
cat "$out/ours.jsonl"
start=$(date +%s)
python3 "$here/bench_transformers.py" "$gguf.hf" cuda bf16 > "$out/transformers.jsonl" 2> "$out/transformers.log"
echo "transformers: exit $?, $(( $(date +%s) - start )) s"
cat "$out/transformers.jsonl"
python3 - "$out" <<'PY'
import json, sys
rows = {}
for impl in ("ours", "transformers"):
    for line in open(f"{sys.argv[1]}/{impl}.jsonl"):
        r = json.loads(line)
        rows[(impl, r["batch"])] = r
print("batch | metric | distill tok/s | transformers tok/s | ratio")
for b in (1, 32):
    for m in ("prefill_tok_s", "decode_tok_s"):
        o, t = rows.get(("ours", b), {}).get(m), rows.get(("transformers", b), {}).get(m)
        ratio = f"{o / t:.2f}" if o and t else "-"
        print(f"{b} | {m} | {o and round(o)} | {t and round(t)} | {ratio}")
PY

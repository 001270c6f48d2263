#!/usr/bin/env bash
# Every kernel of distill-kernels against its plain-tensor twin on the GPU, in one command:
# f32 and bf16, batch 1..64, SmolLM2 / Llama-3-8B / Mamba-2 layer shapes; each case's relative
# difference, the kernel's and the twin's host time per call, and (from cubecl's per-kernel
# profiling log, kernels/device_times.py) the kernel's device time against the bytes it must
# move at the H200's 4.3 TB/s. Exits non-zero when a case is out of tolerance.
#
#   kernels/gpu_parity.sh DISTILL_BIN OUT_DIR     (the binary built with --features cuda)
#
# ONLY=attention,gemv (groups of `distill bench kernels --only`) runs some of the kernels;
# CASE="b32 h32/" only the Mamba step cases whose label holds that text. VARIANTS="default
# whole=DISTILL_STEPS_LANES=16,8+DISTILL_STEPS_CUBE=512,1024 ..." runs everything once per variant (NAME=VAR=VALUE, several
# joined by `+`, or `default` for the environment as it is), each into OUT_DIR/NAME, one after the other on the
# same GPU, then prints their device times together: an A/B in one call.
set -euo pipefail
bin=$(realpath "$1") top=$(mkdir -p "$2" && cd "$2" && pwd)
repeats=${REPEATS:-50}
here=$(cd "$(dirname "$0")" && pwd)
status=0

# One run of every selected case into $1.
parity() {
  local out=$1 run
  mkdir -p "$out"
  # The profiling logger reads cubecl.toml from the working directory.
  run=$(mktemp -d)
  printf '[profiling.logger]\nlevel = "basic"\nfile = "%s"\nappend = true\n' "$out/profile.log" > "$run/cubecl.toml"
  (cd "$run" && "$bin" bench --device cuda --dtype bf16 --json "$out/kernels.jsonl" kernels --repeats "$repeats" ${ONLY:+--only "$ONLY"} ${CASE:+--case "$CASE"}) 2> "$out/kernels.log" | tee "$out/kernels.txt" || status=$?
  python3 "$here/device_times.py" "$out/profile.log" "$out/kernels.jsonl" "$repeats" | tee -a "$out/kernels.txt" || echo "device times: launches not matched to cases (above); the parity verdicts stand" | tee -a "$out/kernels.txt"
  xz -f "$out/profile.log"
  return $status
}

if [ -z "${VARIANTS:-}" ]; then
  parity "$top"
  exit $status
fi
for v in $VARIANTS; do
  name=${v%%=*}
  if [ "$v" = default ]; then (parity "$top/default") || status=1
  else (IFS=+ read -ra assigns <<< "${v#*=}"; for a in "${assigns[@]}"; do export "$a"; done; parity "$top/$name") || status=1; fi
done
echo "== device times by variant"
for v in $VARIANTS; do name=${v%%=*}; grep -h " | device " "$top/$name/kernels.txt" | sed "s/^/$name | /"; done | sort -t'|' -k2,2 -k3,3 -s
exit $status

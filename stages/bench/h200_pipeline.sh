#!/usr/bin/env bash
# Runs manifests/h200/smollm2-hybrid.toml on a GPU machine without network, as the committed
# example report was made: packages from a local mirror (DISTILL_FETCH_MIRROR), the workspace
# in WORK_DIR, stages in the order that matters most when time is short (the 50% student and
# its perplexity first, then the chat stages and speculative decoding, the control last), each
# invocation resuming what an earlier one left (cached stages, training checkpoints).
#
#   stages/bench/h200_pipeline.sh DISTILL_BIN MIRROR_DIR WORK_DIR OUT_DIR [--set k=v ...]
#
# PIPELINE_SECONDS (default 540) bounds the runs: the one under way when it expires is
# interrupted like Ctrl-C (its stage is not recorded, finished ones stay cached), and the
# run record, the report and the logs are still written, inside the device's 10-minute call.
#
# cubecl's persistent compilation cache is on (a cubecl.toml in the workspace; off by default
# in cubecl; KERNEL_CACHE=0 leaves it off) and is left as OUT_DIR/kernel-cache.tgz;
# KERNEL_CACHE_IN=FILE.tgz starts from such an archive. Without it each process's first
# training step spends ~38 s compiling the TMA matmul kernels; with it a second `distill bench
# train` started in 22 s rather than 84 (BENCHMARKS.md).
#
# PIPELINE_MANIFEST names another manifest of manifests/h200 (default smollm2-hybrid.toml);
# PIPELINE_UNTIL="STAGE ..." replaces the phases below with one invocation per named stage (each
# with its upstream), so a long stage can have a call of its own after a shorter call has run
# and cached what it needs, on a machine kept warm between calls.
#
# PIPELINE_GPUS=N (default 1) on a machine with N GPUs: every GPU stage asks for one GPU and the
# engine runs up to N of them side by side, each on its own GPU and in a process of its own
# (`--executor process`), in one invocation instead of the ordered phases; the distillations
# train data-parallel on all N (a process per GPU), their batch of 16 in N micro-batches of
# 16 / N, so the recipe (and the loss curve) is the one-GPU run's.
set -uo pipefail
bin=$1 mirror=$2 work=$3 out=$4
shift 4
here=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$work" "$out"
cp -r "$here/manifests/." "$work/"
cd "$work/h200"
export DISTILL_FETCH_MIRROR=$mirror
if [ "${KERNEL_CACHE:-1}" = 1 ]; then
  mkdir -p "$work/kernel-cache"
  if [ -n "${KERNEL_CACHE_IN:-}" ]; then tar xzf "$KERNEL_CACHE_IN" -C "$work/kernel-cache"; fi
  printf '[compilation]\ncache = true\n\n[environment]\npath = { directory = "%s" }\n' "$work/kernel-cache" > cubecl.toml
fi
m=${PIPELINE_MANIFEST:-smollm2-hybrid.toml}
deadline=$(( $(date +%s) + ${PIPELINE_SECONDS:-540} ))
# One process per phase: each starts with the whole GPU (session 3's `draft` ran out of memory
# after four chat stages had run in the same process).
phases=("heldout[distill[hybrid50]]" "heldout[teacher]" sft dpo draft speculative '')
[ -n "${PIPELINE_UNTIL:-}" ] && read -ra phases <<< "$PIPELINE_UNTIL"
jobs=1
gpu_sets=()
if [ "${PIPELINE_GPUS:-1}" -gt 1 ]; then
  export DISTILL_GPUS=$PIPELINE_GPUS
  jobs=$PIPELINE_GPUS
  phases=('')
  gpu_sets+=(--executor process)
  for s in teacher hybrid50 control50 answers sft pairs dpo draft speculative heldout; do gpu_sets+=(--set "stages.$s.resources.gpus=1"); done
  gpu_sets+=(--set "stages.distill.resources.gpus=$PIPELINE_GPUS" --set "stages.distill.params.micro_batch=$(( 16 / PIPELINE_GPUS ))")
fi
for until in "${phases[@]}"; do
  sel=()
  [ -n "$until" ] && sel=(--until "$until")
  start=$(date +%s)
  left=$(( deadline - start ))
  [ "$left" -gt 5 ] || break
  timeout -s INT -k 20 "$left" "$bin" run "$m" --jobs $jobs --keep-going "${sel[@]}" "${gpu_sets[@]}" "$@" 2>&1 | grep -v '^running' | tee -a "$out/pipeline.log"
  echo "== until ${until:-everything}: exit ${PIPESTATUS[0]}, $(( $(date +%s) - start )) s" | tee -a "$out/pipeline.log"
done
"$bin" runs --json > "$out/runs.json" 2>/dev/null
"$bin" report --out "$out/report" >> "$out/pipeline.log" 2>&1
tar czf "$out/runs.tgz" -C .distill runs
if [ "${KERNEL_CACHE:-1}" = 1 ]; then tar czf "$out/kernel-cache.tgz" -C "$work/kernel-cache" .; fi

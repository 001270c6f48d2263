#!/usr/bin/env bash
# The GPU measurements of BENCHMARKS.md in one command: ours (`distill bench`) and the peers
# (transformers, plain PyTorch) on the same GPU, one after the other, SmolLM2-135M's shape.
#
#   stages/bench/gpu_bench.sh DISTILL_BIN OUT_DIR [PART...]
#
# PART: parity, decode, train, long, matmul, each also as PART-peer (the transformers / PyTorch
# side); default: all but matmul, in that order. `train-scaling` runs the distillation step
# data-parallel on each GPU count in TRAIN_GPUS (default "1 2"; issue 10; DISTILL_ALLREDUCE
# names the way), `dp-modes` first finds a way that runs through (a tiny step each). `matmul-kernels` times every named cubek routine
# of `distill bench matmul --kernels`, one step each. `profile` times every kernel of one hybrid
# distillation step through cubecl's profiling logger (a cubecl.toml in the working directory)
# and writes the kernels that cost most to OUT_DIR/profile.txt (slower than `train`: it is for
# where the time goes, not how much). `train-variants` times the 50% hybrid's step at
# micro-batch 8 and 16, frozen as the pipeline trains it, with each training attention
# (DISTILL_ATTENTION), then micro-batch 32 against two accumulated 16s on the same data: equal
# first losses say the large micro-batch really computed its step (session 5 saw it report 3x the
# throughput amid failed allocations). Every step appends its JSON
# lines to OUT_DIR/results.jsonl and its stderr to OUT_DIR/bench.log, bounded by its own
# timeout, so a slow step never costs the others. cubecl's compilation cache is on (a
# cubecl.toml written here, in ./target/environment from the repository root: a process after
# the first starts in ~20 s rather than ~80); keep that folder between runs. `profile-decode`
# counts the kernels of decode tokens at batch 1 (profile-decode-{16,48}.txt: their difference
# is 32 tokens' launches). `rounds` times speculative rounds with a random 2-layer draft at each
# context of GRAPH_PROMPTS: a round's cost in plain steps, and the acceptance it needs;
# `draft-step` a plain step of that draft alone on graphs; `spec-check` each random model
# drafting for itself under each kernel mode (f32: every draft accepted).
set -uo pipefail
bin=$1 out=$2
shift 2
parts=${*:-parity parity-peer decode decode-peer train train-peer long long-peer}
fx="tests/golden/tiny-gqa-untied tests/golden/tiny-tied-llama3"
cfg=stages/bench/smollm2-config.json
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee -a "$out/bench.log"

# KERNEL_CACHE_IN=FILE.tgz starts from an earlier run's compilation cache; the cache is left as
# OUT_DIR/kernel-cache.tgz for the next call (a fresh machine has none).
kc=$PWD/target/environment
mkdir -p "$kc"
[ -n "${KERNEL_CACHE_IN:-}" ] && tar xzf "$KERNEL_CACHE_IN" -C "$kc"
# The cache's part of cubecl.toml, which the profiling parts extend with a logger.
cache="[compilation]\ncache = true\n\n[environment]\npath = { directory = \"$kc\" }\n"
printf "$cache" > cubecl.toml
trap 'rm -f cubecl.toml; tar czf "$out/kernel-cache.tgz" -C "$kc" .' EXIT
. "$(dirname "$0")/nccl_env.sh" 2>> "$out/bench.log"

step() { # name timeout command...
  local name=$1 limit=$2
  shift 2
  local start=$(date +%s)
  echo "== $name: $*" >> "$out/bench.log"
  timeout "$limit" "$@" >> "$out/results.jsonl" 2>> "$out/bench.log"
  echo "== $name: exit $?, $(( $(date +%s) - start )) s: $*" | tee -a "$out/bench.log"
}

# Issue 10: the 50% hybrid's distillation step as the pipeline trains it (frozen, micro-batch 16)
# at 16 sequences per GPU on each GPU count in TRAIN_GPUS, then one GPU at the largest count's
# global batch: the same micro-batches, so the same loss curve (`losses`). DISTILL_ALLREDUCE=procs
# runs one process per GPU (`--processes`); nccl, nccl-main or host one thread per GPU.
scaling() {
  local gs=${TRAIN_GPUS:-1 2} g dp=--gpus
  [ "${DISTILL_ALLREDUCE:-}" = procs ] && dp=--processes
  for g in $gs; do step "train on $g GPUs ($dp)" 200 "$bin" bench --device cuda train --random $cfg --attention-fraction 0.5 --distill \
    --batch 16 --micro-batch ${TRAIN_MICRO:-16} --freeze non_mamba --lr 5e-4 --seq 2048 --steps 6 --warmup 2 $dp $g; done
  g=${gs##* }
  step "train on 1 GPU at batch $((16 * g))" 300 "$bin" bench --device cuda train --random $cfg --attention-fraction 0.5 --distill \
    --batch $((16 * g)) --micro-batch ${TRAIN_MICRO:-16} --freeze non_mamba --lr 5e-4 --seq 2048 --steps 6 --warmup 2 --gpus 1
}

# The environment of a decoding mode (long-graph, spec-check): which inference kernels give way to
# burn's ops or to another form of ours.
mode_env() {
  case $1 in
    burn) export DISTILL_REDUCE=burn DISTILL_GEMV=0 ;; reduce) export DISTILL_GEMV=0 ;; attn-burn) export DISTILL_ATTN_GEMV=0 ;;
    unfused) export DISTILL_FUSE=0 ;; norm-ops) export DISTILL_RMSNORM=ops ;; softmax-ops) export DISTILL_ATTN_SOFTMAX=ops ;;
    readout-shared) export DISTILL_STEPS_READOUT=shared ;; kv-mask) export DISTILL_KV_WRITE=mask ;; # docs/environment.md lists each switch
  esac
}

for part in $parts; do
  case $part in
    parity) step parity 60 "$bin" bench --device cuda --dtype bf16 parity $fx ;;
    parity-peer) step parity 60 python3 stages/bench/parity_transformers.py $fx ;;
    decode) step decode 100 "$bin" bench --device cuda decode --random $cfg --batch 1,32 --prompt 512 --decode 128 ;;
    # Issue 6: one decode step eager against replayed as a CUDA graph (launch overhead).
    # Batch 8 has left-padded rows (each 3 tokens shorter than the one before).
    # Batch 1 also runs speculative rounds on graphs, each model drafting for itself (K = 4):
    # every draft accepted and plain greedy's tokens, or the rounds lose their state.
    decode-graph) for b in ${GRAPH_BATCHES:-1 8}; do spec=; [ $b = 1 ] && spec="--speculative 4"
      step "decode-graph b$b" 200 "$bin" bench --device cuda decode-graph --random $cfg --attention-fraction 1,0.5,0.25 --batch $b --prompt 512 --steps ${GRAPH_STEPS:-64} $spec; done ;;
    # Decoding on graphs at batch 1 over contexts, with our inference kernels (reductions by
    # cubes, gemv products: `ours`), with burn's for both (`burn`: DISTILL_REDUCE=burn
    # DISTILL_GEMV=0), with only the reductions (`reduce`: DISTILL_GEMV=0), with burn's products in
    # attention only (`attn-burn`: DISTILL_ATTN_GEMV=0), with q/k/v and gate/up as separate products
    # (`unfused`: DISTILL_FUSE=0), with RMSNorm in tensor ops (`norm-ops`: DISTILL_RMSNORM=ops), with decoding's attention softmax
    # as its composite (`softmax-ops`: DISTILL_ATTN_SOFTMAX=ops), with the KV cache written
    # through a mask over the whole buffer rather than by scattering the step's rows (`kv-mask`:
    # DISTILL_KV_WRITE=mask, session 11's way), one after the
    # other (GRAPH_MODES picks): issue 6's long-context figures and what each costs in them.
    long-graph) for p in ${GRAPH_PROMPTS:-512 1024 4096 16384}; do for mode in ${GRAPH_MODES:-ours burn}; do (
      mode_env $mode
      step "decode-graph ctx $p $mode" 200 "$bin" bench --device cuda decode-graph --random $cfg --attention-fraction 1,0.5,0.25 --batch 1 --prompt $p --steps ${GRAPH_STEPS:-32}
      ); done; done ;;
    # Issue 9: whether verification still computes what decoding does, kernel by kernel: each
    # model drafting for itself on graphs (K = 2, 4) must accept every draft and give plain
    # greedy's tokens (`first_mismatch` none, acceptance 1), under each mode of long-graph
    # (SPEC_MODES; `readout-shared`: the steps kernel's read-out through shared memory). In f32
    # (SPEC_DTYPE) and over short prompts: in bf16 after 512 tokens a random model repeats one
    # token (session 12: 39630 every step), which any state, right or wrong, predicts, so the
    # check passed every mode while f32 speculative rounds on graphs accepted 0.07 of a real
    # hybrid's own drafts (the `speculative_self` stage found it). SPEC_DRAFTS: `itself`, and
    # `noisy`, the model with its final norm scaled by 1 ± 0.3 (`--draft-noise`): rounds then
    # accept some drafts (0.6-0.7 on the CPU) and roll back at every count, and must still give
    # plain greedy's tokens (`first_mismatch` none).
    spec-check) for p in ${GRAPH_PROMPTS:-64}; do for mode in ${SPEC_MODES:-ours unfused attn-burn softmax-ops norm-ops burn readout-shared}; do for d in ${SPEC_DRAFTS:-itself noisy}; do (
      mode_env $mode
      draft=; [ $d = noisy ] && draft="--draft-noise 0.3"
      step "spec-check ctx $p $mode $d" 200 "$bin" bench --device cuda --dtype ${SPEC_DTYPE:-f32} decode-graph --random $cfg --attention-fraction 1,0.5 --batch 1 --prompt $p --steps 64 --speculative 2,4 $draft
      ); done; done; done ;;
    # Issue 6: what a speculative round costs in plain steps on graphs, with a random 2-layer
    # Transformer as the draft (the pipeline's draft's shape), at K = 2, 4, 8 and each context
    # in GRAPH_PROMPTS: the acceptance a trained draft needs to break even and to double plain
    # decoding there.
    rounds) for p in ${GRAPH_PROMPTS:-512 4096 16384}; do
      step "rounds ctx $p" 200 "$bin" bench --device cuda decode-graph --random $cfg --attention-fraction 1,0.5,0.25 --batch 1 --prompt $p --steps 32 --speculative 2,4,8 --draft-layers 2; done ;;
    # Issue 9: the draft's step alone. A round of K = 4 (session 11, 512 tokens) cost 4.62 ms of
    # which the verification 2.68: ~0.39 ms for each of the draft's 5 steps, where a 30-layer
    # plain step is 1.94 ms. A plain step on graphs of the same random 2-layer Transformer says
    # how much of that is the draft's own layers and head, and how much the round's bookkeeping.
    draft-step)
      python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); c["num_hidden_layers"] = 2; json.dump(c, open(sys.argv[2], "w"))' $cfg "$out/draft-config.json"
      step "draft step" 120 "$bin" bench --device cuda decode-graph --random "$out/draft-config.json" --batch 1 --prompt 512 --steps 64 ;;
    # Issue 9: the chunked SSD scan in our tensor ops against its memory floor and PyTorch's,
    # and against mamba_ssm's fused Triton scan (`ssd-triton`: MAMBA_SSM_SRC names its sources,
    # stages/bench/fetch_mamba_ssm.sh; Triton's autotuning makes its first run slow).
    ssd) step ssd 150 "$bin" bench --device cuda ssd ;;
    ssd-peer) step ssd 100 python3 stages/bench/ssd_torch.py ;;
    ssd-triton) step ssd 300 python3 stages/bench/ssd_torch.py --impl triton ;;
    decode-peer) step decode 90 python3 stages/bench/bench_transformers.py --random $cfg --batch 1,32 --prompt 512 --decode 128 ;;
    train) step train 150 "$bin" bench --device cuda train --random $cfg --attention-fraction ${TRAIN_FRACTIONS:-1,0.5} --distill \
        --batch 16 --micro-batch 8 --seq 2048 --steps 5 --warmup 2 ;;
    # Issue 10: the 50% hybrid's distillation step on 1, 2, 4, ... GPUs at 16 sequences per GPU.
    train-scaling) scaling ;;
    # Issue 10, which way of data parallelism runs through on two GPUs: a tiny step first for
    # each (a hang costs 60 s): `procs` (one process per GPU, `--processes`), then one thread
    # per GPU with each DISTILL_ALLREDUCE way; then train-scaling with the first that did.
    dp-modes)
      ok=
      for m in ${DP_MODES:-procs nccl-main nccl host}; do
        if [ $m = procs ]; then dp="--processes 2"; else dp="--gpus 2"; fi
        DISTILL_ALLREDUCE=$m DISTILL_LOG=distill_stages::train=debug,warn step "dp $m tiny" 60 "$bin" bench --device cuda train --random $cfg \
          --attention-fraction 0.5 --distill --batch 2 --micro-batch 2 --seq 256 --steps 3 --warmup 0 $dp
        [ -z "$ok" ] && tail -1 "$out/bench.log" | grep -q 'exit 0,' && ok=$m
      done
      echo "== dp-modes: first through: ${ok:-none}" | tee -a "$out/bench.log"
      [ -n "$ok" ] && DISTILL_ALLREDUCE=$ok scaling ;;
    # Issue 5: the same frozen step at the same 32,768 tokens per step, as 64 x 512, 32 x 1024 and
    # 16 x 2048: how much of the step the quadratic attention costs at the pipeline's length.
    train-seq)
      for v in ${TRAIN_SEQS:-64x512 32x1024 16x2048}; do set -- ${v/x/ }
        step "train seq $2 batch $1" 150 "$bin" bench --device cuda train --random $cfg --attention-fraction 0.5 --distill \
          --batch $1 --micro-batch $1 --freeze non_mamba --lr 5e-4 --seq $2 --steps 6 --warmup 2
      done ;;
    train-seq-peer)
      for v in ${TRAIN_SEQS:-64x512 32x1024 16x2048}; do set -- ${v/x/ }
        step "train-peer seq $2 batch $1" 150 python3 stages/bench/torch_train.py $cfg --batch $1 --micro-batch $1 --seq $2 --freeze non_mamba --steps 5 --warmup 2
      done ;;
    train-variants)
      for v in "8 composite" "16 composite" "16 recompute"; do set -- $v
        DISTILL_ATTENTION=$2 step "train mb $1 attention $2" 150 "$bin" bench --device cuda train --random $cfg --attention-fraction 0.5 --distill \
          --batch 16 --micro-batch $1 --freeze non_mamba --seq 2048 --steps 5 --warmup 2
      done
      for v in "16 composite" "32 composite" "32 recompute"; do set -- $v
        DISTILL_ATTENTION=$2 step "train batch 32 mb $1 attention $2" 150 "$bin" bench --device cuda train --random $cfg --attention-fraction 0.5 --distill \
          --batch 32 --micro-batch $1 --freeze non_mamba --seq 2048 --steps 3 --warmup 1
      done ;;
    train-peer) step train 100 python3 stages/bench/torch_train.py $cfg --batch 16 --micro-batch 8 --seq 2048 --steps 5 --warmup 2 ;;
    long) step long 150 "$bin" bench --device cuda decode --random $cfg --attention-fraction 1,0.5,0.25 --batch 1 \
        --prompt 1024,4096,16384 --decode 64 --repeats 1 ;;
    long-peer) step long 90 python3 stages/bench/bench_transformers.py --random $cfg --batch 1 --prompt 1024,4096,16384 --decode 64 --repeats 1 ;;
    matmul) step matmul 120 "$bin" bench --device cuda matmul ;;
    # The training step's attention, burn's autodiff fallback against ours (issue 5).
    attention) step attention 120 "$bin" bench --device cuda attention ;;
    # Each cubek routine alone, with its own limit: a TMA or warp-specialized kernel that hangs
    # must cost only its own step.
    matmul-kernels) for k in double-cyclic-mma double-cyclic-mma-specialized ordered-double-mma tiled-cmma-async tiled-cmma-tma specialized-tma-mma double-tma-mma; do
        step "matmul $k" 60 "$bin" bench --device cuda matmul --kernels $k; done ;;
    matmul-peer) step matmul 60 python3 stages/bench/matmul_torch.py ;;
    # Training attention's products at micro-batch 16 (16 x 9 = 144 heads side by side): q kᵀ,
    # P v and dS k (and dO's), Pᵀ dO and dSᵀ q; the winners become DISTILL_ATTENTION_MATMUL.
    matmul-attention) for k in default double-tma-mma specialized-tma-mma double-cyclic-mma ordered-double-mma; do
        step "matmul $k" 90 "$bin" bench --device cuda matmul --kernels $k --shapes 144x2048x64x2048,144x2048x2048x64,144x2048x2048x64t; done ;;
    profile)
      printf "$cache"'\n[profiling.logger]\nlevel = "basic"\nfile = "%s"\nappend = true\n' "$out/kernels.log" > cubecl.toml
      step profile 240 "$bin" bench --device cuda train --random $cfg --attention-fraction 0.5 --distill \
        --batch 16 --micro-batch 16 --freeze non_mamba --seq 2048 --steps 1 --warmup 1
      printf "$cache" > cubecl.toml
      python3 stages/bench/profile_summary.py "$out/kernels.log" > "$out/profile.txt"
      xz -f "$out/kernels.log" ;;
    # Issue 9: every kernel of the SSD scan bench (3 forwards, 3 forwards with backward: `--repeats 1`;
    # SSD_FORWARD_ONLY=1: 12 forwards and nothing else).
    profile-ssd)
      printf "$cache"'\n[profiling.logger]\nlevel = "basic"\nfile = "%s"\nappend = true\n' "$out/ssd-kernels.log" > cubecl.toml
      if [ -n "${SSD_FORWARD_ONLY:-}" ]; then
        step "profile ssd forward" 120 "$bin" bench --device cuda ssd --repeats 10 --forward-only
      else
        step "profile ssd" 120 "$bin" bench --device cuda ssd --repeats 1
      fi
      printf "$cache" > cubecl.toml
      python3 stages/bench/profile_summary.py "$out/ssd-kernels.log" 30 > "$out/profile-ssd.txt"
      xz -f "$out/ssd-kernels.log" ;;
    # Issue 6: what a decode token launches. Two runs of the 50% hybrid at batch 1 after a
    # 512-token prompt, 16 and 48 new tokens: the difference is 32 tokens' kernels alone.
    profile-decode)
      for n in 16 48; do
        printf "$cache"'\n[profiling.logger]\nlevel = "basic"\nfile = "%s"\nappend = true\n' "$out/decode-$n.log" > cubecl.toml
        step "profile decode $n" 120 "$bin" bench --device cuda decode --random $cfg --attention-fraction 0.5 --batch 1 --prompt 512 --decode $n --repeats 1
      done
      printf "$cache" > cubecl.toml
      for n in 16 48; do python3 stages/bench/profile_summary.py "$out/decode-$n.log" 25 > "$out/profile-decode-$n.txt"; xz -f "$out/decode-$n.log"; done
      head -1 "$out"/profile-decode-*.txt ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
python3 - "$out" <<'PY'
import json, pathlib, sys
rows = []
for f in [pathlib.Path(sys.argv[1]) / "results.jsonl"]:
    for line in (f.read_text().splitlines() if f.exists() else []):
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
for r in rows:
    impl = r.get("impl", "distill")
    if r["bench"] == "parity":
        print(f"parity {impl:12} {r['fixture']:18} max rel L2 {r['max_rel_l2']:.4f}  max abs {r['max_abs']:.4f}")
    elif r["bench"] == "matmul":
        print(f"matmul {impl:12} {r.get('kernel', 'cublas'):30} {r['shape']:22} {r['ms']:8.3f} ms  {r['tflops']:6.1f} TFLOP/s  rel diff {r.get('rel_diff_vs_default') or float('nan'):.1e}")
    elif r["bench"] == "train_attention":
        print(f"attention {str(r['shape']):22} burn {r['burn_ms']:8.2f} ms  composite {r['composite_ms']:8.2f} ms  recomputing {r['ours_ms']:8.2f} ms  {r['speedup']:.2f}x  grad rel diff {r['grad_rel_diff']:.1e}")
    elif r["bench"] == "decode":
        print(f"decode {impl:12} {r['model'][:22]:22} b{r['batch']:<3} ctx {r['prompt']:<6} prefill {r['prefill_tok_s']:>10.0f} tok/s  decode {r['decode_tok_s']:>8.0f} tok/s  {r['ms_per_step']:.2f} ms/step  {r.get('reductions', '')} {r.get('products', '')}")
    elif r["bench"] == "ssd_scan":
        print(f"ssd_scan {impl:12} {r['shape']} chunk {r['chunk']} forward {r['forward_ms']:.2f} ms  forward+backward {r['forward_backward_ms'] or float('nan'):.2f} ms")
    elif r["bench"] == "decode_graph":
        print(f"decode_graph {r['model'][:22]:22} b{r['batch']} ctx {r['prompt']} reductions {r.get('reductions', '?')} products {r.get('products', '?')} step eager {r['eager_ms']:.2f} ms replayed {r['replay_ms']:.2f} ms | "
              f"decoding plain {r['decode_plain_ms']:.2f} ms/token, on a graph {r['decode_graph_ms']:.2f} ms/token, same tokens {r['same_tokens']}, rows part at {r['first_mismatch']}")
        sps = r.get("speculative") or []
        for sp in (sps if isinstance(sps, list) else [sps]):
            print(f"  speculative K={sp['k']} drafted by {sp.get('draft', 'itself')}: {sp['ms_per_token']:.2f} ms/token once under way ({sp.get('ms_per_token_end_to_end', float('nan')):.2f} with prefill and capture) {sp['tokens_per_round']:.2f} tokens/round acceptance {sp['acceptance']:.2f} parts from plain at {sp['first_mismatch']}"
                  + (f"; a round {sp['round_ms']:.2f} ms = {sp['round_in_steps']:.2f} steps (verification {sp.get('verify_ms', float('nan')):.2f} ms = {sp.get('verify_in_steps', float('nan')):.2f} steps), acceptance to break even {sp['acceptance_for_break_even']}, to double {sp['acceptance_for_2x']}" if 'round_ms' in sp else ""))
    elif "tokens_per_s" in r:
        print(f"{r['bench']} {impl:12} {r['model'][:22]:22} {r['batch']}x{r['seq']} mb {r.get('micro_batch', '-')} {r.get('freeze', '-')} first loss {r.get('first_loss', float('nan')):.6e} {r['tokens_per_s']:>8.0f} tok/s  {r['ms_per_step']:.0f} ms/step (exchange {r.get('exchange_ms', 0):.0f})  MFU {r['mfu']:.3f}")
PY

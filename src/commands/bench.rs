//! `distill bench`: decoding, training-step and parity measurements for BENCHMARKS.md. Each
//! case prints one JSON line as soon as it is measured (so a run cut short keeps what it has),
//! then a table. The peers (transformers, plain PyTorch) are measured by the scripts in
//! `stages/bench/` on the same machine.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use burn::tensor::DType;
use distill_kernels::parity as kernel_parity;
use distill_stages::bench::{decode, matmul, parity, train, BenchModel, ModelSource};
use distill_stages::runtime::Runtime;

use super::ranks;
use crate::cli::{BenchArgs, BenchModelArgs, BenchWhat};

pub fn bench(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::parse(&args.device, args.dtype.as_deref())?;
    let mut out = Lines { file: args.json.clone(), table: Vec::new() };
    // Kernel cases outside tolerance fail the command, after the table says which.
    let mut out_of_tolerance = 0;
    match &args.what {
        BenchWhat::Decode { model, batch, prompt, decode: steps, repeats } => {
            for m in inference(models(model, &runtime)?) {
                for &b in batch {
                    for &p in prompt {
                        let case = decode::DecodeCase { batch: b, prompt: p, decode: *steps };
                        let r = decode::run(&m, &runtime, case, *repeats)?;
                        out.row(&r, format!("{} | batch {b} | context {p} | prefill {:.0} tok/s | decode {:.0} tok/s | {:.2} ms/step", r.model, r.prefill_tok_s, r.decode_tok_s, r.ms_per_step))?;
                    }
                }
            }
        }
        BenchWhat::Train { model, distill, batch, micro_batch, seq, steps, warmup, peak_tflops, gpus, processes, rank, rendezvous, freeze, lr } => {
            let mut group = ranks::Group::start(*processes, *rank, rendezvous.as_deref())?;
            let runtime = Runtime::parse(&group.device(&args.device), args.dtype.as_deref())?;
            let replicas = replica_gpus(&args.device, *gpus)?;
            let teacher = match (distill, &model.random, &model.model) {
                (false, _, _) => None,
                (true, Some(config), _) => Some(BenchModel::load(&ModelSource::Random(config.clone()), 1.0, &runtime)?),
                (true, None, Some(path)) => Some(BenchModel::load(&ModelSource::Path(path.clone()), 1.0, &runtime)?),
                (true, None, None) => unreachable!("clap requires --model or --random"),
            };
            let case = train::TrainCase { batch: *batch, micro_batch: micro_batch.unwrap_or(*batch), seq: *seq, steps: *steps, warmup: *warmup, peak_tflops: *peak_tflops, freeze: freeze.clone(), lr: *lr };
            let models = models(model, &runtime)?;
            if group.world > 1 && models.len() > 1 {
                anyhow::bail!("--processes trains one student at a time (give one --attention-fraction)");
            }
            let mut peers = group.join()?;
            for m in models {
                let r = train::run(m, teacher.as_ref(), &runtime, case.clone(), &replicas, peers.take())?;
                if group.rank == 0 {
                    out.row(&r, format!("{} | {} | freeze {} | batch {} x {} on {} device(s) | first loss {:.6e} | last loss {:.6e} | {:.0} tok/s | {:.1} ms/step (exchange {:.1}) | {:.1} TFLOP/s | MFU {:.3}", r.bench, r.model, r.freeze, r.batch, r.seq, r.devices, r.first_loss, r.losses.last().copied().unwrap_or(f64::NAN), r.tokens_per_s, r.ms_per_step, r.exchange_ms, r.tflops, r.mfu))?;
                }
            }
            group.finish()?;
        }
        BenchWhat::Matmul { shapes, kernels, repeats } => {
            for &shape in shapes {
                for &kernel in kernels {
                    let r = matmul::run(shape, kernel, &runtime, *repeats)?;
                    out.row(&r, format!("matmul | {} | {} | {} | {:.3} ms | {:.1} TFLOP/s | rel diff {:.1e}", r.shape, r.kernel, r.dtype, r.ms, r.tflops, r.rel_diff_vs_default))?;
                }
            }
        }
        BenchWhat::Kernels { repeats, only, case } => {
            let dtypes: &[DType] = if runtime.dtype == DType::BF16 { &[DType::F32, DType::BF16] } else { &[DType::F32] };
            let known = ["step", "steps", "gemv", "attention", "norm", "reduce", "projection", "ssd"];
            if let Some(bad) = only.iter().find(|g| !known.contains(&g.as_str())) {
                return Err(anyhow::anyhow!("--only {bad}: the groups are {}", known.join(", ")));
            }
            let wants = |group: &str| only.is_empty() || only.iter().any(|g| g == group);
            let step_cases = || kernel_parity::default_cases().into_iter().filter(|c| case.as_ref().is_none_or(|want| c.label().contains(want.as_str())));
            for &dtype in dtypes.iter().filter(|_| wants("step")) {
                for case in step_cases() {
                    let r = kernel_parity::mamba2_step_parity(case, dtype, &runtime.device, *repeats);
                    out_of_tolerance += usize::from(!r.within_tolerance);
                    let c = r.case;
                    out.row(&r, format!(
                        "mamba2_step | {} | {} | rel y {:.1e} state {:.1e} {} | kernel {:.1} us, twin {:.1} us, floor {:.2} us ({:.0}% of bandwidth)",
                        c.label(), r.dtype, r.y_rel, r.state_rel,
                        verdict(r.within_tolerance), r.kernel_us, r.reference_us, r.floor_us, 100.0 * r.floor_us / r.kernel_us
                    ))?;
                }
            }
            for &dtype in dtypes.iter().filter(|_| wants("steps")) {
                for case in step_cases() {
                    for steps in kernel_parity::STEPS {
                        let r = kernel_parity::mamba2_steps_parity(case, steps, dtype, &runtime.device, *repeats);
                        out_of_tolerance += usize::from(!r.within_tolerance);
                        let c = r.case;
                        out.row(&r, format!(
                            "mamba2_steps | {} | {} steps (snapshot at {}, outputs from {}) | {} | rel y {:.1e} snapshot {:.1e} every state {:.1e}, {} rounding {} | kernel {:.1} us, twin {:.1} us, floor {:.2} us",
                            c.label(), r.steps, r.snap_at, r.emit_from, r.dtype, r.y_rel, r.snapshot_rel, r.history_rel,
                            if r.same_rounding { "one" } else { "DIFFERENT" },
                            verdict(r.within_tolerance), r.kernel_us, r.reference_us, r.floor_us
                        ))?;
                    }
                }
            }
            for &dtype in dtypes.iter().filter(|_| wants("gemv")) {
                for (rows, d_in, d_out, transposed) in kernel_parity::gemv_cases() {
                    let r = kernel_parity::gemv_parity(rows, d_in, d_out, transposed, dtype, &runtime.device, *repeats);
                    let m = &r.measured;
                    out_of_tolerance += usize::from(!m.within_tolerance);
                    out.row(&r, format!(
                        "gemv | {}x{}->{}{} | {} | rel {:.1e} {} | ours {:.1} us, burn's {:.1} us ({:.2}x), weight floor {:.2} us",
                        r.rows, r.d_in, r.d_out, if r.transposed { " (transposed)" } else { "" }, m.dtype, m.rel, verdict(m.within_tolerance), m.kernel_us, m.reference_us, m.reference_us / m.kernel_us, m.floor_us
                    ))?;
                }
            }
            for &dtype in dtypes.iter().filter(|_| wants("attention")) {
                for case in kernel_parity::attention_cases() {
                    let r = kernel_parity::attention_parity(case, dtype, &runtime.device, *repeats);
                    let m = &r.measured;
                    out_of_tolerance += usize::from(!m.within_tolerance);
                    out.row(&r, format!(
                        "attention | b{} kv{} rows {} keys {} d{} | {} | rel {:.1e} {} | ours {:.1} us, burn's products {:.1} us ({:.2}x), keys+values floor {:.2} us",
                        r.batch, r.kv_heads, r.rows, r.keys, r.head_dim, m.dtype, m.rel, verdict(m.within_tolerance), m.kernel_us, m.reference_us, m.reference_us / m.kernel_us, m.floor_us
                    ))?;
                }
            }
            for &dtype in dtypes.iter().filter(|_| wants("norm")) {
                let plain = kernel_parity::norm_cases().into_iter().map(|(rows, d)| (rows, d, 0));
                for (rows, d, groups) in plain.chain(kernel_parity::gated_norm_cases()) {
                    let r = kernel_parity::norm_parity(rows, d, groups, dtype, &runtime.device, *repeats);
                    let m = &r.measured;
                    out_of_tolerance += usize::from(!m.within_tolerance);
                    out.row(&r, format!(
                        "{} | {} rows x {} | {} | rel {:.1e} {} | ours {:.1} us, tensor ops {:.1} us ({:.2}x), floor {:.2} us",
                        if r.groups == 0 { "rms_norm".to_string() } else { format!("gated_rms_norm ({} groups)", r.groups) },
                        r.rows, r.d, m.dtype, m.rel, verdict(m.within_tolerance), m.kernel_us, m.reference_us, m.reference_us / m.kernel_us, m.floor_us
                    ))?;
                }
            }
            for &dtype in dtypes.iter().filter(|_| wants("reduce")) {
                for (rows, axis) in kernel_parity::reduce_cases() {
                    for r in kernel_parity::reduce_parity(rows, axis, dtype, &runtime.device, *repeats) {
                        out_of_tolerance += usize::from(!r.within_tolerance);
                        out.row(&r, format!(
                            "reduce | {} rows x {} | {} | {} | rel {:.1e} {} | ours {:.1} us, burn's {:.1} us ({:.2}x)",
                            r.rows, r.axis, r.op, r.dtype, r.rel, verdict(r.within_tolerance), r.kernel_us, r.reference_us, r.reference_us / r.kernel_us
                        ))?;
                    }
                }
            }
            for &dtype in dtypes.iter().filter(|_| wants("ssd")) {
                for case in kernel_parity::ssd_cases() {
                    for form in [kernel_parity::SsdForm::Attend, kernel_parity::SsdForm::Reverse, kernel_parity::SsdForm::Scan, kernel_parity::SsdForm::States, kernel_parity::SsdForm::Passing] {
                        let r = kernel_parity::ssd_parity(case, form, dtype, &runtime.device, *repeats);
                        let m = &r.measured;
                        out_of_tolerance += usize::from(!m.within_tolerance);
                        out.row(&r, format!(
                            "ssd {:?} | {:?} chunk {} | {} | rel {:.1e} grads {:.1e} {} | ours {:.1} us ({:.1} TFLOP/s), tensor ops {:.1} us ({:.2}x), floor {:.2} us",
                            r.form, r.shape, r.chunk, m.dtype, m.rel, r.grad_rel, verdict(m.within_tolerance), m.kernel_us, r.tflops, m.reference_us, m.reference_us / m.kernel_us, m.floor_us
                        ))?;
                    }
                }
            }
            let kernels = distill_kernels::matmul::ProductKernels::for_projections();
            for case in kernel_parity::projection_cases().into_iter().filter(|_| wants("projection")) {
                let r = kernel_parity::projection_parity(case, runtime.dtype, &runtime.device, kernels);
                out_of_tolerance += usize::from(!r.within_tolerance);
                let c = r.case;
                out.row(&r, format!(
                    "projection | {}x{}->{} | {} | {} | rel y {:.1e} dx {:.1e} dw {:.1e} {}",
                    c.rows, c.d_in, c.d_out, r.dtype, r.kernels, r.y_rel, r.x_grad_rel, r.w_grad_rel,
                    verdict(r.within_tolerance)
                ))?;
            }
        }
        BenchWhat::DecodeGraph { model, batch, prompt, steps, speculative, draft_layers, draft_noise } => {
            for m in inference(models(model, &runtime)?) {
                let draft = match (draft_layers, draft_noise) {
                    (Some(n), _) => Some(inference(vec![BenchModel::random_transformer(&m.config.llama, *n, &runtime)?]).remove(0)),
                    (None, Some(scale)) => Some(m.noisy_copy(*scale, 1)),
                    (None, None) => None,
                };
                let r = distill_stages::bench::graph::run(&m, &runtime, *batch, *prompt, *steps, speculative, draft.as_ref())?;
                let part = |m: Option<usize>| m.map_or("-".to_string(), |i| i.to_string());
                let mut summary = format!(
                    "decode_graph | {} | batch {} | context {} | step: plain {:.3} ms, eager {:.3} ms, replayed {:.3} ms ({:.2}x, max logit diff {:.1e}) | decoding: plain {:.3} ms/token, on a graph {:.3} ms/token ({:.2}x, {} replays, same tokens: {}; rows part at {})",
                    r.model, r.batch, r.prompt, r.plain_ms, r.eager_ms, r.replay_ms, r.speedup, r.max_abs_diff,
                    r.decode_plain_ms, r.decode_graph_ms, r.decode_plain_ms / r.decode_graph_ms, r.graph_replays, r.same_tokens,
                    r.first_mismatch.iter().map(|m| part(*m)).collect::<Vec<_>>().join(" ")
                );
                let need = |a: Option<f64>| a.map_or("none".to_string(), |a| format!("{a:.2}"));
                for s in &r.speculative {
                    summary += &format!(
                        " | speculative on graphs, K={} drafted by {}: {:.3} ms/token, {:.2} tokens a round, acceptance {:.2}, parts from plain at {}; a round {:.3} ms = {:.2} steps, its verification {:.3} ms = {:.2} steps: acceptance to break even {}, to double {}",
                        s.k, s.draft, s.ms_per_token, s.tokens_per_round, s.acceptance, part(s.first_mismatch),
                        s.round_ms, s.round_in_steps, s.verify_ms, s.verify_in_steps, need(s.acceptance_for_break_even), need(s.acceptance_for_2x)
                    );
                }
                out.row(&r, summary)?;
            }
        }
        BenchWhat::Allreduce { gpus, count, elements, repeats, copies_first } => {
            let devices: Vec<burn::tensor::Device> = std::iter::once(runtime.device.clone()).chain(replica_gpus(&args.device, *gpus)?).collect();
            let r = distill_stages::bench::allreduce::run(&devices, *count, *elements, *repeats, *copies_first)?;
            out.row(&r, format!("all_reduce | {} devices | {} x {} f32 | {:.3} ms | bus {:.1} GB/s | exact sum {}", r.devices, r.count, r.elements, r.ms, r.bus_gb_s, r.correct))?;
        }
        BenchWhat::Attention { shape, repeats } => {
            let shape: [usize; 4] = shape.as_slice().try_into().map_err(|_| anyhow::anyhow!("--shape takes four numbers: batch,heads,seq,head_dim"))?;
            let r = distill_stages::bench::attention::run(shape, &runtime, *repeats)?;
            out.row(&r, format!("train_attention | {:?} | {} | burn {:.1} ms | composite {:.1} ms (grad rel diff {:.1e}) | recomputing {:.1} ms, {:.2}x burn (grad rel diff {:.1e})", r.shape, r.dtype, r.burn_ms, r.composite_ms, r.composite_grad_rel_diff, r.ours_ms, r.speedup, r.grad_rel_diff))?;
        }
        BenchWhat::Ssd { shape, chunk, repeats, forward_only } => {
            let shape: [usize; 5] = shape.as_slice().try_into().map_err(|_| anyhow::anyhow!("--shape takes five numbers: batch,seq,heads,head_dim,d_state"))?;
            let r = distill_stages::bench::ssd::run(shape, *chunk, &runtime, *repeats, *forward_only)?;
            out.row(&r, format!(
                "ssd_scan | {:?} chunk {} | inside the chunks: {} | forward {:.2} ms ({:.1}x its floor {:.3} ms) | forward + backward {:.2} ms ({:.1}x its floor {:.3} ms)",
                r.shape, r.chunk, r.inside, r.forward_ms, r.forward_ms / r.forward_floor_ms, r.forward_floor_ms, r.forward_backward_ms, r.forward_backward_ms / r.forward_backward_floor_ms, r.forward_backward_floor_ms
            ))?;
        }
        BenchWhat::Parity { fixtures } => {
            for f in fixtures {
                let r = parity::run(f, &runtime).with_context(|| format!("parity on {}", f.display()))?;
                out.row(&r, format!("{} | {} | max abs {:.4} | max rel L2 {:.4} | clear greedy flips {} of {}", r.fixture, r.dtype, r.max_abs, r.max_rel_l2, r.clear_greedy_flips, r.positions))?;
            }
        }
    }
    for line in &out.table {
        println!("{line}");
    }
    if out_of_tolerance > 0 {
        anyhow::bail!("{out_of_tolerance} kernel cases outside tolerance");
    }
    Ok(ExitCode::SUCCESS)
}

fn models(args: &BenchModelArgs, runtime: &Runtime) -> anyhow::Result<Vec<BenchModel>> {
    let source = match (&args.model, &args.random) {
        (Some(p), _) => ModelSource::Path(p.clone()),
        (None, Some(c)) => ModelSource::Random(c.clone()),
        (None, None) => anyhow::bail!("give --model or --random"),
    };
    args.attention_fraction.iter().map(|&f| Ok(BenchModel::load(&source, f, runtime)?)).collect()
}

/// The GPUs after `device`'s that `--gpus N` trains on: `cuda` / `cuda:K` and the next N - 1.
/// Models that decode only: their projections fused, as the inference stages load theirs.
fn inference(mut models: Vec<BenchModel>) -> Vec<BenchModel> {
    for m in &mut models {
        m.model.fuse_projections();
    }
    models
}

fn replica_gpus(device: &str, gpus: usize) -> anyhow::Result<Vec<burn::tensor::Device>> {
    if gpus <= 1 {
        return Ok(Vec::new());
    }
    let first = match device.strip_prefix("cuda") {
        Some("") => 0,
        Some(k) => k.trim_start_matches(':').parse::<usize>().map_err(|_| anyhow::anyhow!("--device {device}: expected cuda or cuda:N"))?,
        None => anyhow::bail!("--gpus {gpus} needs --device cuda (data parallelism runs on GPUs)"),
    };
    (first + 1..first + gpus).map(|k| Ok(Runtime::parse(&format!("cuda:{k}"), None)?.device)).collect()
}

/// A kernel case's row word: what `bench kernels` counts and exits non-zero for.
fn verdict(within_tolerance: bool) -> &'static str {
    if within_tolerance { "ok" } else { "OUT OF TOLERANCE" }
}

/// JSON lines as they come (stdout and `--json`), table rows for the end.
struct Lines {
    file: Option<PathBuf>,
    table: Vec<String>,
}

impl Lines {
    fn row(&mut self, r: &impl serde::Serialize, summary: String) -> anyhow::Result<()> {
        let line = serde_json::to_string(r)?;
        println!("{line}");
        if let Some(path) = &self.file {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| path.display().to_string())?;
            writeln!(f, "{line}")?;
        }
        self.table.push(summary);
        Ok(())
    }
}

//! Training-step throughput: the trainer the `distill`, `sft` and `dpo` stages run (micro-
//! batches, gradient accumulation, clipping, AdamW), on random token windows. With a teacher
//! it is the distillation step (teacher forward, student forward and backward on
//! KL(teacher || student)); without, next-token cross-entropy.

use burn::tensor::{DType, Int, Tensor, TensorData};
use serde::Serialize;

use super::{median, BenchModel};
use crate::error::{Error, Result};
use crate::losses::{cross_entropy, kl_divergence, KlOptions};
use crate::runtime::Runtime;
use crate::train::{device_of, Copies, Peers, param_sizes, AdamWConfig, Freeze, Loss, LrSchedule, TrainConfig, TrainableLm, Trainer};

#[derive(Debug, Clone)]
pub struct TrainCase {
    pub batch: usize,
    pub micro_batch: usize,
    pub seq: usize,
    /// Timed optimizer steps, after `warmup` untimed ones.
    pub steps: u64,
    pub warmup: u64,
    /// Dense bf16 peak of the device in TFLOP/s, for model FLOPs utilization.
    pub peak_tflops: f64,
    /// The student's frozen parameters (`non_mamba`: the paper's layerwise step).
    pub freeze: Freeze,
    /// Constant learning rate (large enough, the loss curves of two GPU counts can be compared).
    pub lr: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainResult {
    pub bench: &'static str,
    pub model: String,
    pub teacher: Option<String>,
    pub device: String,
    pub dtype: &'static str,
    pub batch: usize,
    pub micro_batch: usize,
    pub seq: usize,
    pub steps: u64,
    pub devices: usize,
    pub freeze: String,
    /// The first step's loss: the same data at the same global batch gives the same value
    /// whatever the micro-batch (a check that a large micro-batch really computed its step).
    pub first_loss: f64,
    /// Every step's loss, warmup included: the curve one GPU and several at the same global
    /// batch should share (issue 10).
    pub losses: Vec<f64>,
    pub tokens_per_s: f64,
    pub ms_per_step: f64,
    /// Rank 0's median time in the exchange with the other processes (`--processes`; 0 else).
    pub exchange_ms: f64,
    /// Model FLOPs per token (PaLM's count: 6·P + 12·L·d_attn·seq for the student, where a
    /// frozen parameter costs 4 rather than 6 (no weight gradient), plus the teacher's forward
    /// 2·P + 4·L·d_attn·seq); SSM scan FLOPs are left out.
    pub flops_per_token: f64,
    pub tflops: f64,
    pub mfu: f64,
}

fn attention_flops(m: &BenchModel, seq: usize) -> f64 {
    let c = &m.config.llama;
    (m.config.attention_layers.len() * c.n_heads * c.head_dim * seq) as f64
}

/// Runs `case.warmup + case.steps` optimizer steps of `student`; medians over the timed ones.
/// With `replicas`, data-parallel over `runtime`'s device and those, `case.batch` examples per
/// device (issue 10's fixed per-GPU batch).
/// With `peers`, this process's share of a data-parallel group of processes (one device each).
pub fn run(student: BenchModel, teacher: Option<&BenchModel>, runtime: &Runtime, case: TrainCase, replicas: &[burn::tensor::Device], peers: Option<Peers>) -> Result<TrainResult> {
    let devices = peers.as_ref().map_or(1 + replicas.len(), |p| p.world);
    let vocab = student.config.llama.vocab_size;
    let (matmul_params, student_attention) = (student.matmul_params(), attention_flops(&student, case.seq));
    let tied = student.config.llama.tie_embeddings;
    let (label, rope) = (student.label.clone(), student.rope.clone());
    let total = case.warmup + case.steps;
    let batch = case.batch * devices;
    let config = TrainConfig {
        steps: total,
        batch,
        micro_batch: case.micro_batch,
        schedule: LrSchedule { lr: case.lr, warmup: 0, total, min_ratio: 1.0 },
        adamw: AdamWConfig::default(),
        max_grad_norm: Some(1.0),
        seed: 0,
        checkpoint_every: 0,
        checkpoint_dir: None,
        freeze: case.freeze.clone(),
    };
    let examples = (batch * total as usize).max(1);
    let mut trainer = Trainer::new(student.model, config, examples, runtime.dtype, &runtime.device).map_err(|e| Error::Config(e.to_string()))?.with_replicas(replicas);
    if let Some(peers) = peers {
        trainer = trainer.with_peers(peers);
    }
    // An untied embedding is a lookup, not a product (`matmul_params` leaves it out too).
    let frozen_matmul: usize = param_sizes(&trainer.model).iter().filter(|(name, trainable, _)| !trainable && (tied || !name.contains("embed_tokens"))).map(|(_, _, n)| n).sum();
    let flops_per_token = 6.0 * matmul_params as f64 - 2.0 * frozen_matmul as f64
        + 12.0 * student_attention
        + teacher.map_or(0.0, |t| 2.0 * t.matmul_params() as f64 + 4.0 * attention_flops(t, case.seq));
    let teachers = teacher.map(|t| Copies::new(&t.model, replicas));
    let kl = KlOptions::default();
    let loss_fn = |model: &crate::hybrid::Hybrid, ids: &[usize]| {
        // Where this micro-batch runs: the main device or a replica's.
        let device = device_of(model);
        let train_device = device.clone().autodiff();
        let s = case.seq;
        let tokens: Vec<i64> = ids.iter().flat_map(|&i| (0..=s).map(move |j| ((i * 104_729 + j * 7919) % (vocab - 1)) as i64)).collect();
        let all: Tensor<2, Int> = Tensor::from_data(TensorData::new(tokens, [ids.len(), s + 1]), &device);
        let input = all.clone().slice([0..ids.len(), 0..s]);
        let mask = Tensor::<2>::ones([ids.len(), s], &train_device);
        let logits = model.train_logits(input.clone().autodiff(), &rope).cast(DType::F32);
        let total = match teacher {
            Some(t) => {
                let t_logits = teachers.as_ref().expect("with the teacher").on(&device).train_logits(input, &t.rope).cast(DType::F32);
                kl_divergence(logits, t_logits.autodiff(), mask, &kl)
            }
            None => cross_entropy(logits, all.slice([0..ids.len(), 1..s + 1]).autodiff(), mask),
        };
        Ok(Loss { parts: Vec::new(), total, tokens: ids.len() * s })
    };
    let (mut rates, mut losses, mut exchanges) = (Vec::new(), Vec::new(), Vec::new());
    trainer
        .run(
            loss_fn,
            |r| {
                losses.push(r.loss);
                if r.step > case.warmup {
                    rates.push(r.tokens_per_s);
                    exchanges.push(r.exchange_s);
                }
                Ok(())
            },
            || false,
        )
        .map_err(|e| Error::Config(format!("training step: {e}")))?;
    let tokens_per_s = median(rates);
    let tflops = flops_per_token * tokens_per_s / 1e12;
    Ok(TrainResult {
        bench: if teacher.is_some() { "distill_step" } else { "train_step" },
        model: label,
        teacher: teacher.map(|t| t.label.clone()),
        device: format!("{:?}", runtime.device),
        dtype: runtime.dtype_name(),
        batch,
        micro_batch: case.micro_batch,
        seq: case.seq,
        steps: case.steps,
        devices,
        freeze: format!("{:?}", case.freeze),
        first_loss: losses.first().copied().unwrap_or(f64::NAN),
        losses,
        tokens_per_s,
        ms_per_step: 1e3 * (batch * case.seq) as f64 / tokens_per_s,
        exchange_ms: 1e3 * median(exchanges),
        flops_per_token,
        tflops,
        mfu: tflops / (case.peak_tflops * devices as f64),
    })
}

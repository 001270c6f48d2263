//! The command line, as clap derives it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "distill", version, about = "Distill Llama-family Transformers into hybrid Mamba models, as a cached pipeline")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Args, Clone)]
pub struct ManifestArgs {
    /// The experiment manifest (default: distill.toml in the current folder).
    #[arg(default_value = "distill.toml")]
    pub manifest: PathBuf,
    /// Override a manifest value: `stages.train.params.lr=3e-4`, `device=cuda`, `vars.tokens=1000`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the pipeline: only stages whose inputs changed run.
    Run(RunArgs),
    /// Say for each stage: cached, will run (why), or may run.
    Status {
        #[command(flatten)]
        manifest: ManifestArgs,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Say exactly what changed in a stage's cache key since it last ran.
    Explain {
        /// The stage (a family name explains every member).
        stage: String,
        #[command(flatten)]
        manifest: ManifestArgs,
    },
    /// Print the stage graph.
    Dag {
        #[command(flatten)]
        manifest: ManifestArgs,
        #[arg(long, value_enum, default_value_t = DagFormat::Ascii)]
        format: DagFormat,
    },
    /// List past runs.
    Runs {
        /// The workspace folder (where the manifest lives).
        #[arg(long, default_value = ".")]
        workspace: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Remove stored outputs that no kept run references.
    Gc {
        #[arg(long, default_value = ".")]
        workspace: PathBuf,
        /// Keep the records (and outputs) of the last N runs.
        #[arg(long, default_value_t = 5)]
        keep_last: usize,
    },
    /// Write the self-contained HTML report of the last run (or RUN); two runs: a comparison.
    Report {
        /// Run ids (or unique prefixes); none means the last run.
        runs: Vec<String>,
        #[arg(long, default_value = ".")]
        workspace: PathBuf,
        /// Where to write report.html and report.json (default: beside the run's record).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the JSON Schema of manifests (for taplo / Even Better TOML).
    Schema,
    /// Generate text with any model artifact: `--model @teacher` or a model folder.
    Generate(GenerateArgs),
    /// Measure decoding, training steps or bf16 parity (one JSON line per case, then a table).
    Bench(BenchArgs),
    /// Run one stage from a job file (what a Slurm job executes on its node).
    #[command(hide = true, name = "exec-stage")]
    ExecStage {
        job: Option<PathBuf>,
        /// A job array's list of job files, with `--index`.
        #[arg(long, requires = "index")]
        list: Option<PathBuf>,
        #[arg(long)]
        index: Option<usize>,
    },
    /// Print the content hash distill uses for files and folders (blake3).
    #[command(hide = true)]
    Hash { paths: Vec<PathBuf> },
    /// Print where a stored output lives: `distill path @teacher` or `@corpus/heldout`.
    Path {
        reference: String,
        #[arg(long, default_value = ".")]
        workspace: PathBuf,
    },
    /// Copy a stored output out of the workspace, e.g. a checkpoint to share.
    Export {
        reference: String,
        dir: PathBuf,
        #[arg(long, default_value = ".")]
        workspace: PathBuf,
    },
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub manifest: ManifestArgs,
    /// Run only these stages (their upstream must be cached).
    #[arg(long, value_name = "STAGE")]
    pub only: Vec<String>,
    /// Run these stages and everything upstream of them.
    #[arg(long, value_name = "STAGE")]
    pub until: Vec<String>,
    /// Run these stages and everything downstream of them.
    #[arg(long, value_name = "STAGE")]
    pub downstream: Vec<String>,
    /// Rerun these stages even if cached.
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
    #[arg(long)]
    pub force_all: bool,
    /// Stages run at once (default: the number of CPU cores).
    #[arg(long, short)]
    pub jobs: Option<usize>,
    /// Plan only: say what would run and why.
    #[arg(long)]
    pub dry_run: bool,
    /// After a failure, finish the branches that do not depend on it.
    #[arg(long)]
    pub keep_going: bool,
    /// Where stages run: `local` (in this process), `process` (each in a process of its own on
    /// this machine) or `slurm` (each stage an sbatch job).
    #[arg(long, value_name = "local|process|slurm")]
    pub executor: Option<String>,
    /// Wait for another run holding the workspace instead of refusing.
    #[arg(long)]
    pub wait: bool,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// `@stage` (its stored model) or a Hugging Face model folder.
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub prompt: String,
    /// Render the prompt with the model's chat template as one user message.
    #[arg(long)]
    pub chat: bool,
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub dtype: Option<String>,
    /// The workspace whose stored outputs `@stage` names.
    #[arg(long, default_value = ".")]
    pub workspace: PathBuf,
    /// Decode speculatively with this draft model (`@stage` or a folder); same tokenizer.
    #[arg(long)]
    pub draft: Option<String>,
    /// Tokens the draft proposes per round.
    #[arg(long, default_value_t = 4, requires = "draft")]
    pub k: usize,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DagFormat {
    Ascii,
    Dot,
    Mermaid,
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, global = true, default_value = "cpu")]
    pub device: String,
    /// `f32` or `bf16` (default: f32 on the CPU, bf16 on the GPU).
    #[arg(long, global = true)]
    pub dtype: Option<String>,
    /// Also append the JSON lines to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
}

#[derive(Args)]
pub struct BenchModelArgs {
    /// A model folder (teacher or hybrid) or a llama `.gguf`.
    #[arg(long, conflicts_with = "random", required_unless_present = "random")]
    pub model: Option<PathBuf>,
    /// Random weights in the shape of this Hugging Face `config.json` (speed only).
    #[arg(long)]
    pub random: Option<PathBuf>,
    /// With `--random`: the hybrids to build, as fractions of attention layers kept (1 = the
    /// Llama itself), e.g. `1,0.5,0.25`.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub attention_fraction: Vec<f64>,
}

#[derive(Subcommand)]
pub enum BenchWhat {
    /// Prefill and greedy decoding tokens/s for each batch size and prompt length.
    Decode {
        #[command(flatten)]
        model: BenchModelArgs,
        #[arg(long, value_delimiter = ',', default_value = "1,32")]
        batch: Vec<usize>,
        /// Prompt tokens before decoding (the context length), e.g. `1024,4096,16384`.
        #[arg(long, value_delimiter = ',', default_value = "512")]
        prompt: Vec<usize>,
        #[arg(long, default_value_t = 128)]
        decode: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// One decode step run eagerly and replayed as a captured CUDA graph: times and the largest
    /// logit difference (a probe of launch overhead; on the CPU a replay re-runs the step).
    DecodeGraph {
        #[command(flatten)]
        model: BenchModelArgs,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 512)]
        prompt: usize,
        /// Steps timed each way.
        #[arg(long, default_value_t = 32)]
        steps: usize,
        /// Also decode row 0 by speculative rounds on graphs with K drafts a round, for each K
        /// given (`2,4,8`): the rounds' tokens against plain greedy decoding's, and what a round
        /// costs in plain steps.
        #[arg(long, value_name = "K,..", value_delimiter = ',')]
        speculative: Vec<usize>,
        /// The rounds' draft: a random Transformer of this many layers in the model's shape
        /// (what a round costs with a small draft; it accepts next to nothing). Default: the
        /// model drafts for itself (every draft accepted: the rounds' mechanics).
        #[arg(long, value_name = "N", requires = "speculative")]
        draft_layers: Option<usize>,
        /// The rounds' draft: the model itself with its final norm's weights scaled by
        /// `1 ± SCALE` (e.g. 0.3): the same hidden states and a greedy choice that differs where
        /// the top logits are near, so rounds accept some drafts and roll back at every count.
        #[arg(long, value_name = "SCALE", requires = "speculative", conflicts_with = "draft_layers")]
        draft_noise: Option<f32>,
    },
    /// Training-step tokens/s and model FLOPs utilization; `--distill` adds the teacher's forward.
    Train {
        #[command(flatten)]
        model: BenchModelArgs,
        /// Distill from this model's logits (with `--random`: the Llama of the same config).
        #[arg(long)]
        distill: bool,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[arg(long)]
        micro_batch: Option<usize>,
        #[arg(long, default_value_t = 2048)]
        seq: usize,
        #[arg(long, default_value_t = 10)]
        steps: u64,
        #[arg(long, default_value_t = 3)]
        warmup: u64,
        /// The device's dense bf16 peak, TFLOP/s (H100/H200 SXM datasheet: 989).
        #[arg(long, default_value_t = 989.0)]
        peak_tflops: f64,
        /// Train data-parallel on this many GPUs (`--device`'s and the next ones), `--batch`
        /// examples on each.
        #[arg(long, default_value_t = 1)]
        gpus: usize,
        /// Train data-parallel in this many processes, one device each (`torchrun`'s way: this
        /// process is rank 0 and starts the others; with `--device cuda`, rank R runs on
        /// `cuda:R`), `--batch` examples in each.
        #[arg(long, default_value_t = 1, conflicts_with = "gpus")]
        processes: usize,
        /// Set by rank 0 for the ranks it starts.
        #[arg(long, hide = true)]
        rank: Option<usize>,
        #[arg(long, hide = true)]
        rendezvous: Option<PathBuf>,
        /// The student's frozen parameters, as the stages' `freeze`: `none`, `non_mamba` (the
        /// paper's layerwise step), or comma-separated name substrings.
        #[arg(long, default_value = "none")]
        freeze: distill_stages::train::Freeze,
        /// Constant learning rate of the timed run.
        #[arg(long, default_value_t = 1e-5)]
        lr: f64,
    },
    /// Matrix-product TFLOP/s on given shapes (`MxKxN`, or `BxMxKxN` for B products side by side,
    /// `t` suffix: left operand transposed);
    /// the default shapes are a SmolLM2 training step's at 8 x 2048 tokens.
    Matmul {
        #[arg(long, value_delimiter = ',', default_value = "16384x576x576,16384x576x192,16384x576x1536,16384x1536x576,16384x576x49152,576x16384x1536t,1536x16384x576t,576x16384x49152t")]
        shapes: Vec<distill_stages::bench::matmul::MatmulShape>,
        /// cubek routines to time on each shape (`default` is burn's own choice).
        #[arg(long, value_delimiter = ',', default_value = "default")]
        kernels: Vec<distill_kernels::matmul::MatmulKernel>,
        #[arg(long, default_value_t = 20)]
        repeats: usize,
    },
    /// The gradient all-reduce of data-parallel training over `--gpus` GPUs (one thread each):
    /// time, bus bandwidth, and whether every device holds the exact sum.
    Allreduce {
        #[arg(long, default_value_t = 2)]
        gpus: usize,
        /// Tensors reduced per round (the hybrid's trainable parameters: ~330).
        #[arg(long, default_value_t = 333)]
        count: usize,
        /// f32 elements per tensor.
        #[arg(long, default_value_t = 262_144)]
        elements: usize,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Copy this many tensors to the other GPUs with burn's `to_device` first.
        #[arg(long, default_value_t = 0)]
        copies_first: usize,
    },
    /// The training step's causal attention, forward and backward: burn's (its autodiff
    /// fallback) against ours (softmax with its own backward), timed in the same run.
    Attention {
        /// `batch,heads,seq,head_dim` (default: one micro-batch of the SmolLM2 step).
        #[arg(long, value_delimiter = ',', default_values_t = [8usize, 9, 2048, 64])]
        shape: Vec<usize>,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
    /// The chunked SSD scan of training and prefill (burn's fused tensor ops), forward and with
    /// its backward, against the bytes a fused kernel must move.
    Ssd {
        /// `batch,seq,heads,head_dim,d_state` (default: a SmolLM2 hybrid's Mamba-2 layer at the
        /// micro-batch of 16 x 2048 tokens).
        #[arg(long, value_delimiter = ',', default_values_t = [16usize, 2048, 9, 64, 64])]
        shape: Vec<usize>,
        #[arg(long, default_value_t = 256)]
        chunk: usize,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Time the forward only (the backward's figures are then NaN): for a profile of the
        /// forward's kernels alone.
        #[arg(long)]
        forward_only: bool,
    },
    /// Each GPU kernel of `distill-kernels` against its plain-tensor twin on random inputs, over
    /// shapes (batch 1..64, SmolLM2 / Llama-3-8B / Mamba-2 layer shapes) in f32 and bf16: the
    /// largest relative difference, both times, and the kernel's time against its memory floor.
    Kernels {
        #[arg(long, default_value_t = 50)]
        repeats: usize,
        /// Only these groups: step, steps, gemv, attention, norm, reduce, projection, ssd (comma-separated;
        /// default: all of them)
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Only the Mamba step cases whose label holds this text (`b32 h32/8`: Llama-3-8B's
        /// shape at batch 32), so that a profiler sees one shape's launches
        #[arg(long)]
        case: Option<String>,
    },
    /// Our logits on golden fixtures (`tests/golden/NAME`) against transformers' f32 logits.
    Parity {
        fixtures: Vec<PathBuf>,
    },
}

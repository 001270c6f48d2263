//! The training loop: for each optimizer step, draw the global batch from the seeded order,
//! run it in micro-batches (accumulating gradients), check loss and gradient for NaN/inf,
//! clip by global norm, step AdamW, report, checkpoint every N steps.
//!
//! Data parallelism ([`Trainer::with_replicas`], [`super::parallel`]): replicas of the model and
//! optimizer on further devices, each on its own thread, take every n-th micro-batch of the
//! step; their gradient sums are all-reduced and every device applies the same update. The
//! micro-batches are the single device's, so the result is the single device's up to the order
//! the gradients are summed in (bit for bit when each device takes one micro-batch per step).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Gradients, Tensor};

use super::adamw::{AdamW, AdamWConfig};
use super::base::{TrainError, TrainResult};
use super::checkpoint::{load_checkpoint, save_checkpoint, TrainState};
use super::devices::device_of;
use super::freeze::{freeze, Freeze};
use super::model::TrainableLm;
use super::names::PathTracker;
use super::order::DataOrder;
use super::parallel::{compute, flatten, reduce_across, unflatten, update, Partial, Reduce, Replica, ReplicaInit, Worker};
use super::peers::Peers;
use super::schedule::LrSchedule;

#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: u64,
    /// Examples per optimizer step (the global batch).
    pub batch: usize,
    /// Examples per forward pass; `batch / micro_batch` passes are accumulated.
    pub micro_batch: usize,
    pub schedule: LrSchedule,
    pub adamw: AdamWConfig,
    /// Clip the global gradient norm to this (the paper: 0.1 in stage 1).
    pub max_grad_norm: Option<f64>,
    pub seed: u64,
    /// Checkpoint every N optimizer steps (0: never) into `checkpoint_dir`.
    pub checkpoint_every: u64,
    pub checkpoint_dir: Option<PathBuf>,
    pub freeze: Freeze,
}

/// One micro-batch's loss: `total` drives backward; `parts` are logged (`loss/kl`, `loss/ce`).
pub struct Loss {
    pub total: Tensor<1>,
    pub parts: Vec<(&'static str, Tensor<1>)>,
    pub tokens: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// 1-based optimizer step.
    pub step: u64,
    pub loss: f64,
    pub parts: Vec<(&'static str, f64)>,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    /// Seconds this rank spent in the exchange with its peers (0 without): moving the sums
    /// plus waiting for the slowest rank.
    pub exchange_s: f64,
}

pub struct Trainer<M> {
    pub config: TrainConfig,
    /// On the autodiff device, frozen parameters marked.
    pub model: M,
    pub opt: AdamW,
    pub state: TrainState,
    order: DataOrder,
    /// True when the run continued from a checkpoint.
    pub resumed: bool,
    /// Copies of `model` and `opt` on further devices (data parallelism), updated alike.
    replicas: Vec<Replica<M>>,
    /// The devices of `replicas`, which their threads make at the start of the first run.
    replica_devices: Vec<Device>,
    /// The other processes of a data-parallel group (one device each), when this is one.
    peers: Option<Peers>,
    /// Failed kernel launches the device has reported so far ([`crate::device_failures::count`];
    /// tests give their own).
    failures: fn() -> u64,
}

impl<M: TrainableLm> Trainer<M> {
    /// Prepares `model` (plain, loaded) for training over `examples` examples, resuming from
    /// `config.checkpoint_dir` when it holds a checkpoint.
    pub fn new(model: M, config: TrainConfig, examples: usize, dtype: DType, device: &Device) -> TrainResult<Self> {
        batch_split(config.batch, config.micro_batch, 1, "one device").map_err(|(_, message)| TrainError::Config(message))?;
        if examples == 0 {
            return Err(TrainError::Config("no training examples".into()));
        }
        let resumed = match &config.checkpoint_dir {
            Some(dir) => load_checkpoint(dir, model.clone(), dtype, device)?,
            None => None,
        };
        let (model, opt, state, resumed) = match resumed {
            Some((m, opt, state)) => (m, opt, state, true),
            None => (model, AdamW::new(config.adamw), TrainState::default(), false),
        };
        // Loaded parameters are inactive (plain tensors); activate all, then freeze some.
        let model = freeze(model.train().set_require_grad(true), &config.freeze);
        let order = DataOrder { examples, seed: config.seed };
        Ok(Self { config, model, opt, state, order, resumed, replicas: Vec::new(), replica_devices: Vec::new(), peers: None, failures: crate::device_failures::count })
    }

    /// Trains over `devices` besides the main one (data parallelism, see [`super::parallel`]):
    /// micro-batch `i` of each step runs on device `i % (1 + devices.len())` (0: the main
    /// device), so `batch / micro_batch` must be a multiple of the device count.
    pub fn with_replicas(mut self, devices: &[Device]) -> Self {
        self.replica_devices = devices.to_vec();
        self
    }

    /// Trains as rank `peers.rank` of a group of processes (see [`super::peers`]): micro-batch
    /// `i` of each step runs in process `i % world`, the gradients are summed through the
    /// peers, and only rank 0 writes checkpoints.
    pub fn with_peers(mut self, peers: Peers) -> Self {
        self.peers = Some(peers);
        self
    }

    /// Trains until `config.steps`; `stop()` is asked before every step (Ctrl-C, tests that
    /// simulate a kill) and ends the run with `Interrupted`. `loss_fn` runs on each replica's
    /// thread with that replica's model: it must compute where the model it is given is.
    pub fn run<F>(&mut self, loss_fn: F, mut on_step: impl FnMut(&StepReport) -> TrainResult<()>, stop: impl Fn() -> bool) -> TrainResult<()>
    where
        F: Fn(&M, &[usize]) -> TrainResult<Loss> + Sync,
    {
        if self.peers.is_some() && !self.replica_devices.is_empty() {
            return Err(TrainError::Config("a process of a data-parallel group trains on one device (no replicas besides peers)".into()));
        }
        let n = self.peers.as_ref().map_or(1 + self.replica_devices.len(), |p| p.world);
        batch_split(self.config.batch, self.config.micro_batch, n, &format!("{n} devices")).map_err(|(_, message)| TrainError::Config(message))?;
        let devices: Vec<Device> = std::iter::once(device_of(&self.model)).chain(self.replica_devices.iter().cloned()).collect();
        let reduce = Reduce::for_devices(&devices)?;
        // Made on their own threads the first time (see `Worker::spawn`), kept for later runs.
        let replicas: Vec<ReplicaInit<M>> = match std::mem::take(&mut self.replicas) {
            made if made.len() == n - 1 => made.into_iter().map(ReplicaInit::Ready).collect(),
            _ => self.replica_devices.iter().map(|d| ReplicaInit::CopyOf(self.model.clone(), self.opt.clone(), d.clone())).collect(),
        };
        std::thread::scope(|scope| {
            let workers: Vec<Worker<M>> = replicas.into_iter().map(|r| Worker::spawn(scope, r, &loss_fn, reduce, devices.clone())).collect();
            let result = (|| {
                while self.state.step < self.config.steps {
                    if stop() {
                        return Err(TrainError::Interrupted(self.state.step));
                    }
                    let report = self.step(&workers, reduce, &devices, &loss_fn)?;
                    on_step(&report)?;
                    let every = self.config.checkpoint_every;
                    let writes = self.peers.as_ref().is_none_or(|p| p.rank == 0);
                    if let (Some(dir), true) = (&self.config.checkpoint_dir, writes && every > 0 && self.state.step.is_multiple_of(every)) {
                        save_checkpoint(dir, &self.model, &self.opt, &self.state)?;
                    }
                }
                Ok(())
            })();
            self.replicas = workers.into_iter().map(Worker::finish).collect();
            result
        })
    }

    fn step<F>(&mut self, workers: &[Worker<'_, M>], reduce: Reduce, devices: &[Device], loss_fn: &F) -> TrainResult<StepReport>
    where
        F: Fn(&M, &[usize]) -> TrainResult<Loss>,
    {
        let started = Instant::now();
        let failed_before = (self.failures)();
        let step = self.state.step + 1;
        let c = &self.config;
        let draws = self.order.take(self.state.step * c.batch as u64, c.batch);
        let micros: Vec<Vec<usize>> = draws.chunks(c.micro_batch).map(<[usize]>::to_vec).collect();
        let (rank, n) = self.peers.as_ref().map_or((0, 1 + workers.len()), |p| (p.rank, p.world));
        let share = |r: usize| micros.iter().skip(r).step_by(n).cloned().collect::<Vec<_>>();
        for (r, w) in workers.iter().enumerate() {
            w.compute(share(r + 1), c.batch);
        }
        tracing::debug!(step, devices = n, "step computes");
        let mine = compute(&self.model, loss_fn, &share(rank), c.batch);
        let mut exchange_s = 0.0;
        let (p, tokens, mut host_sum) = match self.peers.as_mut() {
            Some(peers) => {
                let (p, tokens, secs) = exchange(peers, mine, self.failures, failed_before, step)?;
                exchange_s = secs;
                (p, tokens, None)
            }
            None => {
                // Every replica answers before any error returns, so none is left mid-step.
                let theirs: Vec<TrainResult<usize>> = workers.iter().map(Worker::computed).collect();
                let mut p = mine?;
                let mut tokens = p.tokens;
                for t in theirs {
                    tokens += t?;
                }
                // On the host path, the summed flat buffer every replica takes its update from.
                let host_sum = reduce_across(&mut p, workers, reduce, devices, step)?;
                (p, tokens, host_sum)
            }
        };
        tracing::debug!(step, "step reads loss and gradient norm");
        let norm = squared_norm(&p.grads);
        let mut values = read_all(p.sums.iter().map(|(_, t)| t.clone()).chain(norm.clone())).map_err(|message| TrainError::Device { step, message })?;
        let grad_norm = match norm {
            Some(_) => values.pop().unwrap_or(f64::NAN).sqrt(),
            None => 0.0,
        };
        launches_ran(self.failures, failed_before, step)?;
        let loss = values.first().copied().unwrap_or(f64::NAN);
        if !loss.is_finite() {
            return Err(TrainError::NonFinite { step, what: format!("loss ({loss})") });
        }
        let parts: Vec<(&'static str, f64)> = p.sums.iter().skip(1).map(|(n, _)| *n).zip(values.into_iter().skip(1)).collect();
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite { step, what: format!("gradient norm ({grad_norm})") });
        }
        // torch.nn.utils.clip_grad_norm_: scale by max / (norm + 1e-6) when above max.
        let coef = c.max_grad_norm.map_or(1.0, |max| max / (grad_norm + 1e-6));
        let lr = c.schedule.at(self.state.step);
        for (i, w) in workers.iter().enumerate() {
            // The last worker takes the buffer itself: no copy when there is one.
            w.update(coef, lr, if i + 1 == workers.len() { host_sum.take() } else { host_sum.clone() });
        }
        self.model = update(self.model.clone(), &mut self.opt, p.grads, coef, lr);
        self.state.step = step;
        self.state.tokens += tokens as u64;
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        Ok(StepReport { step, loss, parts, lr, grad_norm, tokens_per_s: tokens as f64 / secs, exchange_s })
    }

    /// The trained model off the autodiff device, for saving and evaluation.
    pub fn into_model(self) -> M {
        self.model.valid()
    }
}

/// What is wrong with a step of `batch` examples in micro-batches of `micro` dealt to `n`
/// devices (`sharers` names them in the message), if anything: the param to change and why.
/// The stages check it when a manifest is planned, the trainer again before it trains.
pub fn batch_split(batch: usize, micro: usize, n: usize, sharers: &str) -> Result<(), (&'static str, String)> {
    if batch == 0 || micro == 0 || !batch.is_multiple_of(micro) {
        return Err(("micro_batch", format!("batch {batch} must be a positive multiple of micro_batch {micro}")));
    }
    let micros = batch / micro;
    if !micros.is_multiple_of(n) {
        let fits = micro * n * micros.div_ceil(n);
        return Err(("batch", format!("batch {batch} in micro-batches of {micro} makes {micros} per step, which {sharers} cannot share evenly: make batch / micro_batch a multiple of {n} (batch = {fits})")));
    }
    Ok(())
}

/// This process's share of a step summed with its peers': the step's sums over every rank on
/// this device, and the tokens of all. A local failure (the loss function's error, the device's
/// failed launches) goes to the peers as the step's error, so every rank fails it; this rank
/// reports its own error as it was.
fn exchange(peers: &mut Peers, mine: TrainResult<Partial>, failures: fn() -> u64, failed_before: u64, step: u64) -> TrainResult<(Partial, usize, f64)> {
    let rank = peers.rank;
    let local = mine.and_then(|mut p| {
        let (flat, layout) = flatten(&mut p);
        let here = flat.device();
        let values = flat.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| TrainError::Device { step, message: format!("{e:?}") })?;
        launches_ran(failures, failed_before, step)?;
        Ok((p, layout, here, values))
    });
    let (local, wire) = match local {
        Ok((p, layout, here, values)) => {
            let tokens = p.tokens as u64;
            (Ok((p, layout, here)), Ok((values, tokens)))
        }
        Err(e) => {
            let wire = Err(format!("rank {rank}: {e}"));
            (Err(e), wire)
        }
    };
    let started = std::time::Instant::now();
    let summed = peers.all_reduce(wire).map_err(|e| TrainError::Device { step, message: format!("rank {rank} lost its peers: {e}") })?;
    let secs = started.elapsed().as_secs_f64();
    let (mut p, layout, here) = local?;
    let (values, tokens) = summed.map_err(|message| TrainError::Device { step, message })?;
    let len = values.len();
    unflatten(&mut p, layout, Tensor::from_data(burn::tensor::TensorData::new(values, [len]), &here));
    Ok((p, tokens as usize, secs))
}

/// Fails `step` when the GPU runtime logged failed launches since `before` (`failures` counts
/// them): some of the step's values were never computed.
fn launches_ran(failures: fn() -> u64, before: u64, step: u64) -> TrainResult<()> {
    match failures() - before {
        0 => Ok(()),
        failed => {
            let message = format!("the GPU runtime logged {failed} failed kernel launch(es) during this step (its log says why; out of device memory: lower micro_batch), so some of its values were never computed");
            Err(TrainError::Device { step, message })
        }
    }
}

/// One-element f32 tensors read back in one transfer (NaN where one is not f32), or the error
/// the device reports for them or, after a sync, for anything else it ran. Launches that cubecl
/// skipped with only a warning are not among those errors: the step counts them apart
/// (`crate::device_failures`).
fn read_all(values: impl Iterator<Item = Tensor<1>>) -> Result<Vec<f64>, String> {
    let values: Vec<Tensor<1>> = values.map(|t| t.reshape([1])).collect();
    let n = values.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let device = values[0].device();
    let data = Tensor::cat(values, 0).try_into_data().map_err(|e| format!("{e:?}"))?;
    device.sync().map_err(|e| format!("{e:?}"))?;
    Ok(data.try_into_vec::<f32>().map_or(vec![f64::NAN; n], |v| v.into_iter().map(f64::from).collect()))
}

/// The sum of squares of every gradient (the squared global norm), on the device; `None`
/// when nothing is trainable.
fn squared_norm(grads: &BTreeMap<String, Tensor<1>>) -> Option<Tensor<1>> {
    let sums: Vec<Tensor<1>> = grads.values().map(|g| (g.clone() * g.clone()).sum()).collect();
    (!sums.is_empty()).then(|| Tensor::cat(sums, 0).sum())
}

struct GradCollector<'a> {
    at: PathTracker,
    grads: &'a mut Gradients,
    out: &'a mut BTreeMap<String, Tensor<1>>,
}

impl ModuleVisitor for GradCollector<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.at.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return; // frozen
        }
        let Some(g) = param.val().grad_remove(self.grads) else { return };
        let n = g.shape().num_elements();
        let g = g.cast(DType::F32).reshape([n]); // [numel]
        let name = self.at.key();
        let sum = match self.out.remove(&name) {
            Some(prev) => prev + g,
            None => g,
        };
        self.out.insert(name, sum);
    }
}

/// Adds this backward pass's gradients of trainable parameters into `out` (by name, flat f32).
pub(super) fn collect_grads<M: Module>(model: &M, grads: &mut Gradients, out: &mut BTreeMap<String, Tensor<1>>) {
    model.visit(&mut GradCollector { at: PathTracker::default(), grads, out });
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use burn::tensor::{Int, TensorData};

    use super::*;
    use crate::llama::{Llama, LlamaConfig, Rope};
    use crate::losses::cross_entropy;
    use crate::train::checkpoint::weights_of;
    use crate::weights::Weights;

    pub fn tiny(vocab: usize, d_model: usize, layers: usize) -> LlamaConfig {
        LlamaConfig::new(vocab, d_model, 2 * d_model, layers, 4, 2, d_model / 4)
    }

    fn config(dir: Option<PathBuf>) -> TrainConfig {
        TrainConfig {
            steps: 6,
            batch: 4,
            micro_batch: 2,
            schedule: LrSchedule { lr: 1e-2, warmup: 2, total: 6, min_ratio: 0.0 },
            adamw: AdamWConfig { weight_decay: 0.01, ..AdamWConfig::default() },
            max_grad_norm: Some(0.5),
            seed: 3,
            checkpoint_every: 2,
            checkpoint_dir: dir,
            freeze: Freeze::Patterns(vec!["embed_tokens".into()]),
        }
    }

    /// Next-token CE on fixed pseudo-random sequences.
    fn lm_loss<'a>(rope: &'a Rope, device: &Device) -> impl Fn(&Llama, &[usize]) -> TrainResult<Loss> + Sync + 'a {
        let device = device.clone();
        move |model, ids| {
            let s = 8;
            let tokens: Vec<i64> = ids.iter().flat_map(|&i| (0..s + 1).map(move |j| ((i * 7 + j * j * 3) % 32) as i64)).collect();
            let all: Tensor<2, Int> = Tensor::from_data(TensorData::new(tokens, [ids.len(), s + 1]), &device);
            let input = all.clone().slice([0..ids.len(), 0..s]);
            let target = all.slice([0..ids.len(), 1..s + 1]);
            let logits = model.train_logits(input, rope);
            let mask = Tensor::ones([ids.len(), s], &device);
            let total = cross_entropy(logits, target, mask);
            Ok(Loss { parts: vec![("loss/ce", total.clone().detach())], total, tokens: ids.len() * s })
        }
    }

    fn trainer(model: &Llama, dir: Option<PathBuf>) -> Trainer<Llama> {
        Trainer::new(model.clone(), config(dir), 8, DType::F32, &Device::flex()).unwrap()
    }

    #[test]
    fn killed_and_resumed_equals_uninterrupted_bit_for_bit() {
        let device = Device::flex();
        let cfg = tiny(32, 16, 2);
        let (model, rope) = (cfg.init(&device), Rope::new(&cfg));
        let mut a = trainer(&model, None);
        let mut losses = Vec::new();
        a.run(lm_loss(&rope, &device), |r| Ok(losses.push(r.loss)), || false).unwrap();
        assert!(losses[5] < losses[0], "trains: {losses:?}");

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ck");
        let mut b = trainer(&model, Some(dir.clone()));
        let calls = Cell::new(0);
        // Killed after step 3: the last checkpoint is step 2, step 3 is lost and redone.
        let stop = || { calls.set(calls.get() + 1); calls.get() > 3 };
        let err = b.run(lm_loss(&rope, &device), |_| Ok(()), stop).unwrap_err();
        assert!(matches!(err, TrainError::Interrupted(3)), "{err}");
        let mut c = trainer(&model, Some(dir));
        assert!(c.resumed && c.state.step == 2);
        c.run(lm_loss(&rope, &device), |_| Ok(()), || false).unwrap();

        let (wa, wc) = (weights_of(&a.into_model()), weights_of(&c.into_model()));
        assert_eq!(wa.entries.keys().collect::<Vec<_>>(), wc.entries.keys().collect::<Vec<_>>());
        for (name, e) in &wa.entries {
            assert_eq!(wa.bytes(e), wc.bytes(&wc.entries[name]), "{name} differs after resume");
        }
        // The frozen embedding never moved.
        let before = weights_of(&model);
        let name = "model.embed_tokens.weight";
        assert_eq!(before.bytes(&before.entries[name]), wa.bytes(&wa.entries[name]));
    }

    #[test]
    fn a_nan_loss_fails_with_its_step() {
        let device = Device::flex();
        let cfg = tiny(32, 16, 1);
        let (model, rope) = (cfg.init(&device), Rope::new(&cfg));
        let mut t = trainer(&model, None);
        let calls = AtomicUsize::new(0);
        let inner = lm_loss(&rope, &device);
        let poisoned = |m: &Llama, ids: &[usize]| {
            let call = calls.fetch_add(1, Ordering::Relaxed) + 1;
            let mut l = inner(m, ids)?;
            if call == 5 {
                l.total = l.total * f64::NAN; // step 3's first micro-batch
            }
            Ok(l)
        };
        let err = t.run(poisoned, |_| Ok(()), || false).unwrap_err();
        assert!(matches!(&err, TrainError::NonFinite { step: 3, .. }), "{err}");
    }

    /// A step during which the runtime logged failed launches fails, even though its loss read
    /// back fine: some of its kernels never ran.
    #[test]
    fn a_step_with_failed_device_launches_fails_with_its_step() {
        use std::sync::atomic::AtomicU64;
        static FAILED: AtomicU64 = AtomicU64::new(0);
        let device = Device::flex();
        let cfg = tiny(32, 16, 1);
        let (model, rope) = (cfg.init(&device), Rope::new(&cfg));
        let mut t = trainer(&model, None);
        t.failures = || FAILED.load(Ordering::Relaxed);
        let calls = AtomicUsize::new(0);
        let inner = lm_loss(&rope, &device);
        let failing = |m: &Llama, ids: &[usize]| {
            if calls.fetch_add(1, Ordering::Relaxed) + 1 == 3 {
                FAILED.fetch_add(1, Ordering::Relaxed); // during step 2's first micro-batch
            }
            inner(m, ids)
        };
        let mut done = Vec::new();
        let err = t.run(failing, |r| Ok(done.push(r.step)), || false).unwrap_err();
        assert!(matches!(&err, TrainError::Device { step: 2, .. }), "{err}");
        assert_eq!(done, [1], "step 2 is never reported");
        assert!(err.to_string().contains("micro_batch"), "{err}");
    }

    /// Two devices (here two replicas on the CPU, the code path multi-GPU training takes), one
    /// micro-batch each per step: the same weights as one device, bit for bit, with the frozen
    /// embedding untouched; four micro-batches over two devices: equal up to summation order.
    #[test]
    fn replicas_train_like_one_device() {
        let device = Device::flex();
        let cfg = tiny(32, 16, 2);
        let (model, rope) = (cfg.init(&device), Rope::new(&cfg));
        for (micro, exact) in [(2, true), (1, false)] {
            let run = |replicas: &[Device]| {
                let config = TrainConfig { micro_batch: micro, checkpoint_every: 0, ..config(None) };
                let mut t = Trainer::new(model.clone(), config, 8, DType::F32, &device).unwrap().with_replicas(replicas);
                let mut losses = Vec::new();
                t.run(replica_loss(&rope), |r| Ok(losses.push(r.loss)), || false).unwrap();
                (weights_of(&t.into_model()), losses)
            };
            let ((one, l1), (two, l2)) = (run(&[]), run(&[Device::flex()]));
            assert!(l1[5] < l1[0], "trains: {l1:?}");
            same_training((&one, &l1), (&two, &l2), exact, "with a replica");
            let before = weights_of(&model);
            let name = "model.embed_tokens.weight";
            assert_eq!(before.bytes(&before.entries[name]), two.bytes(&two.entries[name]), "the frozen embedding stays put on replicas too");
        }
    }

    /// Every replica runs its micro-batches on a thread of its own (the GPU path needs it to
    /// keep the devices fed), ends the run with the main model's weights (the same update
    /// applied everywhere, nothing broadcast), and a killed two-device run resumed from the
    /// main device's checkpoint ends where an uninterrupted one does.
    #[test]
    fn replicas_run_on_threads_of_their_own_and_stay_identical_through_a_resume() {
        use std::collections::BTreeSet;
        use std::sync::Mutex;
        let device = Device::flex();
        let cfg = tiny(32, 16, 2);
        let (model, rope) = (cfg.init(&device), Rope::new(&cfg));
        let threads = Mutex::new(BTreeSet::new());
        let inner = replica_loss(&rope);
        let loss = |m: &Llama, ids: &[usize]| {
            threads.lock().unwrap().insert(format!("{:?}", std::thread::current().id()));
            inner(m, ids)
        };
        let mut a = trainer(&model, None).with_replicas(&[Device::flex()]);
        a.run(&loss, |_| Ok(()), || false).unwrap();
        assert_eq!(threads.lock().unwrap().len(), 2, "one thread per device");
        let main = weights_of(&a.model.clone().valid());
        let replica = weights_of(&a.replicas[0].model.clone().valid());
        for (name, e) in &main.entries {
            assert_eq!(main.bytes(e), replica.bytes(&replica.entries[name]), "{name}: the replica drifted from the main model");
        }

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ck");
        let mut b = trainer(&model, Some(dir.clone())).with_replicas(&[Device::flex()]);
        let calls = Cell::new(0);
        let stop = || { calls.set(calls.get() + 1); calls.get() > 3 };
        assert!(matches!(b.run(&loss, |_| Ok(()), stop), Err(TrainError::Interrupted(3))));
        let mut c = trainer(&model, Some(dir)).with_replicas(&[Device::flex()]);
        assert!(c.resumed && c.state.step == 2);
        c.run(&loss, |_| Ok(()), || false).unwrap();
        let resumed = weights_of(&c.into_model());
        for (name, e) in &main.entries {
            assert_eq!(main.bytes(e), resumed.bytes(&resumed.entries[name]), "{name} differs after a two-device resume");
        }
    }

    /// A loss error on a replica's micro-batch fails the step on every device (no device is
    /// left waiting in a collective); a step that the devices cannot share evenly is refused
    /// before anything runs.
    #[test]
    fn a_replica_error_fails_the_step_and_uneven_shares_are_refused() {
        let device = Device::flex();
        let cfg = tiny(32, 16, 1);
        let (model, rope) = (cfg.init(&device), Rope::new(&cfg));
        let calls = AtomicUsize::new(0);
        let inner = replica_loss(&rope);
        let failing = |m: &Llama, ids: &[usize]| {
            if calls.fetch_add(1, Ordering::Relaxed) >= 4 {
                return Err(TrainError::Config("bad row".into())); // in step 3
            }
            inner(m, ids)
        };
        let mut t = trainer(&model, None).with_replicas(&[Device::flex()]);
        let mut done = Vec::new();
        let err = t.run(failing, |r| Ok(done.push(r.step)), || false).unwrap_err();
        assert!(err.to_string().contains("bad row"), "{err}");
        assert_eq!(done, [1, 2]);

        // 4 / 2 = 2 micro-batches a step over 3 devices.
        let mut t = trainer(&model, None).with_replicas(&[Device::flex(), Device::flex()]);
        let err = t.run(replica_loss(&rope), |_| Ok(()), || false).unwrap_err();
        assert!(matches!(&err, TrainError::Config(m) if m.contains("multiple of 3")), "{err}");
    }

    /// Two ranks of a process group (threads here; `tests/data_parallel.rs` runs processes):
    /// one micro-batch each per step gives the single device's weights bit for bit, two each
    /// equal up to summation order; the loss every rank reports is the group's; only rank 0
    /// writes checkpoints.
    #[test]
    fn peer_processes_train_like_one_device() {
        let device = Device::flex();
        let cfg = tiny(32, 16, 2);
        let (model, rope) = (cfg.init(&device), Rope::new(&cfg));
        for (micro, exact) in [(2, true), (1, false)] {
            let tmp = tempfile::tempdir().unwrap();
            let run_one = || {
                let mut t = Trainer::new(model.clone(), TrainConfig { micro_batch: micro, ..config(None) }, 8, DType::F32, &device).unwrap();
                let mut losses = Vec::new();
                t.run(lm_loss(&rope, &device), |r| Ok(losses.push(r.loss)), || false).unwrap();
                (weights_of(&t.into_model()), losses)
            };
            let (one, l1) = run_one();
            let ranks: Vec<_> = (0..2)
                .map(|rank| {
                    let (model, cfg, dir) = (model.clone(), cfg.clone(), tmp.path().to_path_buf());
                    std::thread::spawn(move || {
                        let (device, rope) = (Device::flex(), Rope::new(&cfg));
                        let peers = Peers::join(&dir, rank, 2, std::time::Duration::from_secs(20)).unwrap();
                        let ck = dir.join(format!("ck{rank}"));
                        let config = TrainConfig { micro_batch: micro, ..config(Some(ck.clone())) };
                        let mut t = Trainer::new(model, config, 8, DType::F32, &device).unwrap().with_peers(peers);
                        let mut losses = Vec::new();
                        t.run(lm_loss(&rope, &device), |r| Ok(losses.push(r.loss)), || false).unwrap();
                        (weights_of(&t.into_model()), losses, ck.exists())
                    })
                })
                .collect();
            let ranks: Vec<_> = ranks.into_iter().map(|h| h.join().unwrap()).collect();
            assert!(ranks[0].2 && !ranks[1].2, "rank 0 alone checkpoints");
            for (w, l, _) in &ranks {
                same_training((&one, &l1), (w, l), exact, "across processes");
            }
        }
    }

    /// Two trainings agree: losses within 1e-6 relative, f32 weights bit for bit (`exact`) or
    /// within 1e-4 (summation order apart: six AdamW steps at lr 1e-2 turn a rounding-level
    /// difference in a small gradient into a larger one in its normalized update; 1e-5 failed
    /// once in session 14 at 1.5e-5 with the whole suite running beside it, and passed alone).
    fn same_training(one: (&Weights, &[f64]), two: (&Weights, &[f64]), exact: bool, what: &str) {
        let ((w1, l1), (w2, l2)) = (one, two);
        for (a, b) in l1.iter().zip(l2) {
            assert!((a - b).abs() <= 1e-6 * a.abs(), "losses {l1:?} vs {l2:?} ({what})");
        }
        let f32s = |v: &[u8]| v.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<f32>>();
        for (name, e) in &w1.entries {
            let (a, b) = (w1.bytes(e), w2.bytes(&w2.entries[name]));
            if exact {
                assert_eq!(a, b, "{name} differs {what}");
            } else {
                let diff = f32s(a).iter().zip(f32s(b)).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                assert!(diff < 1e-4, "{name} {what}: {diff:e}");
            }
        }
    }

    /// [`lm_loss`] with its inputs on the device of the model it is given (a replica's).
    fn replica_loss(rope: &Rope) -> impl Fn(&Llama, &[usize]) -> TrainResult<Loss> + Sync + '_ {
        move |model, ids| {
            lm_loss(rope, &device_of(model))(model, ids)
        }
    }
}

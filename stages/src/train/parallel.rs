//! Data parallelism over the devices of one host. The main device runs on the trainer's thread;
//! every further device has a worker thread of its own for the whole run, holding a replica of
//! the model and of the optimizer. A thread per device matters twice: burn queues a device's
//! work from the thread that issues it, so one thread for all devices would serialize the host
//! side of every forward and backward (the GPU would wait on it), and cubecl gives each thread
//! its own stream and memory pool, so a thread that lived one step would leave its pool behind.
//!
//! A step is three exchanges between the trainer and its workers:
//! 1. `Compute`: each device runs its micro-batches and keeps its gradient and loss sums. Errors
//!    of the loss function are reported before any device starts a collective, so no device is
//!    left waiting in one for a peer that gave up.
//! 2. `Reduce`: the sums become the sums over all devices on every device, with burn's
//!    all-reduce (NCCL on CUDA, [`Reduce::Collective`]), or on hosts without one (the CPU) by
//!    adding them up on the main device, which sends the result back ([`Reduce::Host`]).
//! 3. `Update`: with the clipping coefficient and learning rate the main device worked out
//!    from its (identical) sums, every device applies the same AdamW update to its replica. The
//!    optimizer states never diverge, so nothing is broadcast and only the main device writes
//!    checkpoints.

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::{Scope, ScopedJoinHandle};

use burn::module::Module;
use burn::tensor::distributed::{all_reduce, ReduceOperation};
use burn::tensor::{DType, Device, Tensor};

use super::adamw::AdamW;
use super::base::{TrainError, TrainResult};
use super::devices::device_of;
use super::trainer::{collect_grads, Loss};

/// Flat f32 gradients by parameter name.
pub type Grads = BTreeMap<String, Tensor<1>>;

/// The model and its optimizer on one device.
pub struct Replica<M> {
    pub model: M,
    pub opt: AdamW,
}

/// One optimizer step of `model` with `grads`, the step's sums over all devices (the same on
/// each), clipped by `coef` when it is below 1.
pub fn update<M: Module>(model: M, opt: &mut AdamW, mut grads: Grads, coef: f64, lr: f64) -> M {
    if coef < 1.0 {
        grads.values_mut().for_each(|g| *g = g.clone() * coef);
    }
    opt.update(model, &mut grads, lr)
}

/// What one device computed for its micro-batches of a step, on that device.
#[derive(Default)]
pub struct Partial {
    pub grads: Grads,
    /// `loss` first, then the loss parts, each weighted by its micro-batch's share of the batch.
    pub sums: Vec<(&'static str, Tensor<1>)>,
    pub tokens: usize,
}

/// Runs `micros` (this device's micro-batches of a step of `batch` examples) through `model`.
pub fn compute<M: Module, F>(model: &M, loss_fn: &F, micros: &[Vec<usize>], batch: usize) -> TrainResult<Partial>
where
    F: Fn(&M, &[usize]) -> TrainResult<Loss>,
{
    let mut p = Partial::default();
    for micro in micros {
        let weight = micro.len() as f64 / batch as f64;
        let out = loss_fn(model, micro)?;
        p.tokens += out.tokens;
        // Loss and its parts stay on the device until the step's one host read: reading them
        // per micro-batch would stall the GPU queue between forward and backward.
        let detached = |t: &Tensor<1>| t.clone().inner().cast(DType::F32) * weight;
        for (name, t) in std::iter::once(("loss", &out.total)).chain(out.parts.iter().map(|(n, t)| (*n, t))) {
            match p.sums.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => *v = v.clone() + detached(t),
                None => p.sums.push((name, detached(t))),
            }
        }
        let mut g = (out.total * weight).backward();
        collect_grads(model, &mut g, &mut p.grads);
    }
    Ok(p)
}

/// How the devices' sums become one sum on every device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// burn's all-reduce (cubecl's NCCL on CUDA), each device on its own thread.
    Collective,
    /// Copied to the main device, added there, and copied back (the CPU backend has no
    /// collectives; also a fallback for a machine without NCCL: `DISTILL_ALLREDUCE=host`).
    Host,
}

impl Reduce {
    /// The way for `devices`: on the CPU the host; on GPUs what `DISTILL_ALLREDUCE` says.
    pub fn for_devices(devices: &[Device]) -> Result<Self, TrainError> {
        let gpus = devices.len() > 1 && devices.iter().all(|d| *d != Device::flex());
        choose(std::env::var("DISTILL_ALLREDUCE").ok().as_deref(), gpus, nccl_present).map_err(TrainError::Config)
    }
}

/// Several GPUs need `setting` named: on two H200s (docs/multi-gpu.md) the collective path hung
/// in some runs and the host path ran out of memory at the pipeline's micro-batch, so neither
/// is a default a stage should fall into unasked. One device, or the CPU, needs nothing.
fn choose(setting: Option<&str>, gpus: bool, nccl: fn() -> bool) -> Result<Reduce, String> {
    match setting {
        _ if !gpus => Ok(Reduce::Host),
        Some("nccl") if nccl() => Ok(Reduce::Collective),
        Some("nccl") => Err(NO_NCCL.into()),
        Some("host") => Ok(Reduce::Host),
        Some(other) => Err(format!("DISTILL_ALLREDUCE=`{other}`: use `nccl` or `host`")),
        None => Err(UNSET.into()),
    }
}

const NO_NCCL: &str = "DISTILL_ALLREDUCE=nccl, but NCCL did not load (libnccl.so, or libnccl.so.2 linked under that name, on LD_LIBRARY_PATH)";
const UNSET: &str = "data-parallel training on several GPUs is experimental (docs/multi-gpu.md says what hung on two H200s): \
set DISTILL_ALLREDUCE=nccl (burn's all-reduce) or DISTILL_ALLREDUCE=host (sums through the main GPU) to run it, or train on one GPU (resources.gpus = 1)";

#[cfg(feature = "cuda")]
fn nccl_present() -> bool {
    // SAFETY: only tries to load the library (cudarc's own probe, the one cubecl-cuda asks).
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

#[cfg(not(feature = "cuda"))]
fn nccl_present() -> bool {
    false
}

/// Replaces `p`'s sums with their sums over `devices`; every device calls this on its own
/// thread at the same point of the step. Everything travels as one flat f32 buffer (the loss
/// sums, then the gradients in name order): one collective rather than hundreds, and a fresh
/// contiguous buffer of the same length on every device. Each device waits here for its half,
/// before (the step's work done) and after, so no device's thread is waiting elsewhere while
/// its peers' collective needs it.
///
/// What two H200s showed (docs/multi-gpu.md): 333 fresh tensors all-reduce exactly from two
/// threads (`distill bench allreduce`), but in training the per-gradient all-reduces never
/// completed; one flat buffer got through the first step and hung in the second; with the
/// sums brought back through host memory (below) three steps completed and the process hung
/// at its exit. Hence experimental, opt-in ([`Reduce::for_devices`]).
pub fn all_reduce_in_place(p: &mut Partial, devices: &[Device]) -> Result<(), String> {
    let here = p.sums.first().map(|(_, t)| t.device()).expect("the loss sum at least");
    here.sync().map_err(|e| format!("{e:?}"))?;
    let names: Vec<String> = p.grads.keys().cloned().collect();
    let mut parts: Vec<Tensor<1>> = p.sums.iter().map(|(_, t)| t.clone().reshape([1])).collect();
    let mut lengths: Vec<usize> = vec![1; parts.len()];
    for name in &names {
        let g = p.grads.remove(name).expect("a name just listed");
        lengths.push(g.dims()[0]);
        parts.push(g);
    }
    let flat = Tensor::cat(parts, 0);
    let summed = all_reduce(flat, ReduceOperation::Sum, devices.to_vec()).resolve();
    // Through host memory: the one variant tried with which later steps completed.
    let summed = Tensor::from_data(summed.into_data(), &here);
    let mut at = 0;
    let mut pieces = lengths.into_iter().map(|len| {
        at += len;
        summed.clone().narrow(0, at - len, len)
    });
    for (_, t) in p.sums.iter_mut() {
        *t = pieces.next().expect("one piece per loss sum");
    }
    p.grads = names.into_iter().zip(pieces).collect();
    here.sync().map_err(|e| format!("{e:?}"))
}

/// Adds `other` (another device's partial) into `into` on `into`'s device.
pub fn add_on_host_path(into: &mut Partial, other: Partial, main: &Device) {
    into.tokens += other.tokens;
    for (name, t) in other.sums {
        let t = t.to_device(main);
        match into.sums.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = v.clone() + t,
            None => into.sums.push((name, t)),
        }
    }
    for (name, g) in other.grads {
        let g = g.to_device(main);
        let sum = match into.grads.remove(&name) {
            Some(prev) => prev + g,
            None => g,
        };
        into.grads.insert(name, sum);
    }
}

enum ToWorker {
    Compute(Vec<Vec<usize>>, usize),
    Reduce,
    /// The clipping coefficient, the learning rate and, on the host path, the summed gradients.
    Update(f64, f64, Option<Grads>),
}

enum FromWorker {
    Computed(TrainResult<usize>),
    /// On the host path, the partial to add up; after a collective, nothing (or the device's
    /// error).
    Reduced(Result<Option<Partial>, String>),
}

/// A replica's thread and the channels to it.
pub struct Worker<'scope, M> {
    to: Sender<ToWorker>,
    from: Receiver<FromWorker>,
    handle: ScopedJoinHandle<'scope, Replica<M>>,
}

impl<'scope, M: Module + Send + 'scope> Worker<'scope, M> {
    /// Starts `replica`'s thread; `devices` are all the devices of the run (the collective's group).
    pub fn spawn<'env, F>(scope: &'scope Scope<'scope, 'env>, mut replica: Replica<M>, loss_fn: &'scope F, reduce: Reduce, devices: Vec<Device>) -> Self
    where
        F: Fn(&M, &[usize]) -> TrainResult<Loss> + Sync,
    {
        let (to, inbox) = channel::<ToWorker>();
        let (outbox, from) = channel::<FromWorker>();
        let handle = scope.spawn(move || {
            let mut partial = None;
            // A closed channel (the run ended, or failed on another device) ends the thread.
            let here = device_of(&replica.model);
            while let Ok(message) = inbox.recv() {
                let reply = match message {
                    ToWorker::Compute(micros, batch) => {
                        tracing::debug!(?here, micro_batches = micros.len(), "replica computes");
                        let result = compute(&replica.model, loss_fn, &micros, batch);
                        tracing::debug!(?here, ok = result.is_ok(), "replica computed");
                        FromWorker::Computed(result.map(|p| {
                            let tokens = p.tokens;
                            partial = Some(p);
                            tokens
                        }))
                    }
                    ToWorker::Reduce => {
                        let mut p = partial.take().unwrap_or_default();
                        match reduce {
                            Reduce::Collective => {
                                tracing::debug!(?here, tensors = p.grads.len() + 1, "replica all-reduces");
                                let done = all_reduce_in_place(&mut p, &devices);
                                tracing::debug!(?here, ok = done.is_ok(), "replica all-reduced");
                                partial = Some(p);
                                FromWorker::Reduced(done.map(|()| None))
                            }
                            Reduce::Host => FromWorker::Reduced(Ok(Some(p))),
                        }
                    }
                    ToWorker::Update(coef, lr, grads) => {
                        tracing::debug!(?here, "replica updates");
                        let grads = match grads {
                            Some(g) => g.into_iter().map(|(n, t)| (n, t.to_device(&here))).collect(),
                            None => partial.take().map(|p| p.grads).unwrap_or_default(),
                        };
                        replica.model = update(replica.model.clone(), &mut replica.opt, grads, coef, lr);
                        continue;
                    }
                };
                if outbox.send(reply).is_err() {
                    break;
                }
            }
            replica
        });
        Self { to, from, handle }
    }

    pub fn compute(&self, micros: Vec<Vec<usize>>, batch: usize) {
        let _ = self.to.send(ToWorker::Compute(micros, batch));
    }

    /// This replica's token count, or its loss function's error.
    pub fn computed(&self) -> TrainResult<usize> {
        match self.from.recv() {
            Ok(FromWorker::Computed(r)) => r,
            _ => Err(self.gone()),
        }
    }

    pub fn reduce(&self) {
        let _ = self.to.send(ToWorker::Reduce);
    }

    /// On the host path, this device's partial; `step` names a device error.
    pub fn reduced(&self, step: u64) -> TrainResult<Option<Partial>> {
        match self.from.recv() {
            Ok(FromWorker::Reduced(p)) => p.map_err(|message| TrainError::Device { step, message }),
            _ => Err(self.gone()),
        }
    }

    pub fn update(&self, coef: f64, lr: f64, grads: Option<Grads>) {
        let _ = self.to.send(ToWorker::Update(coef, lr, grads));
    }

    fn gone(&self) -> TrainError {
        TrainError::Config("a data-parallel replica's thread stopped answering (it panicked; see above)".into())
    }

    /// Ends the thread and takes its replica back (a panic in it is re-raised here).
    pub fn finish(self) -> Replica<M> {
        drop(self.to);
        match self.handle.join() {
            Ok(replica) => replica,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_gpus_run_only_the_way_asked_for_and_the_cpu_needs_nothing() {
        let (yes, no): (fn() -> bool, fn() -> bool) = (|| true, || false);
        assert_eq!(choose(None, false, no), Ok(Reduce::Host), "one device or the CPU");
        assert_eq!(choose(Some("nccl"), false, no), Ok(Reduce::Host));
        assert_eq!(choose(Some("nccl"), true, yes), Ok(Reduce::Collective));
        assert_eq!(choose(Some("host"), true, yes), Ok(Reduce::Host));
        assert!(choose(Some("nccl"), true, no).unwrap_err().contains("libnccl.so"));
        assert!(choose(None, true, yes).unwrap_err().contains("DISTILL_ALLREDUCE=nccl"));
        assert!(choose(Some("ring"), true, yes).unwrap_err().contains("`ring`"));
    }
}

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
    /// `DISTILL_ALLREDUCE` (`nccl` or `host`) when set; else NCCL on GPUs where the library
    /// loads, and the host otherwise (with a warning: it is slower, not wrong).
    pub fn for_devices(devices: &[Device]) -> Result<Self, TrainError> {
        let gpus = devices.len() > 1 && devices.iter().all(|d| *d != Device::flex());
        match std::env::var("DISTILL_ALLREDUCE").ok().as_deref() {
            Some("nccl") if gpus && !nccl_present() => Err(TrainError::Config(NO_NCCL.into())),
            Some("nccl") if gpus => Ok(Self::Collective),
            Some("nccl" | "host") => Ok(Self::Host),
            Some(other) => Err(TrainError::Config(format!("DISTILL_ALLREDUCE=`{other}`: use `nccl` or `host`"))),
            None if gpus && nccl_present() => Ok(Self::Collective),
            None => {
                if gpus {
                    tracing::warn!("{NO_NCCL}; summing gradients through the host instead");
                }
                Ok(Self::Host)
            }
        }
    }
}

const NO_NCCL: &str = "NCCL did not load (libnccl.so, or libnccl.so.2 under that name, on LD_LIBRARY_PATH)";

#[cfg(feature = "cuda")]
fn nccl_present() -> bool {
    // SAFETY: only tries to load the library (cudarc's own probe, the one cubecl-cuda asks).
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

#[cfg(not(feature = "cuda"))]
fn nccl_present() -> bool {
    false
}

/// Replaces `p`'s sums with their sums over `devices` through one all-reduce per tensor; every
/// device calls this on its own thread with the same names in the same order (NCCL requires it).
pub fn all_reduce_in_place(p: &mut Partial, devices: &[Device]) {
    let devices = devices.to_vec();
    // The loss sums travel as one tensor: a collective per scalar would cost a launch each.
    let cat = Tensor::cat(p.sums.iter().map(|(_, t)| t.clone().reshape([1])).collect(), 0);
    let mut pending = vec![all_reduce(cat, ReduceOperation::Sum, devices.clone())];
    let names: Vec<String> = p.grads.keys().cloned().collect();
    for name in &names {
        let g = p.grads.remove(name).expect("a name just listed");
        pending.push(all_reduce(g, ReduceOperation::Sum, devices.clone()));
    }
    // The collectives run in order on one stream: syncing on the last one covers the others.
    let last = pending.pop().expect("the loss sums at least").resolve();
    // SAFETY: `resolve` above made this thread's stream wait for every collective issued before.
    let mut done: Vec<Tensor<1>> = pending.into_iter().map(|c| unsafe { c.assume_resolved() }).collect();
    done.push(last);
    let mut done = done.into_iter();
    let sums = done.next().expect("the loss sums");
    for (k, (_, t)) in p.sums.iter_mut().enumerate() {
        *t = sums.clone().slice([k..k + 1]);
    }
    p.grads = names.into_iter().zip(done).collect();
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
    /// On the host path, the partial to add up; after a collective, nothing.
    Reduced(Option<Partial>),
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
            while let Ok(message) = inbox.recv() {
                let reply = match message {
                    ToWorker::Compute(micros, batch) => {
                        let result = compute(&replica.model, loss_fn, &micros, batch);
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
                                all_reduce_in_place(&mut p, &devices);
                                partial = Some(p);
                                FromWorker::Reduced(None)
                            }
                            Reduce::Host => FromWorker::Reduced(Some(p)),
                        }
                    }
                    ToWorker::Update(coef, lr, grads) => {
                        let here = device_of(&replica.model);
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

    pub fn reduced(&self) -> TrainResult<Option<Partial>> {
        match self.from.recv() {
            Ok(FromWorker::Reduced(p)) => Ok(p),
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

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
//!    all-reduce (NCCL on CUDA; [`Reduce::Collective`], [`Reduce::CollectiveFromMain`]), or
//!    through host memory, added up on the main device and handed back ([`Reduce::Host`], the
//!    CPU's way: its backend has no collectives).
//! 3. `Update`: with the clipping coefficient and learning rate the main device worked out
//!    from its (identical) sums, every device applies the same AdamW update to its replica. The
//!    optimizer states never diverge, so nothing is broadcast and only the main device writes
//!    checkpoints.
//!
//! The other way to spread training over devices, one process each, is [`super::peers`].

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::{Scope, ScopedJoinHandle};

use burn::module::Module;
use burn::tensor::distributed::CollectiveTensor;
use burn::tensor::{DType, Device, Tensor, TensorData};

use super::adamw::AdamW;
use super::base::{TrainError, TrainResult};
use super::devices::{device_of, moved_to};
use super::trainer::{collect_grads, Loss};

mod reduce;

pub use reduce::{add_on_host, all_reduce_in_place, flatten, issue_all, resolve_in_place, sync, unflatten, Layout, Reduce};

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

/// A step's reduction, run by the main thread once every device has computed: afterwards each
/// device's [`Partial`] (the main device's `p`, the workers' their own) holds the sums over all
/// devices. Returns the host path's summed buffer, which the workers' updates take.
pub fn reduce_across<M: Module>(p: &mut Partial, workers: &[Worker<'_, M>], reduce: Reduce, devices: &[Device], step: u64) -> TrainResult<Option<TensorData>> {
    let n = 1 + workers.len();
    workers.iter().for_each(Worker::reduce);
    let shares = || -> TrainResult<Vec<Share>> { workers.iter().map(|w| w.reduced(step)).collect() };
    let device_err = |message| TrainError::Device { step, message };
    match reduce {
        Reduce::Collective if n > 1 => {
            let done = all_reduce_in_place(p, devices);
            shares()?;
            done.map_err(device_err)?;
            Ok(None)
        }
        Reduce::CollectiveFromMain if n > 1 => {
            sync(&devices[0]).map_err(device_err)?;
            let (mine, layout) = flatten(p);
            let mut flats = vec![mine];
            for share in shares()? {
                match share {
                    Share::Flat(f) => flats.push(f),
                    _ => unreachable!("a replica of this path shares its flat buffer"),
                }
            }
            let mut reduced = issue_all(flats, devices).into_iter();
            let own = reduced.next().expect("the main device's");
            workers.iter().zip(reduced).for_each(|(w, c)| w.resolve(c));
            let done = resolve_in_place(p, layout, own);
            for w in workers {
                w.resolved(step)?;
            }
            done.map_err(device_err)?;
            Ok(None)
        }
        _ if n > 1 => {
            let (mine, layout) = flatten(p);
            let others = shares()?.into_iter().map(|share| match share {
                Share::Host(data) => data,
                _ => unreachable!("a replica of the host path shares host data"),
            });
            let (summed, data) = add_on_host(mine, others.collect());
            unflatten(p, layout, summed);
            Ok(Some(data))
        }
        _ => Ok(None),
    }
}

enum ToWorker {
    Compute(Vec<Vec<usize>>, usize),
    Reduce,
    /// [`Reduce::CollectiveFromMain`]: this device's all-reduce, issued by the main thread.
    Resolve(CollectiveTensor<1>),
    /// The clipping coefficient, the learning rate and, on the host path, the summed flat buffer.
    Update(f64, f64, Option<TensorData>),
}

/// A replica as a worker starts: made already (a later run), or to be copied from the main
/// model and optimizer onto the device, by the worker's own thread so that the replica's
/// memory comes from the stream the worker computes on.
pub enum ReplicaInit<M> {
    Ready(Replica<M>),
    CopyOf(M, AdamW, Device),
}

/// What a device hands over for the reduction.
pub enum Share {
    /// Nothing: it took part in the collective itself.
    Done,
    /// Its flat buffer in host memory, for the host path to add up.
    Host(TensorData),
    /// Its flat buffer, for the main thread to issue the collective over.
    Flat(Tensor<1>),
}

enum FromWorker {
    Computed(TrainResult<usize>),
    Reduced(Result<Share, String>),
    Resolved(Result<(), String>),
}

/// A replica's thread and the channels to it.
pub struct Worker<'scope, M> {
    to: Sender<ToWorker>,
    from: Receiver<FromWorker>,
    handle: ScopedJoinHandle<'scope, Replica<M>>,
}

impl<'scope, M: Module + Send + 'scope> Worker<'scope, M> {
    /// Starts `replica`'s thread; `devices` are all the devices of the run (the collective's group).
    pub fn spawn<'env, F>(scope: &'scope Scope<'scope, 'env>, init: ReplicaInit<M>, loss_fn: &'scope F, reduce: Reduce, devices: Vec<Device>) -> Self
    where
        F: Fn(&M, &[usize]) -> TrainResult<Loss> + Sync,
    {
        let (to, inbox) = channel::<ToWorker>();
        let (outbox, from) = channel::<FromWorker>();
        let handle = scope.spawn(move || {
            let mut replica = match init {
                ReplicaInit::Ready(r) => r,
                ReplicaInit::CopyOf(model, opt, d) => Replica { model: moved_to(model, &d), opt: opt.to_device(&d) },
            };
            let mut partial = None;
            let mut layout: Option<Layout> = None;
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
                        tracing::debug!(?here, ?reduce, tensors = p.grads.len() + 1, "replica reduces");
                        let share = match reduce {
                            Reduce::Collective => all_reduce_in_place(&mut p, &devices).map(|()| Share::Done),
                            Reduce::CollectiveFromMain => sync(&here).map(|()| {
                                let (flat, l) = flatten(&mut p);
                                layout = Some(l);
                                Share::Flat(flat)
                            }),
                            Reduce::Host => {
                                let (flat, l) = flatten(&mut p);
                                layout = Some(l);
                                Ok(Share::Host(flat.into_data()))
                            }
                        };
                        partial = Some(p);
                        FromWorker::Reduced(share)
                    }
                    ToWorker::Resolve(reduced) => {
                        let result = match (partial.as_mut(), layout.take()) {
                            (Some(p), Some(l)) => resolve_in_place(p, l, reduced),
                            _ => Err("a resolve without a reduce before it".into()),
                        };
                        tracing::debug!(?here, ok = result.is_ok(), "replica resolved");
                        FromWorker::Resolved(result)
                    }
                    ToWorker::Update(coef, lr, summed) => {
                        tracing::debug!(?here, "replica updates");
                        if let (Some(summed), Some(p), Some(l)) = (summed, partial.as_mut(), layout.take()) {
                            unflatten(p, l, Tensor::from_data(summed, &here));
                        }
                        let grads = partial.take().map(|p| p.grads).unwrap_or_default();
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

    /// What this device hands over for the reduction; `step` names a device error.
    pub fn reduced(&self, step: u64) -> TrainResult<Share> {
        match self.from.recv() {
            Ok(FromWorker::Reduced(s)) => s.map_err(|message| TrainError::Device { step, message }),
            _ => Err(self.gone()),
        }
    }

    pub fn resolve(&self, reduced: CollectiveTensor<1>) {
        let _ = self.to.send(ToWorker::Resolve(reduced));
    }

    pub fn resolved(&self, step: u64) -> TrainResult<()> {
        match self.from.recv() {
            Ok(FromWorker::Resolved(r)) => r.map_err(|message| TrainError::Device { step, message }),
            _ => Err(self.gone()),
        }
    }

    pub fn update(&self, coef: f64, lr: f64, summed: Option<TensorData>) {
        let _ = self.to.send(ToWorker::Update(coef, lr, summed));
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


//! How the devices' gradient and loss sums become the sums over all devices on every device.
//!
//! What two H200s showed (docs/multi-gpu.md): 333 fresh tensors all-reduce exactly from two
//! threads (`distill bench allreduce`), but in training the per-gradient all-reduces, each
//! device issuing its own, never completed; one flat buffer got through the first step and hung
//! in the second; with the sums brought back through host memory three steps completed and the
//! process hung at its exit. burn's own gradient sync issues every device's all-reduce from one
//! thread and has each device's thread wait for its result; [`Reduce::CollectiveFromMain`] does
//! that. All of it is opt-in on GPUs ([`Reduce::for_devices`]) until one runs through.

use burn::tensor::distributed::{all_reduce, CollectiveTensor, ReduceOperation};
use burn::tensor::{Device, Tensor, TensorData};

use super::Partial;
use crate::train::TrainError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// burn's all-reduce (cubecl's NCCL on CUDA), each device's issued by its own thread
    /// (`DISTILL_ALLREDUCE=nccl`).
    Collective,
    /// burn's all-reduce, every device's issued by the main thread as burn's gradient-sync
    /// server does, each device's thread then waiting for its own result
    /// (`DISTILL_ALLREDUCE=nccl-main`).
    CollectiveFromMain,
    /// Brought to the main device through host memory, added there, and sent back the same way
    /// (`DISTILL_ALLREDUCE=host`; the CPU backend has no collectives, so the CPU always takes it).
    Host,
}

impl Reduce {
    /// The way for `devices`: on the CPU the host; on GPUs what `DISTILL_ALLREDUCE` says.
    pub fn for_devices(devices: &[Device]) -> Result<Self, TrainError> {
        let gpus = devices.len() > 1 && devices.iter().all(|d| *d != Device::flex());
        choose(std::env::var("DISTILL_ALLREDUCE").ok().as_deref(), gpus, nccl_present).map_err(TrainError::Config)
    }
}

/// Threads on several GPUs need `setting` named: a stage's default is a process per GPU
/// (`kinds::ranks`), which scaled better on two H200s (1.84x against 1.45x). One device, or the
/// CPU, needs nothing.
fn choose(setting: Option<&str>, gpus: bool, nccl: fn() -> bool) -> Result<Reduce, String> {
    match setting {
        _ if !gpus => Ok(Reduce::Host),
        Some("nccl" | "nccl-main") if !nccl() => Err(NO_NCCL.into()),
        Some("nccl") => Ok(Reduce::Collective),
        Some("nccl-main") => Ok(Reduce::CollectiveFromMain),
        Some("host") => Ok(Reduce::Host),
        Some("procs") => Err("DISTILL_ALLREDUCE=procs trains with a process per GPU, which a stage starts itself (`bench train` with --processes, not --gpus)".into()),
        Some(other) => Err(format!("DISTILL_ALLREDUCE=`{other}`: use `procs`, `nccl`, `nccl-main` or `host`")),
        None => Err(UNSET.into()),
    }
}

const NO_NCCL: &str = "DISTILL_ALLREDUCE asks for NCCL, but it did not load (libnccl.so, or libnccl.so.2 linked under that name, on LD_LIBRARY_PATH)";
const UNSET: &str = "a thread per GPU needs its way named: DISTILL_ALLREDUCE=nccl, nccl-main (burn's all-reduce) or host (sums through host memory); \
a process per GPU (`bench train --processes N`, a stage's default) scales better (docs/multi-gpu.md)";

#[cfg(feature = "cuda")]
fn nccl_present() -> bool {
    // SAFETY: only tries to load the library (cudarc's own probe, the one cubecl-cuda asks).
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

#[cfg(not(feature = "cuda"))]
fn nccl_present() -> bool {
    false
}

/// Where a partial's values sit in its flat buffer: the loss sums, then the gradients in name
/// order, the same on every device.
pub struct Layout {
    names: Vec<String>,
    lengths: Vec<usize>,
}

/// Moves `p`'s sums into one fresh f32 buffer (one collective rather than hundreds, and the
/// same length on every device); [`unflatten`] puts the reduced values back.
pub fn flatten(p: &mut Partial) -> (Tensor<1>, Layout) {
    let names: Vec<String> = p.grads.keys().cloned().collect();
    let mut parts: Vec<Tensor<1>> = p.sums.iter().map(|(_, t)| t.clone().reshape([1])).collect();
    let mut lengths = vec![1; parts.len()];
    for name in &names {
        let g = p.grads.remove(name).expect("a name just listed");
        lengths.push(g.dims()[0]);
        parts.push(g);
    }
    (Tensor::cat(parts, 0), Layout { names, lengths })
}

/// Puts `summed` (a reduced flat buffer, on the device `p` computed on) back into `p` as its
/// loss sums and gradients.
pub fn unflatten(p: &mut Partial, layout: Layout, summed: Tensor<1>) {
    let mut at = 0;
    let mut pieces = layout.lengths.into_iter().map(|len| {
        at += len;
        summed.clone().narrow(0, at - len, len)
    });
    for (_, t) in p.sums.iter_mut() {
        *t = pieces.next().expect("one piece per loss sum");
    }
    p.grads = layout.names.into_iter().zip(pieces).collect();
}

/// [`Reduce::Collective`]: replaces `p`'s sums with their sums over `devices`; every device
/// calls this on its own thread at the same point of the step and waits here for its device,
/// before (the step's work done) and after.
pub fn all_reduce_in_place(p: &mut Partial, devices: &[Device]) -> Result<(), String> {
    let here = p.sums.first().map(|(_, t)| t.device()).expect("the loss sum at least");
    sync(&here)?;
    let (flat, layout) = flatten(p);
    let summed = all_reduce(flat, ReduceOperation::Sum, devices.to_vec()).resolve();
    unflatten(p, layout, through_host(summed));
    sync(&here)
}

/// [`Reduce::CollectiveFromMain`]: the main thread issues the all-reduce of every device's
/// flat buffer (`flats[d]` on `devices[d]`), in device order; each device's thread then
/// resolves its own ([`resolve_in_place`]).
pub fn issue_all(flats: Vec<Tensor<1>>, devices: &[Device]) -> Vec<CollectiveTensor<1>> {
    flats.into_iter().map(|flat| all_reduce(flat, ReduceOperation::Sum, devices.to_vec())).collect()
}

/// Waits, on this device's thread, for its all-reduce issued by [`issue_all`], and puts the
/// result into `p`.
pub fn resolve_in_place(p: &mut Partial, layout: Layout, reduced: CollectiveTensor<1>) -> Result<(), String> {
    let summed = reduced.resolve();
    let here = summed.device();
    unflatten(p, layout, through_host(summed));
    sync(&here)
}

/// A collective's result copied through host memory onto its own device: of the variants tried
/// on two H200s, the only one with which the steps after the first completed.
fn through_host(t: Tensor<1>) -> Tensor<1> {
    let here = t.device();
    Tensor::from_data(t.into_data(), &here)
}

pub fn sync(device: &Device) -> Result<(), String> {
    device.sync().map_err(|e| format!("{e:?}"))
}

/// [`Reduce::Host`], on the main thread: `mine` (the main device's flat buffer) plus the other
/// devices' (host copies their own threads made), on the main device, and as host data for the
/// other devices to take. Nothing crosses between GPUs on the device: burn's `to_device` there
/// is an NCCL send and receive, and a send of a buffer an out-of-memory left unwritten hangs its
/// peer rather than failing (two H200s), where a host read fails the step with the device's
/// error.
pub fn add_on_host(mine: Tensor<1>, others: Vec<TensorData>) -> (Tensor<1>, TensorData) {
    let here = mine.device();
    let sum = others.into_iter().fold(mine, |sum, other| sum + Tensor::from_data(other, &here));
    let data = sum.clone().into_data();
    (sum, data)
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
        assert_eq!(choose(Some("nccl-main"), true, yes), Ok(Reduce::CollectiveFromMain));
        assert_eq!(choose(Some("host"), true, yes), Ok(Reduce::Host));
        assert!(choose(Some("nccl-main"), true, no).unwrap_err().contains("libnccl.so"));
        assert!(choose(None, true, yes).unwrap_err().contains("--processes N"));
        assert!(choose(Some("procs"), true, yes).unwrap_err().contains("--processes"));
        assert!(choose(Some("ring"), true, yes).unwrap_err().contains("`ring`"));
    }

    /// What travels is one buffer, loss sums first; it comes back into the same places.
    #[test]
    fn a_partial_flattens_into_one_buffer_and_back() {
        let d = Device::flex();
        let t = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), &d);
        let grads = [("b".to_string(), t(vec![3.0, 4.0, 5.0])), ("a".to_string(), t(vec![2.0]))].into_iter().collect();
        let mut p = Partial { grads, sums: vec![("loss", t(vec![1.0])), ("loss/kl", t(vec![0.5]))], tokens: 7 };
        let (flat, layout) = flatten(&mut p);
        assert_eq!(flat.to_data().try_to_vec::<f32>().unwrap(), [1.0, 0.5, 2.0, 3.0, 4.0, 5.0]);
        assert!(p.grads.is_empty());
        unflatten(&mut p, layout, flat * 2.0);
        let v = |t: &Tensor<1>| t.to_data().try_to_vec::<f32>().unwrap();
        assert_eq!(v(&p.grads["a"]), [4.0]);
        assert_eq!(v(&p.grads["b"]), [6.0, 8.0, 10.0]);
        assert_eq!((v(&p.sums[0].1), v(&p.sums[1].1), p.sums[1].0), (vec![2.0], vec![1.0], "loss/kl"));
    }
}

//! Where a model is, for data-parallel training: each micro-batch runs on its model replica's
//! device, and frozen models (a teacher, a reference) are copied to each replica device.

use std::sync::OnceLock;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Bool, Device, Int, Tensor};

/// The plain device (autodiff stripped) a model's parameters are on.
pub fn device_of<M: Module>(model: &M) -> Device {
    model.devices().first().map(|d| d.clone().inner()).expect("a model has parameters")
}

/// A frozen model (a teacher, a reference) and its copies on data-parallel replicas' devices,
/// each made the first time a micro-batch asks for it there, on the thread that asks: the
/// replica's own, so its memory comes from that thread's stream (cubecl keeps a pool per
/// stream; a copy made by the main thread would sit in a second pool on that device, a
/// suspect, not yet confirmed, of the out-of-memory two H200s showed).
pub struct Copies<'a, M> {
    main: &'a M,
    main_device: Device,
    on: Vec<(Device, OnceLock<M>)>,
}

impl<'a, M: Module> Copies<'a, M> {
    /// `main` and, to be made on demand, its copies on `devices` (none: one device).
    pub fn new(main: &'a M, devices: &[Device]) -> Self {
        Self { main, main_device: device_of(main), on: devices.iter().map(|d| (d.clone(), OnceLock::new())).collect() }
    }

    /// The copy on `here` (`main` on its own device, and anywhere no copy was asked for).
    pub fn on(&self, here: &Device) -> &M {
        if *here == self.main_device {
            return self.main;
        }
        match self.on.iter().find(|(d, _)| d == here) {
            Some((d, copy)) => copy.get_or_init(|| moved_to(self.main.clone(), d)),
            None => self.main,
        }
    }
}

/// `model` on `device`, its values copied through host memory, trainable parameters still
/// trainable. Not burn's `to_device`: between two CUDA devices that is an NCCL send and
/// receive issued by the calling thread on both devices, and a send whose source was never
/// written (an out-of-memory) leaves the receiver waiting instead of failing (two H200s); a
/// host read fails with the device's error. A model is copied once per run, so the round trip
/// costs nothing that matters.
pub fn moved_to<M: Module>(model: M, device: &Device) -> M {
    model.map(&mut Mover { device })
}

/// `t` on `device` through host memory (see [`moved_to`]), on the autodiff device if it was.
pub fn tensor_moved_to<const D: usize>(t: Tensor<D>, device: &Device) -> Tensor<D> {
    let autodiff = t.is_autodiff();
    let moved = Tensor::from_data(t.into_data(), &device.clone().inner());
    if autodiff { moved.autodiff() } else { moved }
}

struct Mover<'a> {
    device: &'a Device,
}

impl ModuleMapper for Mover<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, t, mapper) = param.consume();
        let grad = t.is_require_grad();
        let moved = tensor_moved_to(t.detach(), self.device);
        Param::from_mapped_value(id, if grad { moved.require_grad() } else { moved }, mapper)
    }

    fn map_int<const D: usize>(&mut self, param: Param<Tensor<D, Int>>) -> Param<Tensor<D, Int>> {
        let (id, t, mapper) = param.consume();
        Param::from_mapped_value(id, Tensor::from_data(t.into_data(), self.device), mapper)
    }

    fn map_bool<const D: usize>(&mut self, param: Param<Tensor<D, Bool>>) -> Param<Tensor<D, Bool>> {
        let (id, t, mapper) = param.consume();
        Param::from_mapped_value(id, Tensor::from_data(t.into_data(), self.device), mapper)
    }
}

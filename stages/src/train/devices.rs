//! Where a model is, for data-parallel training: each micro-batch runs on its model replica's
//! device, and frozen models (a teacher, a reference) are copied to each replica device.

use burn::module::Module;
use burn::tensor::Device;

/// The plain device (autodiff stripped) a model's parameters are on.
pub fn device_of<M: Module>(model: &M) -> Device {
    model.devices().first().map(|d| d.clone().inner()).expect("a model has parameters")
}

/// `model` copied to each of `devices`.
pub fn copies_on<M: Module + Clone>(model: &M, devices: &[Device]) -> Vec<M> {
    devices.iter().map(|d| model.clone().to_device(d)).collect()
}

/// The copy of a frozen model on `here`: the one of `copies` that is there, else `main`.
pub fn copy_on<'a, M: Module>(main: &'a M, copies: &'a [M], here: &Device) -> &'a M {
    copies.iter().find(|c| device_of(*c) == *here).unwrap_or(main)
}

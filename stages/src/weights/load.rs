//! Fills a module's parameters from `Weights` by name: the parameter path in the module
//! (`model.layers.0.mlp.up_proj.weight`) is the checkpoint key. Reports every key not consumed
//! and every parameter not filled.

use std::collections::BTreeSet;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Device, Tensor, TensorData};

use super::store::Weights;
use crate::error::{Error, Result};

struct Loader<'a> {
    weights: &'a Weights,
    path: Vec<String>,
    containers: Vec<String>,
    used: BTreeSet<String>,
    errors: Vec<Error>,
    dtype: DType,
    device: Device,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = super::shapes::checkpoint_key(&self.path, &self.containers);
        // burn's Linear stores `[d_input, d_output]`; checkpoints store `[out, in]`.
        let transposed = self.containers.last().is_some_and(|c| c == "Struct:Linear") && name.ends_with("weight");
        let mut want: Vec<usize> = param.lazy_shape().to_vec();
        if transposed {
            want.reverse();
        }
        let data = match self.weights.data(&name) {
            Ok(d) => d,
            Err(e) => {
                self.errors.push(e);
                return param;
            }
        };
        if data.shape().as_slice() != want.as_slice() {
            let got = data.shape().to_vec();
            self.errors.push(Error::Shape { path: self.weights.path.clone(), tensor: name, got, want });
            return param;
        }
        self.used.insert(name);
        let dtype = data.dtype();
        let t = match transposed.then(|| row_major_transpose(&data)).flatten() {
            Some(data) => Tensor::<D>::from_data(data, (&self.device, dtype)).cast(self.dtype),
            None => {
                let t = Tensor::<D>::from_data(data, (&self.device, dtype)).cast(self.dtype);
                if transposed { t.transpose() } else { t }
            }
        };
        Param::initialized(param.id, t)
    }
}

/// A `[rows, cols]` weight as `[cols, rows]` data, transposed on the host once. A transposed
/// view on the device would be copied row-major again by every product that wants row-major
/// operands (the GPU's named matmul routines): for a frozen weight, at every forward (about 450
/// copies a step of the H200 distillation, ~4% of its kernel time). `None` for data whose
/// elements are not whole bytes of one plain type (quantized): those keep the device view.
fn row_major_transpose(data: &TensorData) -> Option<TensorData> {
    let dtype = data.dtype();
    if !matches!(dtype, DType::F64 | DType::F32 | DType::F16 | DType::BF16) {
        return None;
    }
    let [rows, cols] = data.shape().as_slice().try_into().ok()?;
    let e = dtype.size();
    let src = data.as_bytes();
    let mut out = vec![0u8; src.len()];
    for r in 0..rows {
        for (c, element) in src[r * cols * e..(r + 1) * cols * e].chunks_exact(e).enumerate() {
            out[(c * rows + r) * e..(c * rows + r + 1) * e].copy_from_slice(element);
        }
    }
    Some(TensorData::from_bytes_vec(out, [cols, rows], dtype))
}

/// Loads every float parameter of `module` from `weights`, cast to `dtype` on `device`.
/// Keys matching `ignored` (a list of suffixes) may be left unused; any other unused key or
/// any missing parameter is an error.
pub fn load_module<M: Module>(module: M, weights: &Weights, ignored: &[&str], dtype: DType, device: &Device) -> Result<M> {
    let mut loader = Loader {
        weights,
        path: Vec::new(),
        containers: Vec::new(),
        used: BTreeSet::new(),
        errors: Vec::new(),
        dtype,
        device: device.clone(),
    };
    let module = module.map(&mut loader);
    if let Some(e) = loader.errors.into_iter().next() {
        return Err(e);
    }
    let unused: Vec<String> = weights
        .entries
        .keys()
        .filter(|k| !loader.used.contains(*k) && !ignored.iter().any(|s| k.ends_with(s)))
        .cloned()
        .collect();
    if !unused.is_empty() {
        return Err(Error::UnusedTensors { path: weights.path.clone(), tensors: unused });
    }
    Ok(module)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_transpose_equals_the_devices_in_every_plain_dtype() {
        let device = Device::flex();
        let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let data = TensorData::new(values.clone(), [3, 4]).convert_dtype(dtype);
            let host = row_major_transpose(&data).expect("a plain dtype");
            assert_eq!(host.shape().as_slice(), &[4, 3]);
            let want = Tensor::<2>::from_data(data, (&device, dtype)).transpose().into_data();
            assert_eq!(host.convert::<f32>(), want.convert::<f32>(), "{dtype:?}");
        }
        assert!(row_major_transpose(&TensorData::new(values, [2, 2, 3])).is_none(), "2-D only");
    }
}

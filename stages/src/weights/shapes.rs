//! Parameter names and shapes of a module in checkpoint orientation, without initializing it.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

#[derive(Default)]
struct Shapes {
    path: Vec<String>,
    containers: Vec<String>,
    out: BTreeMap<String, Vec<usize>>,
}

impl ModuleVisitor for Shapes {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = checkpoint_key(&self.path, &self.containers);
        let mut shape = param.lazy_shape().to_vec();
        if self.containers.last().is_some_and(|c| c == "Struct:Linear") && name.ends_with("weight") {
            shape.reverse(); // burn's Linear is [in, out]; checkpoints are [out, in]
        }
        self.out.insert(name, shape);
    }
}

/// The checkpoint key of a parameter from its module path: field names joined by dots; enum
/// variants (`Mixer::Mamba2`) name no key segment, so a variant's fields sit under the field
/// that holds the enum (`model.layers.0.mamba.in_proj.weight`).
pub(crate) fn checkpoint_key(path: &[String], containers: &[String]) -> String {
    let parts: Vec<&str> = path
        .iter()
        .zip(containers)
        .filter(|(_, c)| !c.starts_with("Enum:"))
        .map(|(p, _)| p.as_str())
        .collect();
    parts.join(".")
}

/// `name -> shape` of every float parameter, as a checkpoint names and lays it out.
pub fn param_shapes<M: Module>(module: &M) -> BTreeMap<String, Vec<usize>> {
    let mut v = Shapes::default();
    module.visit(&mut v);
    v.out
}

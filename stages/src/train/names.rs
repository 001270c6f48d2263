//! Checkpoint names of a module's parameters (`model.layers.0.mamba.in_proj.weight`), the keys
//! of freezing patterns, optimizer state and checkpoints.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// The module path as a checkpoint key, tracked through `enter_module`/`exit_module`; enum
/// variants name no segment (as `weights::load` names keys).
#[derive(Default)]
pub(crate) struct PathTracker {
    path: Vec<String>,
    containers: Vec<String>,
}

impl PathTracker {
    pub fn enter(&mut self, name: &str, container: &str) {
        self.path.push(name.to_string());
        self.containers.push(container.to_string());
    }

    pub fn exit(&mut self) {
        self.path.pop();
        self.containers.pop();
    }

    pub fn key(&self) -> String {
        let parts: Vec<&str> = self
            .path
            .iter()
            .zip(&self.containers)
            .filter(|(_, c)| !c.starts_with("Enum:"))
            .map(|(p, _)| p.as_str())
            .collect();
        parts.join(".")
    }

    /// burn's `Linear` stores `[d_input, d_output]`; checkpoints store `[out, in]`.
    pub fn is_linear_weight(&self) -> bool {
        self.containers.last().is_some_and(|c| c == "Struct:Linear") && self.key().ends_with("weight")
    }
}

#[derive(Default)]
struct Names {
    at: PathTracker,
    out: Vec<(String, bool, usize)>,
}

impl ModuleVisitor for Names {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.at.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.out.push((self.at.key(), param.is_require_grad(), param.dims().iter().product()));
    }
}

/// `(name, trainable)` of every float parameter, in module order.
pub fn param_names<M: Module>(module: &M) -> Vec<(String, bool)> {
    param_sizes(module).into_iter().map(|(name, trainable, _)| (name, trainable)).collect()
}

/// `(name, trainable, elements)` of every float parameter, in module order.
pub fn param_sizes<M: Module>(module: &M) -> Vec<(String, bool, usize)> {
    let mut v = Names::default();
    module.visit(&mut v);
    v.out
}

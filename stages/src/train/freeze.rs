//! Freezing parameters by name: `non_mamba` (the layerwise step of METHOD.md section 2: only
//! the Mamba mixers train) or a list of substrings.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::names::PathTracker;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(untagged)]
pub enum Freeze {
    /// `"none"` or `"non_mamba"`.
    Preset(FreezePreset),
    /// Parameters whose name contains any of these substrings are frozen.
    Patterns(Vec<String>),
    #[default]
    #[serde(skip)]
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreezePreset {
    None,
    NonMamba,
}

impl Freeze {
    pub fn is_frozen(&self, name: &str) -> bool {
        match self {
            Freeze::Nothing | Freeze::Preset(FreezePreset::None) => false,
            // Mixer parameters sit under `model.layers.{i}.mamba.`.
            Freeze::Preset(FreezePreset::NonMamba) => !name.contains(".mamba."),
            Freeze::Patterns(p) => p.iter().any(|p| name.contains(p.as_str())),
        }
    }
}

/// The command line's spelling: `none`, `non_mamba`, or comma-separated name substrings.
impl std::str::FromStr for Freeze {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "none" => Freeze::Preset(FreezePreset::None),
            "non_mamba" => Freeze::Preset(FreezePreset::NonMamba),
            _ => Freeze::Patterns(s.split(',').map(str::to_string).collect()),
        })
    }
}

struct Freezer<'a> {
    at: PathTracker,
    freeze: &'a Freeze,
}

impl ModuleMapper for Freezer<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.at.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.freeze.is_frozen(&self.at.key()) { param.set_require_grad(false) } else { param }
    }
}

/// Stops gradients of the parameters `freeze` names; call after `Module::train`.
pub fn freeze<M: Module>(module: M, freeze: &Freeze) -> M {
    module.map(&mut Freezer { at: PathTracker::default(), freeze })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_mamba_trains_only_mixers_and_patterns_match_substrings() {
        let f: Freeze = serde_json::from_str("\"non_mamba\"").unwrap();
        assert!(!f.is_frozen("model.layers.0.mamba.in_proj.weight"));
        assert!(f.is_frozen("model.layers.0.mlp.up_proj.weight"));
        assert!(f.is_frozen("model.layers.1.self_attn.q_proj.weight"));
        assert!(f.is_frozen("lm_head.weight"));
        let f: Freeze = serde_json::from_str("[\"mlp\", \"embed\"]").unwrap();
        assert!(f.is_frozen("model.embed_tokens.weight") && !f.is_frozen("model.norm.weight"));
        let f: Freeze = serde_json::from_str("\"none\"").unwrap();
        assert!(!f.is_frozen("lm_head.weight"));
    }
}

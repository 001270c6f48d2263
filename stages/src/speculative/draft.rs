//! The paper's draft for speculative decoding: a small Transformer made of some of the teacher's
//! layers (`[0, last]` or `[0, 10, 20, 31]` for 32 layers) with its embeddings, final norm and
//! head, written as a plain Llama folder that shares the teacher's tokenizer.

use std::path::Path;

use crate::error::{Error, Result};
use crate::llama::HfLlamaConfig;
use crate::weights::{save_safetensors, Weights};

/// Files copied from the teacher's folder when present.
const COPIED: &[&str] = &["generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];

/// The default layers: the first and the last.
pub fn first_and_last(n_layers: usize) -> Vec<usize> {
    if n_layers <= 1 { vec![0] } else { vec![0, n_layers - 1] }
}

/// Keeps `layers` (sorted, distinct) of a Llama checkpoint, renumbered from 0; every other
/// tensor (embeddings, final norm, head) is kept as is.
pub fn keep_layers(teacher: &Weights, layers: &[usize]) -> Weights {
    let mut out = Weights::new(teacher.path.clone());
    for (name, entry) in &teacher.entries {
        let renamed = match layer_of(name) {
            None => Some(name.clone()),
            Some((i, rest)) => layers.iter().position(|&l| l == i).map(|new| format!("model.layers.{new}.{rest}")),
        };
        if let Some(renamed) = renamed {
            out.insert_bytes(renamed, entry.shape.clone(), entry.dtype, teacher.bytes(entry).to_vec());
        }
    }
    out
}

/// `model.layers.{i}.{rest}` -> `(i, rest)`.
fn layer_of(name: &str) -> Option<(usize, &str)> {
    let tail = name.strip_prefix("model.layers.")?;
    let (index, rest) = tail.split_once('.')?;
    Some((index.parse().ok()?, rest))
}

/// Writes the draft folder for `layers` of the Llama in `teacher_dir`; returns the layers kept.
/// Hybrid folders are refused (their `mamba_config.json` would need renumbering too).
pub fn write_draft_dir(teacher_dir: &Path, out: &Path, layers: Option<&[usize]>) -> Result<Vec<usize>> {
    if teacher_dir.join("mamba_config.json").exists() {
        return Err(Error::Config(format!("{}: the draft is built from a Transformer teacher, not a hybrid", teacher_dir.display())));
    }
    let config_path = teacher_dir.join("config.json");
    let mut hf = HfLlamaConfig::from_file(&config_path)?;
    let n = hf.num_hidden_layers;
    let layers = layers.map_or_else(|| first_and_last(n), <[usize]>::to_vec);
    if layers.is_empty() || layers.windows(2).any(|w| w[0] >= w[1]) || layers.iter().any(|&l| l >= n) {
        return Err(Error::Config(format!("draft layers {layers:?} must be increasing, distinct and below the teacher's {n}")));
    }
    let weights = keep_layers(&Weights::open_hf_dir(teacher_dir)?, &layers);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    hf.num_hidden_layers = layers.len();
    let path = out.join("config.json");
    let text = serde_json::to_string_pretty(&hf).map_err(|e| Error::Json { path: path.clone(), message: e.to_string() })?;
    std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))?;
    for name in COPIED {
        let src = teacher_dir.join(name);
        if src.exists() {
            std::fs::copy(&src, out.join(name)).map_err(|e| Error::io(out.join(name), e))?;
        }
    }
    save_safetensors(&weights, &out.join("model.safetensors"))?;
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::fixtures::{tiny_config, write_model_dir};
    use crate::runtime::Runtime;
    use crate::teacher::LoadedModel;
    use burn::tensor::Tensor;

    #[test]
    fn the_draft_keeps_the_first_and_last_layers_and_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let (teacher, draft) = (tmp.path().join("t"), tmp.path().join("d"));
        write_model_dir(&teacher, &tiny_config(16, 4));
        assert_eq!(write_draft_dir(&teacher, &draft, None).unwrap(), vec![0, 3]);
        let (t, d) = (LoadedModel::open(&teacher, Runtime::cpu()).unwrap(), LoadedModel::open(&draft, Runtime::cpu()).unwrap());
        assert_eq!(d.config.n_layers, 2);
        let same = |a: Tensor<2>, b: Tensor<2>| (a - b).abs().max().into_scalar::<f32>() == 0.0;
        let q = |m: &LoadedModel, i: usize| m.model.model.layers[i].self_attn.as_ref().unwrap().q_proj.weight.val();
        assert!(same(q(&d, 1), q(&t, 3)) && same(q(&d, 0), q(&t, 0)));
        assert!(same(d.model.model.embed_tokens.weight.val(), t.model.model.embed_tokens.weight.val()));
        assert!(write_draft_dir(&teacher, &tmp.path().join("bad"), Some(&[2, 1])).is_err());
    }
}

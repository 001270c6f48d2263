//! Writing weights as safetensors that transformers loads.

use std::path::Path;

use burn::tensor::DType;
use safetensors::tensor::TensorView;
use safetensors::Dtype as StDtype;

use super::store::Weights;
use crate::error::{Error, Result};

/// Writes every tensor of `w` into one safetensors file, with `{"format": "pt"}` metadata.
pub fn save_safetensors(w: &Weights, path: &Path) -> Result<()> {
    let mut views = Vec::with_capacity(w.entries.len());
    for (name, e) in &w.entries {
        let dtype = match e.dtype {
            DType::F32 => StDtype::F32,
            DType::F16 => StDtype::F16,
            DType::BF16 => StDtype::BF16,
            other => return Err(Error::tensor(path, name, format!("cannot save dtype {other:?}"))),
        };
        let view = TensorView::new(dtype, e.shape.clone(), w.bytes(e))
            .map_err(|err| Error::tensor(path, name, err.to_string()))?;
        views.push((name.clone(), view));
    }
    let meta = Some([("format".to_string(), "pt".to_string())].into_iter().collect());
    safetensors::serialize_to_file(views, meta, path)
        .map_err(|e| Error::Safetensors { path: path.into(), message: e.to_string() })
}

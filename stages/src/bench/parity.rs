//! Our logits against transformers' on the committed golden fixtures (`tests/golden/`, written
//! by `make_llama_golden.py`), in the runtime's dtype. In bf16 the reference is transformers'
//! f32 output; `stages/bench/parity_transformers.py` measures transformers' own bf16 error
//! against the same reference, so the two errors can be put side by side.

use std::path::Path;

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use safetensors::SafeTensors;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::llama::{KvCache, Llama, Rope};
use crate::runtime::Runtime;

/// One fixture: inputs (left-padded rows), transformers' f32 logits and greedy continuations.
pub struct Golden {
    pub ids: Vec<Vec<i64>>,
    pub mask: Vec<Vec<bool>>,
    /// `[batch, seq, vocab]`, flat.
    pub logits: Vec<f32>,
    pub greedy: Vec<Vec<i64>>,
}

impl Golden {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("golden.safetensors");
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let bad = |what: String| Error::Config(format!("{}: {what}", path.display()));
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let i64s = |k: &str| -> Result<Vec<Vec<i64>>> {
            let t = st.tensor(k).map_err(|e| bad(format!("{k}: {e}")))?;
            let flat: Vec<i64> = t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
            Ok(flat.chunks(t.shape()[1]).map(<[i64]>::to_vec).collect())
        };
        let logits = st.tensor("logits").map_err(|e| bad(format!("logits: {e}")))?;
        let logits = logits.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let mask = i64s("attention_mask")?.into_iter().map(|r| r.into_iter().map(|m| m == 1).collect()).collect();
        Ok(Self { ids: i64s("input_ids")?, mask, logits, greedy: i64s("greedy_ids")? })
    }

    pub fn ids_tensor(&self, device: &Device) -> Tensor<2, Int> {
        let flat: Vec<i64> = self.ids.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [self.ids.len(), self.ids[0].len()]), device)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ParityResult {
    pub bench: &'static str,
    pub fixture: String,
    pub dtype: &'static str,
    /// Largest `|ours - ref|` over the valid positions.
    pub max_abs: f32,
    /// Largest per-position `‖ours - ref‖ / ‖ref‖`.
    pub max_rel_l2: f32,
    /// Positions whose argmax differs where transformers' top-2 margin exceeds twice `max_abs`
    /// (a flip there is a bug, not rounding).
    pub clear_greedy_flips: usize,
    pub positions: usize,
}

/// The index of the largest value and its lead over the second largest.
fn top1_and_margin(row: &[f32]) -> (usize, f32) {
    let (mut best, mut first, mut second) = (0, f32::MIN, f32::MIN);
    for (i, &x) in row.iter().enumerate() {
        if x > first {
            (second, first, best) = (first, x, i);
        } else if x > second {
            second = x;
        }
    }
    (best, first - second)
}

/// Runs the fixture folder's checkpoint on its inputs and compares with its logits.
pub fn run(fixture: &Path, runtime: &Runtime) -> Result<ParityResult> {
    let (model, config) = Llama::from_hf_dir(fixture, runtime.dtype, &runtime.device)?;
    let g = Golden::read(fixture)?;
    let mut cache = KvCache::new(config.n_layers);
    let logits = model.forward(g.ids_tensor(&runtime.device), &g.mask, &Rope::new(&config), &mut cache);
    let ours: Vec<f32> = logits.cast(DType::F32).into_data().try_to_vec::<f32>().map_err(|e| Error::Config(format!("{e:?}")))?;
    let (s, v) = (g.ids[0].len(), config.vocab_size);
    let (mut max_abs, mut max_rel) = (0f32, 0f32);
    let mut rows = Vec::new();
    for (b, row) in g.mask.iter().enumerate() {
        for t in (0..s).filter(|&t| row[t]) {
            let at = (b * s + t) * v;
            let (o, r) = (&ours[at..at + v], &g.logits[at..at + v]);
            let abs = o.iter().zip(r).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            let diff2: f32 = o.iter().zip(r).map(|(x, y)| (x - y) * (x - y)).sum();
            let rel = (diff2 / r.iter().map(|y| y * y).sum::<f32>()).sqrt();
            // f32::max drops NaN; a NaN anywhere must show.
            max_abs = if abs.is_nan() || max_abs.is_nan() { f32::NAN } else { max_abs.max(abs) };
            max_rel = if rel.is_nan() || max_rel.is_nan() { f32::NAN } else { max_rel.max(rel) };
            rows.push((top1_and_margin(o).0, top1_and_margin(r)));
        }
    }
    let flips = rows.iter().filter(|(ours, (want, margin))| *margin > 2.0 * max_abs && ours != want).count();
    Ok(ParityResult {
        bench: "parity",
        fixture: fixture.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        dtype: runtime.dtype_name(),
        max_abs,
        max_rel_l2: max_rel,
        clear_greedy_flips: flips,
        positions: rows.len(),
    })
}

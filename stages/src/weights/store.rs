//! Named host tensors from any checkpoint format: memory-mapped safetensors (one file or
//! shards with an index) or owned buffers (dequantized GGUF).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, TensorData};
use memmap2::Mmap;
use safetensors::{Dtype as StDtype, SafeTensors};

use crate::error::{Error, Result};

#[derive(Debug)]
enum Bytes {
    /// A byte range of one of `Weights::maps`.
    Mapped { map: usize, start: usize, end: usize },
    Owned(Vec<u8>),
}

#[derive(Debug)]
pub struct Entry {
    pub shape: Vec<usize>,
    pub dtype: DType,
    bytes: Bytes,
}

/// A checkpoint's tensors by name, with the file they came from for error messages.
#[derive(Debug, Default)]
pub struct Weights {
    pub path: PathBuf,
    maps: Vec<Mmap>,
    pub entries: BTreeMap<String, Entry>,
}

impl Weights {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), ..Default::default() }
    }

    /// Adds an owned f32 tensor (dequantized or computed).
    pub fn insert_f32(&mut self, name: String, shape: Vec<usize>, values: Vec<f32>) {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.entries.insert(name, Entry { shape, dtype: DType::F32, bytes: Bytes::Owned(bytes) });
    }

    /// Adds an owned tensor from little-endian bytes of `dtype`.
    pub fn insert_bytes(&mut self, name: String, shape: Vec<usize>, dtype: DType, bytes: Vec<u8>) {
        self.entries.insert(name, Entry { shape, dtype, bytes: Bytes::Owned(bytes) });
    }

    pub fn bytes<'a>(&'a self, e: &'a Entry) -> &'a [u8] {
        match &e.bytes {
            Bytes::Mapped { map, start, end } => &self.maps[*map][*start..*end],
            Bytes::Owned(v) => v,
        }
    }

    /// The tensor as burn data in its stored dtype.
    pub fn data(&self, name: &str) -> Result<TensorData> {
        let e = self.entries.get(name).ok_or_else(|| Error::MissingTensor { path: self.path.clone(), tensor: name.into() })?;
        Ok(TensorData::from_bytes_vec(self.bytes(e).to_vec(), e.shape.clone(), e.dtype))
    }

    /// Opens a Hugging Face model folder's weights: `model.safetensors`, or the shards listed
    /// in `model.safetensors.index.json`.
    pub fn open_hf_dir(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::Json { path: index.clone(), message: e.to_string() })?;
            let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| Error::Json {
                path: index.clone(),
                message: "no `weight_map` object".into(),
            })?;
            let mut shards: Vec<String> = map.values().filter_map(|v| v.as_str().map(String::from)).collect();
            shards.sort();
            shards.dedup();
            shards.iter().map(|s| dir.join(s)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut w = Weights::new(dir);
        for f in files {
            w.add_safetensors(&f)?;
        }
        Ok(w)
    }

    pub fn add_safetensors(&mut self, path: &Path) -> Result<()> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only map; the checkpoint must not be modified while we hold it.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let err = |m: String| Error::Safetensors { path: path.into(), message: m };
        let st = SafeTensors::deserialize(&mmap).map_err(|e| err(e.to_string()))?;
        let base = mmap.as_ptr() as usize;
        let map = self.maps.len();
        for (name, view) in st.tensors() {
            let dtype = match view.dtype() {
                StDtype::F32 => DType::F32,
                StDtype::F16 => DType::F16,
                StDtype::BF16 => DType::BF16,
                other => return Err(Error::tensor(path, &name, format!("dtype {other:?} is not supported"))),
            };
            let start = view.data().as_ptr() as usize - base;
            let bytes = Bytes::Mapped { map, start, end: start + view.data().len() };
            self.entries.insert(name, Entry { shape: view.shape().to_vec(), dtype, bytes });
        }
        self.maps.push(mmap);
        Ok(())
    }
}

//! GGUF container parsing: header, metadata, tensor table. Every length read from the file is
//! checked against the bytes that remain before anything is allocated, so a hostile header
//! yields an error, not a huge allocation.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::quant::GgmlType;
use super::value::{Value, ValueType};
use crate::error::{Error, Result};

const MAGIC: u32 = 0x4655_4747; // "GGUF" little-endian
const DEFAULT_ALIGNMENT: u64 = 32;

/// One entry of the tensor table.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the innermost (contiguous) dimension.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte range in the file.
    pub start: usize,
    pub len: usize,
}

impl TensorInfo {
    /// The shape in row-major (PyTorch) order: GGUF dims reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
    pub fn numel(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
}

/// An opened GGUF file: the memory map, its metadata and its tensor table.
pub struct Gguf {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    mmap: Mmap,
}

/// A bounds-checked little-endian reader over the mapped bytes.
pub(crate) struct Cursor<'a> {
    pub bytes: &'a [u8],
    pub pos: usize,
    pub path: &'a Path,
}

impl<'a> Cursor<'a> {
    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.truncated(format!("{what} needs {n} bytes, {} remain", self.remaining())));
        };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    pub fn truncated(&self, what: String) -> Error {
        Error::Truncated { path: self.path.to_path_buf(), offset: self.pos as u64, what }
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1, "u8")?[0])
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, "u32")?.try_into().expect("4 bytes")))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, "u64")?.try_into().expect("8 bytes")))
    }
    /// A count that must fit in what remains, at `min_size` bytes per item.
    pub fn count(&mut self, min_size: usize, what: &str) -> Result<usize> {
        let n = self.u64()?;
        let fits = usize::try_from(n).ok().filter(|&n| n.saturating_mul(min_size) <= self.remaining());
        fits.ok_or_else(|| self.truncated(format!("{what} claims {n} items, the file is too short")))
    }
    pub fn string(&mut self) -> Result<String> {
        let n = self.count(1, "string")?;
        let b = self.take(n, "string")?;
        String::from_utf8(b.to_vec()).map_err(|_| self.truncated("string is not UTF-8".into()))
    }
}

impl Gguf {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the file is opened read-only; we never hand out references past its length.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let (version, metadata, tensors) = parse(&mmap, &path)?;
        Ok(Self { path, version, metadata, tensors, mmap })
    }

    /// The raw bytes of a tensor (already bounds-checked when the table was read).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.start..info.start + info.len]
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A metadata error naming this file.
    pub fn meta_err(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Metadata { path: self.path.clone(), key: key.into(), message: message.into() }
    }
}

type Parsed = (u32, BTreeMap<String, Value>, Vec<TensorInfo>);

pub(crate) fn parse(bytes: &[u8], path: &Path) -> Result<Parsed> {
    let mut c = Cursor { bytes, pos: 0, path };
    let magic = c.u32()?;
    if magic != MAGIC {
        return Err(Error::GgufMagic { path: path.into(), magic });
    }
    let version = c.u32()?;
    if !(2..=3).contains(&version) {
        return Err(Error::GgufVersion { path: path.into(), version });
    }
    // Each tensor entry takes at least 8+4+8+4+8 bytes, each key/value at least 8+4+1.
    let n_tensors = c.count(32, "tensor table")?;
    let n_kv = c.count(13, "metadata table")?;
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = c.string()?;
        let ty = ValueType::read(&mut c)?;
        let value = Value::read(&mut c, ty)?;
        metadata.insert(key, value);
    }
    let mut raw = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = c.string()?;
        let n_dims = c.u32()? as usize;
        if n_dims > 4 {
            return Err(Error::tensor(path, &name, format!("{n_dims} dimensions (at most 4)")));
        }
        let dims = (0..n_dims).map(|_| c.u64()).collect::<Result<Vec<_>>>()?;
        let ty = c.u32()?;
        let offset = c.u64()?;
        let ggml_type = GgmlType::from_u32(ty).ok_or_else(|| Error::UnknownQuant {
            path: path.into(),
            tensor: name.clone(),
            ggml_type: ty,
        })?;
        raw.push((name, dims, ggml_type, offset));
    }
    let alignment = match metadata.get("general.alignment") {
        Some(v) => v.as_u64().filter(|&a| a > 0 && a.is_power_of_two()).ok_or_else(|| {
            Error::Metadata { path: path.into(), key: "general.alignment".into(), message: "not a power of two".into() }
        })?,
        None => DEFAULT_ALIGNMENT,
    };
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, dims, ggml_type, offset) in raw {
        let numel = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let len = numel.and_then(|n| ggml_type.byte_len(n));
        let Some(len) = len else {
            let msg = format!("dims {dims:?} do not fit type {ggml_type:?} (block size {})", ggml_type.block_size());
            return Err(Error::tensor(path, &name, msg));
        };
        let start = data_start.checked_add(offset);
        let end = start.and_then(|s| s.checked_add(len));
        match (start, end) {
            (Some(s), Some(e)) if e <= bytes.len() as u64 => tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                start: s as usize,
                len: len as usize,
            }),
            _ => {
                let msg = format!("data at offset {offset} (+{len} bytes) runs past the end of the file ({} bytes)", bytes.len());
                return Err(Error::tensor(path, &name, msg));
            }
        }
    }
    Ok((version, metadata, tensors))
}

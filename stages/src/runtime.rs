//! Where and in which precision a model runs, chosen at run time from strings
//! (`device = "cpu" | "cuda" | "cuda:N"`, `dtype = "f32" | "bf16"`).

use burn::tensor::{DType, Device};

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Runtime {
    pub device: Device,
    pub dtype: DType,
}

impl Runtime {
    pub fn cpu() -> Self {
        Self { device: Device::flex(), dtype: DType::F32 }
    }

    /// Parses a device and dtype; `dtype = None` picks the device's default (f32 on the CPU,
    /// bf16 on the GPU).
    pub fn parse(device: &str, dtype: Option<&str>) -> Result<Self> {
        let dev = parse_device(device)?;
        let gpu = device != "cpu";
        let dtype = match dtype {
            None => if gpu { DType::BF16 } else { DType::F32 },
            Some("f32") => DType::F32,
            Some("bf16") if gpu => DType::BF16,
            Some("bf16") => return Err(Error::Device(device.into(), "bf16 runs on the GPU only; use f32 on cpu".into())),
            Some(other) => return Err(Error::Device(device.into(), format!("unknown dtype `{other}` (f32, bf16)"))),
        };
        Ok(Self { device: dev, dtype })
    }

    pub fn dtype_name(&self) -> &'static str {
        if self.dtype == DType::BF16 { "bf16" } else { "f32" }
    }
}

/// The GPU numbers a stage with `resources.gpus = gpus` trains on, the one it runs on first:
/// the engine places such a stage on `cuda:FIRST` with `CUDA_VISIBLE_DEVICES` naming all of its
/// GPUs (`visible`).
pub fn stage_gpus(device: &str, gpus: usize, visible: Option<&str>) -> Result<Vec<usize>> {
    let ids: Vec<usize> = match visible {
        Some(v) => v.split(',').map(|i| i.trim().parse().map_err(|_| Error::Device(device.into(), format!("CUDA_VISIBLE_DEVICES `{v}` is not a list of GPU numbers")))).collect::<Result<_>>()?,
        None => (0..gpus).collect(),
    };
    let first = device.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()).or(ids.first().copied()).unwrap_or(0);
    Ok(std::iter::once(first).chain(ids.into_iter().filter(|&i| i != first)).take(gpus).collect())
}

/// The devices besides `device` that a training stage with `resources.gpus = gpus` trains on
/// (data parallelism, a thread each): [`stage_gpus`] after the first. None on the CPU or with
/// one GPU.
pub fn replica_devices(device: &str, gpus: usize, visible: Option<&str>) -> Result<Vec<Device>> {
    if gpus <= 1 || !device.starts_with("cuda") {
        return Ok(Vec::new());
    }
    stage_gpus(device, gpus, visible)?.into_iter().skip(1).map(|i| cuda(device, i)).collect()
}

fn parse_device(s: &str) -> Result<Device> {
    if s == "cpu" {
        return Ok(Device::flex());
    }
    let index = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Error::Device(s.into(), "expected cuda or cuda:N".into()))?,
        None => return Err(Error::Device(s.into(), "expected cpu, cuda or cuda:N".into())),
    };
    cuda(s, index)
}

#[cfg(feature = "cuda")]
fn cuda(_s: &str, index: usize) -> Result<Device> {
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda(s: &str, _index: usize) -> Result<Device> {
    Err(Error::Device(s.into(), "this build has no CUDA support (cargo feature `cuda`)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_dtypes() {
        assert_eq!(Runtime::parse("cpu", None).unwrap().dtype, DType::F32);
        assert!(Runtime::parse("cpu", Some("bf16")).is_err());
        assert!(Runtime::parse("tpu", None).is_err());
        assert!(Runtime::parse("cuda:x", None).is_err());
    }

    #[test]
    fn replicas_are_the_stages_other_gpus() {
        assert!(replica_devices("cpu", 4, None).unwrap().is_empty());
        assert!(replica_devices("cuda:1", 1, Some("1")).unwrap().is_empty());
        let e = replica_devices("cuda:1", 2, Some("1,x")).unwrap_err();
        assert!(e.to_string().contains("CUDA_VISIBLE_DEVICES"), "{e}");
        // Without the cuda feature a second GPU is an error that says so.
        #[cfg(not(feature = "cuda"))]
        assert!(replica_devices("cuda:1", 2, Some("1,2")).unwrap_err().to_string().contains("cuda"));
    }
}

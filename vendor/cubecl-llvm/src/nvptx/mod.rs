//! The NVPTX side: only the PTX version table, which the CUDA runtime reads for every device.

pub mod ptx_version;

//! The error type of the stage kinds: every variant names the file and, where it applies, the
//! tensor or key that was wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a GGUF file (magic {magic:#010x})")]
    GgufMagic { path: PathBuf, magic: u32 },
    #[error("{path}: GGUF version {version} is not supported (2 and 3 are)")]
    GgufVersion { path: PathBuf, version: u32 },
    #[error("{path}: truncated or corrupt at byte {offset}: {what}")]
    Truncated { path: PathBuf, offset: u64, what: String },
    #[error("{path}: tensor `{tensor}`: {message}")]
    Tensor { path: PathBuf, tensor: String, message: String },
    #[error("{path}: tensor `{tensor}` has unknown quantization type {ggml_type}")]
    UnknownQuant { path: PathBuf, tensor: String, ggml_type: u32 },
    #[error("{path}: metadata `{key}`: {message}")]
    Metadata { path: PathBuf, key: String, message: String },
    #[error("{path}: {message}")]
    Json { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{path}: tensor `{tensor}` has shape {got:?}, the config says {want:?}")]
    Shape { path: PathBuf, tensor: String, got: Vec<usize>, want: Vec<usize> },
    #[error("{path}: checkpoint has no tensor `{tensor}`")]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("{path}: tensors not used by the model: {tensors:?}")]
    UnusedTensors { path: PathBuf, tensors: Vec<String> },
    #[error("{path}: no tokenizer (looked for tokenizer.json)")]
    MissingTokenizer { path: PathBuf },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("config: {0}")]
    Config(String),
    #[error("device `{0}`: {1}")]
    Device(String, String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn tensor(path: impl Into<PathBuf>, tensor: &str, message: impl Into<String>) -> Self {
        Error::Tensor { path: path.into(), tensor: tensor.to_string(), message: message.into() }
    }
}

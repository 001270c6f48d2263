//! GGUF files of the llama architecture: container parsing, dequantization, conversion to a
//! Hugging Face checkpoint, and the tokenizer their metadata describes.

mod convert;
mod quant;
mod reader;
mod tokenizer;
mod value;
mod write;

pub use convert::{hf_name, unpermute};
pub use quant::GgmlType;
pub use reader::{Gguf, TensorInfo};
pub use tokenizer::{bytes_to_unicode, TokenizerMeta};
pub use value::Value;
pub use write::GgufWriter;

//! Text: tokenizers of model folders and chat templates.

mod chat;
mod tokenizer;

pub use chat::{render, Message};
pub use tokenizer::{HfTokenizerConfig, SpecialToken, TextTokenizer};

//! Training data: rows read from JSONL or plain-text files and folders, tokenized with the
//! teacher's tokenizer into packed text sequences, chat examples with assistant-token loss
//! masks, and preference pairs; deterministic splits; bad rows counted per reason.

mod base;
mod chat;
mod degrade;
/// Tiny models and a byte-level tokenizer for tests, ours and the binary's integration tests.
pub mod fixtures;
mod parquet;
mod preference;
mod prompts;
mod rows;
pub(crate) mod split;
mod text;

pub use base::{BadRows, DataError};
pub use chat::{chat_example, parse_messages, Example};
pub use degrade::{shuffled, truncated};
pub use preference::{preference_pair, PreferencePair};
pub use prompts::{prompt_json, prompt_rows};
pub use rows::read_rows;
pub use split::in_validation;
pub(crate) use split::fnv1a;
pub use text::pack_texts;

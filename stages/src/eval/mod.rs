//! Evaluation: perplexity and next-token accuracy.

mod perplexity;

pub use perplexity::{evaluate, windows, EvalOptions, EvalTotals};

//! Reading text datasets (JSONL: `{"text"}` or `{"messages"}` rows) for evaluation.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::text::{Message, TextTokenizer};

/// The JSONL files of a dataset artifact: the file itself, or every `*.jsonl` in a folder.
fn files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    out.sort();
    Ok(out)
}

/// Each row's text: `text` as is, `messages` through the chat template (or joined by newlines
/// when the tokenizer has none).
pub fn read_texts(path: &Path, tokenizer: &TextTokenizer) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for file in files(path)? {
        let body = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        for (i, line) in body.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let bad = |m: String| Error::Json { path: file.clone(), message: format!("line {}: {m}", i + 1) };
            let row: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
            if let Some(t) = row.get("text").and_then(|t| t.as_str()) {
                texts.push(t.to_string());
            } else if let Some(m) = row.get("messages") {
                let messages: Vec<Message> = serde_json::from_value(m.clone()).map_err(|e| bad(e.to_string()))?;
                let text = match tokenizer.config.chat_template {
                    Some(_) => tokenizer.apply_chat_template(&messages, false)?,
                    None => messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n"),
                };
                texts.push(text);
            } else {
                return Err(bad("a row needs `text` or `messages`".into()));
            }
        }
    }
    Ok(texts)
}

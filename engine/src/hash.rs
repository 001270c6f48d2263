//! Content hashes of files and folders (blake3), remembered by (inode, mtime, size, ctime)
//! so unchanged multi-gigabyte checkpoints are not read again.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Files at least this large are memory-mapped and hashed on all cores.
const PARALLEL_FROM: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
#[error("cannot hash {path}: {source}")]
pub struct HashError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// What a file looked like when it was hashed; any change means hash again.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Fingerprint {
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    hash: String,
}

/// Hashes files and trees, with an optional persistent fingerprint cache.
pub struct Hasher {
    cache: Option<sled::Tree>,
}

impl Hasher {
    pub fn new(cache: Option<sled::Tree>) -> Self {
        Self { cache }
    }

    /// Hash and total size of a file or folder.
    pub fn hash_path(&self, path: &Path) -> Result<(String, u64), HashError> {
        let err = |source| HashError { path: path.to_path_buf(), source };
        let meta = fs::metadata(path).map_err(err)?;
        if meta.is_dir() {
            self.hash_dir(path)
        } else {
            Ok((self.hash_file_cached(path, &meta).map_err(err)?, meta.len()))
        }
    }

    fn hash_dir(&self, root: &Path) -> Result<(String, u64), HashError> {
        let mut files = Vec::new();
        list_files(root, root, &mut files)
            .map_err(|source| HashError { path: root.to_path_buf(), source })?;
        files.sort();
        let hashed: Result<Vec<_>, HashError> = files
            .par_iter()
            .map(|rel| {
                let p = root.join(rel);
                let err = |source| HashError { path: p.clone(), source };
                let meta = fs::symlink_metadata(&p).map_err(err)?;
                if meta.file_type().is_symlink() {
                    // A link inside a tree is hashed as the link itself, as git does: it may
                    // dangle or point outside the tree (Debian packages do both).
                    let target = fs::read_link(&p).map_err(err)?;
                    let h = blake3::hash(format!("symlink:{}", target.display()).as_bytes()).to_hex().to_string();
                    return Ok((rel.clone(), h, false, 0));
                }
                let h = self.hash_file_cached(&p, &meta).map_err(err)?;
                let exec = meta.permissions().mode() & 0o111 != 0;
                Ok((rel.clone(), h, exec, meta.len()))
            })
            .collect();
        let mut tree = blake3::Hasher::new();
        let mut total = 0;
        for (rel, h, exec, len) in hashed? {
            tree.update(rel.to_string_lossy().as_bytes());
            tree.update(&[0]);
            tree.update(h.as_bytes());
            tree.update(if exec { b"\0x\n" } else { b"\0-\n" });
            total += len;
        }
        Ok((format!("d{}", tree.finalize().to_hex()), total))
    }

    fn hash_file_cached(&self, path: &Path, meta: &fs::Metadata) -> io::Result<String> {
        let key = fs::canonicalize(path)?;
        let key = key.as_os_str().as_encoded_bytes();
        let fp = |hash: String| Fingerprint {
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            hash,
        };
        if let Some(cache) = &self.cache {
            if let Ok(Some(raw)) = cache.get(key) {
                if let Ok(old) = serde_json::from_slice::<Fingerprint>(&raw) {
                    if old == fp(old.hash.clone()) {
                        return Ok(old.hash);
                    }
                }
            }
        }
        let hash = hash_file(path)?;
        if let Some(cache) = &self.cache {
            let v = serde_json::to_vec(&fp(hash.clone())).expect("fingerprints serialize");
            let _ = cache.insert(key, v);
        }
        Ok(hash)
    }
}

/// blake3 of a file's bytes, hex; large files are mapped and hashed in parallel.
pub fn hash_file(path: &Path) -> io::Result<String> {
    let len = fs::metadata(path)?.len();
    let mut h = blake3::Hasher::new();
    if len >= PARALLEL_FROM {
        h.update_mmap_rayon(path)?;
    } else {
        let mut f = fs::File::open(path)?;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(h.finalize().to_hex().to_string())
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let p = entry.path();
        if entry.file_type()?.is_dir() {
            list_files(root, &p, out)?;
        } else {
            out.push(p.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_hash_follows_content_changes() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let h = Hasher::new(Some(db.open_tree("files").unwrap()));
        let f = dir.path().join("a.txt");
        fs::write(&f, "one").unwrap();
        let (a, _) = h.hash_path(&f).unwrap();
        assert_eq!(a, h.hash_path(&f).unwrap().0);
        fs::write(&f, "two").unwrap();
        let (b, _) = h.hash_path(&f).unwrap();
        assert_ne!(a, b);
        assert_eq!(b, blake3::hash(b"two").to_hex().to_string());
    }

    #[test]
    fn links_in_a_tree_hash_as_links_even_dangling_or_to_folders() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        fs::create_dir_all(t.join("real")).unwrap();
        std::os::unix::fs::symlink("real", t.join("to-dir")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/file", t.join("dangling")).unwrap();
        let h = Hasher::new(None);
        let a = h.hash_path(&t).unwrap().0;
        let copy = dir.path().join("copy");
        crate::fsutil::copy_tree(&t, &copy).unwrap();
        crate::fsutil::sync_tree(&copy).unwrap();
        assert_eq!(a, h.hash_path(&copy).unwrap().0, "a copy keeps the links");
        fs::remove_file(t.join("dangling")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", t.join("dangling")).unwrap();
        assert_ne!(a, h.hash_path(&t).unwrap().0);
    }

    #[test]
    fn folder_hash_sees_names_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let h = Hasher::new(None);
        fs::create_dir_all(dir.path().join("m/sub")).unwrap();
        fs::write(dir.path().join("m/sub/w.bin"), [1u8, 2, 3]).unwrap();
        let (a, n) = h.hash_path(&dir.path().join("m")).unwrap();
        assert_eq!(n, 3);
        fs::rename(dir.path().join("m/sub/w.bin"), dir.path().join("m/sub/v.bin")).unwrap();
        assert_ne!(a, h.hash_path(&dir.path().join("m")).unwrap().0);
    }
}

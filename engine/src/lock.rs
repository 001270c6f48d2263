//! One `distill run` per workspace at a time: an flock on `.distill/lock`, which the kernel
//! releases when its holder dies, so a crashed run's lock is taken over without ceremony.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Who holds the lock, written into the lock file for the next comer's message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub pid: u32,
    pub started: String,
    pub command: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("workspace {path} is busy: `{}` (pid {}, started {}) holds its lock; wait for it, or pass --wait", .holder.command, .holder.pid, .holder.started)]
    Busy { path: PathBuf, holder: Holder },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Held while alive; dropping it releases the lock.
pub struct WorkspaceLock {
    _file: File,
    /// Set when the previous holder had died without releasing (its pid was not alive).
    pub took_over: Option<Holder>,
}

impl WorkspaceLock {
    pub fn acquire(path: &Path, wait: bool, command: &str) -> Result<Self, LockError> {
        let io = |source| LockError::Io { path: path.to_path_buf(), source };
        let mut file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path).map_err(io)?;
        let previous = read_holder(&mut file);
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let got = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !got {
            let holder = previous.clone().unwrap_or(Holder { pid: 0, started: "?".into(), command: "?".into() });
            if !wait {
                return Err(LockError::Busy { path: path.to_path_buf(), holder });
            }
            tracing::warn!("waiting for `{}` (pid {}) to release {}", holder.command, holder.pid, path.display());
            // SAFETY: as above, blocking.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(io(std::io::Error::last_os_error()));
            }
        }
        let took_over = previous.filter(|h| h.pid != std::process::id() && !pid_alive(h.pid));
        let me = Holder {
            pid: std::process::id(),
            started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            command: command.to_string(),
        };
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(serde_json::to_string(&me).expect("holder serializes").as_bytes()).map_err(io)?;
        Ok(Self { _file: file, took_over })
    }
}

impl Drop for WorkspaceLock {
    fn drop(&mut self) {
        // A clean exit leaves no holder behind; only a crash leaves its pid for the next
        // run's "took over" note.
        let _ = self._file.set_len(0);
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut s = String::new();
    file.read_to_string(&mut s).ok()?;
    serde_json::from_str(&s).ok()
}

pub(crate) fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid != 0 && unsafe { libc::kill(pid as i32, 0) } == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let _a = WorkspaceLock::acquire(&p, false, "distill run a.toml").unwrap();
        match WorkspaceLock::acquire(&p, false, "distill run b.toml") {
            Err(LockError::Busy { holder, .. }) => {
                assert_eq!(holder.pid, std::process::id());
                assert_eq!(holder.command, "distill run a.toml");
            }
            _ => panic!("second lock must be refused"),
        }
    }
}

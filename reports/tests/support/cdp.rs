//! A minimal Chrome DevTools Protocol client over `--remote-debugging-pipe` (fd 3 in, fd 4 out,
//! NUL-separated JSON). No websocket, no browser download: it drives Debian's `chromium`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

/// `DISTILL_CHROMIUM`, else `/usr/bin/chromium`, else none.
pub fn chromium_path() -> Option<PathBuf> {
    std::env::var_os("DISTILL_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/bin/chromium")))
        .filter(|p| p.is_file())
}

pub struct Browser {
    child: Child,
    to_browser: File,
    from_browser: Receiver<Value>,
    next_id: u64,
    /// Every event received so far (console messages, exceptions, log entries).
    pub events: Vec<Value>,
    pub stderr_path: PathBuf,
    _profile: tempfile::TempDir,
}

/// A pipe whose ends are moved to fds >= 10, so dup2 onto 3 and 4 never clobbers them.
fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: plain libc calls on fds we own.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0, "pipe2");
        let hi = fds.map(|fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10));
        libc::close(fds[0]);
        libc::close(fds[1]);
        (hi[0], hi[1])
    }
}

impl Browser {
    pub fn launch(chromium: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let stderr_path = profile.path().join("stderr.log");
        let (cmd_read, cmd_write) = pipe(); // we write commands, chromium reads fd 3
        let (ev_read, ev_write) = pipe(); // chromium writes fd 4, we read
        let mut cmd = Command::new(chromium);
        cmd.args([
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path).expect("stderr log"));
        // SAFETY: only async-signal-safe dup2 between fork and exec; dup2 clears CLOEXEC.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(cmd_read, 3) < 0 || libc::dup2(ev_write, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("chromium starts");
        // SAFETY: the parent's ends are ours; the child's ends are closed here after the fork.
        let (to_browser, from) = unsafe {
            libc::close(cmd_read);
            libc::close(ev_write);
            (File::from_raw_fd(cmd_write), File::from_raw_fd(ev_read))
        };
        let (tx, rx) = channel();
        // A reader thread, so a stalled browser becomes a timeout instead of a hung test.
        std::thread::spawn(move || {
            let mut r = BufReader::new(from);
            let mut buf = Vec::new();
            while matches!(r.read_until(0, &mut buf), Ok(n) if n > 0) {
                buf.pop_if(|b| *b == 0);
                if let Ok(v) = serde_json::from_slice::<Value>(&buf)
                    && tx.send(v).is_err()
                {
                    break;
                }
                buf.clear();
            }
        });
        Browser { child, to_browser, from_browser: rx, next_id: 0, events: Vec::new(), stderr_path, _profile: profile }
    }

    /// Sends a command (to a page session when `session` is set) and waits for its result.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("json");
        bytes.push(0);
        self.to_browser.write_all(&bytes).expect("write to chromium");
        let reply = self.wait_for(|m| m["id"] == json!(id));
        if let Some(e) = reply.get("error") {
            panic!("{method} failed: {e}\n{}", self.stderr());
        }
        reply["result"].clone()
    }

    /// Waits for a message matching `want`, keeping every other message as an event.
    pub fn wait_for(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from_browser.recv_timeout(left) {
                Ok(m) if want(&m) => return m,
                Ok(m) => self.events.push(m),
                Err(e) => panic!("no answer from chromium ({e})\n{}", self.stderr()),
            }
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Console errors, uncaught exceptions and error-level log entries seen so far.
    pub fn errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| match e["method"].as_str() {
                Some("Runtime.consoleAPICalled") => matches!(e["params"]["type"].as_str(), Some("error" | "assert")),
                Some("Runtime.exceptionThrown") => true,
                Some("Log.entryAdded") => e["params"]["entry"]["level"] == "error",
                _ => false,
            })
            .map(|e| e["params"].to_string())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

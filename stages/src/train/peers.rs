//! Data parallelism across processes, one per device, as `torchrun` launches PyTorch's: each
//! process runs the same training with its own rank and sums its gradients with the others'
//! through host memory over Unix sockets. Nothing is shared between the processes' GPU runtimes
//! (burn's collectives and one-thread-per-device replicas hung on two H200s, docs/multi-gpu.md),
//! and the exchange is plain bytes, so the CPU tests run the real thing.
//!
//! Rank 0 is the hub: it listens at `DIR/hub.sock`, the others connect (retrying until the
//! timeout), and every step each sends its flat buffer, the hub adds them in rank order and
//! sends the sum back. A rank that failed sends its error instead, and every rank then fails
//! the step with it, so none is left waiting for a peer that gave up.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Peers {
    pub rank: usize,
    pub world: usize,
    link: Link,
}

enum Link {
    /// Rank 0: a stream to each other rank, in rank order.
    Hub(Vec<UnixStream>),
    Spoke(UnixStream),
}

/// One rank's share of a step: its flat sums and tokens, or why it has none.
pub type Share = Result<(Vec<f32>, u64), String>;

impl Peers {
    /// Joins the group of `world` ranks meeting at `dir` (a folder every rank can reach).
    pub fn join(dir: &Path, rank: usize, world: usize, timeout: Duration) -> io::Result<Self> {
        Self::join_watching(dir, rank, world, timeout, &mut || None)
    }

    /// [`join`](Self::join), rank 0 asking `gone()` while it waits: a reason there means a rank
    /// will never come (it exited), so waiting out the timeout would only hide why.
    pub fn join_watching(dir: &Path, rank: usize, world: usize, timeout: Duration, gone: &mut dyn FnMut() -> Option<String>) -> io::Result<Self> {
        let path = dir.join("hub.sock");
        let link = if rank == 0 {
            let listener = UnixListener::bind(&path)?;
            let mut by_rank: Vec<Option<UnixStream>> = (1..world).map(|_| None).collect();
            listener.set_nonblocking(true)?;
            let deadline = Instant::now() + timeout;
            while by_rank.iter().any(Option::is_none) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false)?;
                        let r = read_u64(&mut s)? as usize;
                        match by_rank.get_mut(r.wrapping_sub(1)) {
                            Some(slot @ None) => *slot = Some(s),
                            _ => return Err(io::Error::other(format!("a peer announced rank {r}, which is not free in a group of {world}"))),
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                        if let Some(why) = gone() {
                            return Err(io::Error::other(why));
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let missing: Vec<usize> = by_rank.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(i, _)| i + 1).collect();
                        return Err(io::Error::new(io::ErrorKind::TimedOut, format!("ranks {missing:?} never joined at {} within {timeout:?}", path.display())));
                    }
                    Err(e) => return Err(e),
                }
            }
            Link::Hub(by_rank.into_iter().map(|s| s.expect("all joined")).collect())
        } else {
            let deadline = Instant::now() + timeout;
            let mut s = loop {
                match UnixStream::connect(&path) {
                    Ok(s) => break s,
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    Err(e) => return Err(io::Error::new(e.kind(), format!("rank 0 never opened {} within {timeout:?}: {e}", path.display()))),
                }
            };
            s.write_all(&(rank as u64).to_le_bytes())?;
            Link::Spoke(s)
        };
        Ok(Self { rank, world, link })
    }

    /// Sums every rank's share, the same result on every rank: the element-wise sum of the
    /// buffers (added in rank order, so every run of the same group adds alike) and of the
    /// tokens, or the first error any rank reported.
    pub fn all_reduce(&mut self, mine: Share) -> io::Result<Share> {
        match &mut self.link {
            Link::Hub(spokes) => {
                let mut sum = mine;
                for s in spokes.iter_mut() {
                    let theirs = read_share(s)?;
                    sum = match (sum, theirs) {
                        (Ok((mut a, ta)), Ok((b, tb))) if a.len() == b.len() => {
                            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                            Ok((a, ta + tb))
                        }
                        (Ok((a, _)), Ok((b, _))) => Err(format!("ranks disagree on the gradient layout ({} and {} values)", a.len(), b.len())),
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    };
                }
                for s in spokes.iter_mut() {
                    write_share(s, &sum)?;
                }
                Ok(sum)
            }
            Link::Spoke(s) => {
                write_share(s, &mine)?;
                read_share(s)
            }
        }
    }
}

/// Ranks 1..N-1 as rank 0 started them, and the folder they meet in. Dropped before
/// [`finish`](Self::finish) (rank 0 failed or was interrupted), it kills them: a group whose
/// hub is gone could only wait.
pub struct Started {
    children: Vec<(usize, Child, PathBuf)>,
    dir: tempfile::TempDir,
}

impl Started {
    /// A fresh rendezvous folder (short, under the system's temporary folder: a Unix socket's
    /// path has a length limit).
    pub fn new() -> io::Result<Self> {
        Ok(Self { children: Vec::new(), dir: tempfile::Builder::new().prefix("distill-ranks").tempdir()? })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `rank` as `command` (stdout discarded, stderr kept); `log` is where its own
    /// account is, named if it fails.
    pub fn start(&mut self, rank: usize, mut command: Command, log: PathBuf) -> io::Result<()> {
        let child = command.stdin(Stdio::null()).stdout(Stdio::null()).spawn()?;
        self.children.push((rank, child, log));
        Ok(())
    }

    /// A rank that has already exited, while the others are still meeting: why it did.
    pub fn exited(&mut self) -> Option<String> {
        self.children.iter_mut().find_map(|(rank, child, log)| match child.try_wait() {
            Ok(Some(status)) => Some(format!("rank {rank} exited ({status}) before the group met{}", tail(log))),
            _ => None,
        })
    }

    /// Waits for every rank; the ones that failed, named with the end of their logs (the
    /// rendezvous folder goes with this value).
    pub fn finish(mut self) -> Result<(), String> {
        let mut failed = Vec::new();
        for (rank, child, log) in self.children.iter_mut() {
            match child.wait() {
                Ok(s) if s.success() => {}
                Ok(s) => failed.push(format!("rank {rank} ({s}){}", tail(log))),
                Err(e) => failed.push(format!("rank {rank} ({e})")),
            }
        }
        self.children.clear();
        if failed.is_empty() { Ok(()) } else { Err(format!("data-parallel {} failed", failed.join("; "))) }
    }
}

/// The last lines of a rank's log, to quote in an error (nothing when there is no such file).
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    match lines.len() {
        0 => String::new(),
        n => format!(": ...\n{}", lines[n.saturating_sub(8)..].join("\n")),
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Values a wire write or read handles at a time.
// A share on the wire: 0 and an error's UTF-8, or 1, the tokens, the count and the f32s in
// the machine's byte order (ranks of one group run on one machine, or on machines alike). The
// values go out and come in as the buffer's own bytes: a step's sums are ~100 MB, and
// converting them element by element cost more than moving them (session 7: ~110 ms a step).
fn write_share(s: &mut UnixStream, share: &Share) -> io::Result<()> {
    match share {
        Ok((values, tokens)) => {
            s.write_all(&[1])?;
            s.write_all(&tokens.to_le_bytes())?;
            s.write_all(&(values.len() as u64).to_le_bytes())?;
            s.write_all(bytemuck::cast_slice(values))
        }
        Err(message) => {
            s.write_all(&[0])?;
            s.write_all(&(message.len() as u64).to_le_bytes())?;
            s.write_all(message.as_bytes())
        }
    }
}

fn read_share(s: &mut UnixStream) -> io::Result<Share> {
    let mut tag = [0u8; 1];
    s.read_exact(&mut tag)?;
    if tag[0] == 0 {
        let mut message = vec![0u8; read_u64(s)? as usize];
        s.read_exact(&mut message)?;
        return Ok(Err(String::from_utf8_lossy(&message).into_owned()));
    }
    let tokens = read_u64(s)?;
    let mut values = vec![0f32; read_u64(s)? as usize];
    s.read_exact(bytemuck::cast_slice_mut(&mut values))?;
    Ok(Ok((values, tokens)))
}

fn read_u64(s: &mut UnixStream) -> io::Result<u64> {
    let mut b = [0u8; 8];
    s.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three ranks on threads (the wire is the same between processes): every rank gets the
    /// sum, rank-order addition; an error on one rank reaches all; a missing rank times out
    /// with its number.
    #[test]
    fn ranks_get_the_same_sum_or_the_same_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let run = |shares: Vec<Vec<Share>>| {
            let _ = std::fs::remove_file(dir.join("hub.sock"));
            let handles: Vec<_> = shares
                .into_iter()
                .enumerate()
                .map(|(rank, steps)| {
                    let dir = dir.clone();
                    std::thread::spawn(move || {
                        let mut p = Peers::join(&dir, rank, 3, Duration::from_secs(10)).unwrap();
                        steps.into_iter().map(|s| p.all_reduce(s).unwrap()).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
        };
        let got = run(vec![
            vec![Ok((vec![1.0, 2.0], 5)), Ok((vec![0.0], 1))],
            vec![Ok((vec![10.0, 20.0], 6)), Err("rank 1: bad row".into())],
            vec![Ok((vec![100.0, 200.0], 7)), Ok((vec![0.0], 1))],
        ]);
        for rank in &got {
            assert_eq!(rank[0], Ok((vec![111.0, 222.0], 18)));
            assert_eq!(rank[1], Err("rank 1: bad row".to_string()));
        }

        let _ = std::fs::remove_file(dir.join("hub.sock"));
        let err = Peers::join(&dir, 0, 2, Duration::from_millis(100)).err().unwrap();
        assert!(err.to_string().contains("ranks [1] never joined"), "{err}");
    }

    /// Rank 0 does not wait out its timeout for a rank that already died: it says which, with
    /// the end of that rank's log; a failed rank fails `finish` the same way.
    #[test]
    fn a_rank_that_dies_before_the_group_meets_is_named_at_once() {
        let mut started = Started::new().unwrap();
        let log = started.dir().join("rank1.log");
        std::fs::write(&log, "loading\nerror: no such model folder\n").unwrap();
        started.start(1, Command::new("false"), log).unwrap();
        let dir = started.dir().to_path_buf();
        let t0 = Instant::now();
        let err = Peers::join_watching(&dir, 0, 2, Duration::from_secs(60), &mut || started.exited()).err().unwrap().to_string();
        assert!(t0.elapsed() < Duration::from_secs(30), "waited {:?}", t0.elapsed());
        assert!(err.contains("rank 1 exited") && err.contains("no such model folder"), "{err}");
        let err = started.finish().unwrap_err();
        assert!(err.contains("rank 1") && err.contains("no such model folder"), "{err}");
    }

    /// A buffer far larger than a socket's buffer (several MB, an odd count) arrives whole,
    /// value for value.
    #[test]
    fn long_buffers_cross_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let n = (1 << 21) + 7;
        let ranks: Vec<_> = (0..2)
            .map(|rank| {
                let dir = tmp.path().to_path_buf();
                std::thread::spawn(move || {
                    let mut p = Peers::join(&dir, rank, 2, Duration::from_secs(10)).unwrap();
                    p.all_reduce(Ok(((0..n).map(|i| (i + rank) as f32).collect(), 1))).unwrap()
                })
            })
            .collect();
        for r in ranks {
            let (v, tokens) = r.join().unwrap().unwrap();
            assert_eq!((v.len(), tokens), (n, 2));
            assert!(v.iter().enumerate().all(|(i, &x)| x == (2 * i + 1) as f32));
        }
    }
}

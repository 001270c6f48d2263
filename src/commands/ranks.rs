//! `--processes N`: a data-parallel group of processes started the way `torchrun` starts
//! PyTorch's, one per device. The process the user started is rank 0; it starts ranks 1..N as
//! copies of its own command line with `--rank R --rendezvous DIR` added, and they meet at DIR
//! ([`Peers`]). On CUDA, rank R runs on `cuda:R` when the device was given as plain `cuda`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use distill_stages::train::Peers;

/// How long ranks wait for each other to start (a cold CUDA start plus model loading).
const JOIN_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Group {
    pub rank: usize,
    pub world: usize,
    children: Vec<(usize, Child)>,
    dir: PathBuf,
    /// Rank 0's own rendezvous folder, removed with it.
    _tmp: Option<tempfile::TempDir>,
}

impl Group {
    /// One process (no group) when `processes` is 1; rank 0 starts the others.
    pub fn start(processes: usize, rank: Option<usize>, rendezvous: Option<&Path>) -> anyhow::Result<Self> {
        let world = processes.max(1);
        match (rank, rendezvous) {
            (Some(rank), Some(dir)) => {
                if rank == 0 || rank >= world {
                    bail!("--rank {rank} is not one a started rank can have in a group of {world}");
                }
                Ok(Self { rank, world, children: Vec::new(), dir: dir.to_path_buf(), _tmp: None })
            }
            (Some(_), None) | (None, Some(_)) => bail!("--rank and --rendezvous go together (rank 0 passes them to the ranks it starts)"),
            (None, None) if world == 1 => Ok(Self { rank: 0, world, children: Vec::new(), dir: PathBuf::new(), _tmp: None }),
            (None, None) => {
                let tmp = tempfile::Builder::new().prefix("distill-ranks").tempdir().context("a rendezvous folder")?;
                let exe = std::env::current_exe().context("this program's path, to start its ranks")?;
                let args: Vec<String> = std::env::args().skip(1).collect();
                let mut children = Vec::new();
                for r in 1..world {
                    let child = Command::new(&exe)
                        .args(&args)
                        .args(["--rank", &r.to_string(), "--rendezvous"])
                        .arg(tmp.path())
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .spawn()
                        .with_context(|| format!("starting rank {r}"))?;
                    children.push((r, child));
                }
                Ok(Self { rank: 0, world, children, dir: tmp.path().to_path_buf(), _tmp: Some(tmp) })
            }
        }
    }

    /// This rank's device: `cuda` becomes `cuda:RANK` in a group; anything else stays.
    pub fn device(&self, device: &str) -> String {
        if self.world > 1 && device == "cuda" { format!("cuda:{}", self.rank) } else { device.to_string() }
    }

    /// Meets the other ranks (`None` without a group).
    pub fn join(&self) -> anyhow::Result<Option<Peers>> {
        if self.world == 1 {
            return Ok(None);
        }
        Peers::join(&self.dir, self.rank, self.world, JOIN_TIMEOUT).map(Some).with_context(|| format!("rank {} joining its group of {}", self.rank, self.world))
    }

    /// Waits for the started ranks; any that failed fails the command, named.
    pub fn finish(mut self) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        for (r, child) in &mut self.children {
            let status = child.wait().with_context(|| format!("waiting for rank {r}"))?;
            if !status.success() {
                failed.push(format!("rank {r} ({status})"));
            }
        }
        if !failed.is_empty() {
            bail!("{} of the group failed; their errors are above", failed.join(", "));
        }
        Ok(())
    }
}

impl Drop for Group {
    /// Ranks outlive no failed rank 0: a group whose hub is gone could only wait.
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

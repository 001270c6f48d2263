//! `--processes N`: a data-parallel group of processes started the way `torchrun` starts
//! PyTorch's, one per device. The process the user started is rank 0; it starts ranks 1..N as
//! copies of its own command line with `--rank R --rendezvous DIR` added, and they meet at DIR
//! ([`Peers`]). On CUDA, rank R runs on `cuda:R` when the device was given as plain `cuda`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use distill_stages::train::{Peers, Started};

/// How long ranks wait for each other to start (a cold CUDA start plus model loading).
const JOIN_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Group {
    pub rank: usize,
    pub world: usize,
    dir: PathBuf,
    /// Rank 0's: the ranks it started.
    started: Option<Started>,
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
                Ok(Self { rank, world, dir: dir.to_path_buf(), started: None })
            }
            (Some(_), None) | (None, Some(_)) => bail!("--rank and --rendezvous go together (rank 0 passes them to the ranks it starts)"),
            (None, None) if world == 1 => Ok(Self { rank: 0, world, dir: PathBuf::new(), started: None }),
            (None, None) => {
                let mut started = Started::new().context("a rendezvous folder")?;
                let exe = std::env::current_exe().context("this program's path, to start its ranks")?;
                let args: Vec<String> = std::env::args().skip(1).collect();
                for r in 1..world {
                    let mut command = Command::new(&exe);
                    command.args(&args).args(["--rank", &r.to_string(), "--rendezvous"]).arg(started.dir());
                    // Its errors go to the shared stderr.
                    started.start(r, command, PathBuf::from("stderr")).with_context(|| format!("starting rank {r}"))?;
                }
                Ok(Self { rank: 0, world, dir: started.dir().to_path_buf(), started: Some(started) })
            }
        }
    }

    /// This rank's device: `cuda` becomes `cuda:RANK` in a group; anything else stays.
    pub fn device(&self, device: &str) -> String {
        if self.world > 1 && device == "cuda" { format!("cuda:{}", self.rank) } else { device.to_string() }
    }

    /// Meets the other ranks (`None` without a group).
    pub fn join(&mut self) -> anyhow::Result<Option<Peers>> {
        if self.world == 1 {
            return Ok(None);
        }
        let started = &mut self.started;
        let mut gone = || started.as_mut().and_then(Started::exited);
        Peers::join_watching(&self.dir, self.rank, self.world, JOIN_TIMEOUT, &mut gone).map(Some).with_context(|| format!("rank {} joining its group of {}", self.rank, self.world))
    }

    /// Waits for the started ranks; any that failed fails the command, named.
    pub fn finish(self) -> anyhow::Result<()> {
        match self.started {
            Some(s) => s.finish().map_err(anyhow::Error::msg),
            None => Ok(()),
        }
    }
}

//! How a training stage with `resources.gpus = N` spreads over its GPUs. By default one process
//! per GPU (`train::peers`, `torchrun`'s model); with `DISTILL_ALLREDUCE=nccl|nccl-main|host`,
//! one thread per GPU in this process (`train::parallel`). With processes, this stage is rank 0
//! and starts ranks 1..N-1 as `distill exec-stage` jobs of the same stage on the other GPUs,
//! with the same inputs. They train with it and stop after training; rank 0 alone validates,
//! saves and records.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use burn::tensor::Device;
use distill_engine::exec::JobFile;
use distill_engine::stage::{StageContext, StageError};

use crate::runtime::{replica_devices, stage_gpus};
use crate::train::{Peers, Started, Trainer, TrainableLm};

/// How long ranks wait for each other (each loads its models and data first).
const JOIN_TIMEOUT: Duration = Duration::from_secs(900);

/// Set by rank 0 in the environment of the ranks it starts.
const RANK: &str = "DISTILL_RANK";
const WORLD: &str = "DISTILL_WORLD";
const RENDEZVOUS: &str = "DISTILL_RENDEZVOUS";

pub struct DataParallel {
    /// Further devices of this process (threads); empty with processes.
    pub replicas: Vec<Device>,
    pub rank: usize,
    peers: Option<Peers>,
    /// Rank 0's: the ranks it started.
    started: Option<Started>,
}

impl DataParallel {
    pub fn setup(ctx: &mut StageContext) -> Result<Self, StageError> {
        let failed = |e: String| StageError::Failed(e);
        let none = || Self { replicas: Vec::new(), rank: 0, peers: None, started: None };
        if let Ok(rank) = std::env::var(RANK) {
            let rank: usize = rank.parse().map_err(|_| failed(format!("{RANK}=`{rank}` is not a rank")))?;
            let world: usize = std::env::var(WORLD).ok().and_then(|w| w.parse().ok()).ok_or_else(|| failed(format!("{RANK} without {WORLD}")))?;
            let dir = PathBuf::from(std::env::var(RENDEZVOUS).map_err(|_| failed(format!("{RANK} without {RENDEZVOUS}")))?);
            let peers = Peers::join(&dir, rank, world, JOIN_TIMEOUT).map_err(|e| failed(format!("rank {rank} joining its group: {e}")))?;
            ctx.log(format!("rank {rank} of {world}, meeting at {}", dir.display()));
            return Ok(Self { rank, peers: Some(peers), ..none() });
        }
        let spec = ctx.spec;
        let processes = one_process_per_gpu(&spec.device, spec.gpus, std::env::var("DISTILL_ALLREDUCE").ok().as_deref());
        if !processes {
            let replicas = replica_devices(&spec.device, spec.gpus, spec.env.get("CUDA_VISIBLE_DEVICES").map(String::as_str)).map_err(|e| failed(e.to_string()))?;
            if !replicas.is_empty() {
                ctx.log(format!("data parallel over {} GPUs, a thread each: frozen models copied to each, gradients summed across them", 1 + replicas.len()));
            }
            return Ok(Self { replicas, ..none() });
        }
        let devices = rank_devices(&spec.device, spec.gpus, spec.env.get("CUDA_VISIBLE_DEVICES").map(String::as_str)).map_err(|e| failed(e.to_string()))?;
        let mut started = Started::new().map_err(|e| failed(format!("a rendezvous folder: {e}")))?;
        let exe = std::env::current_exe().map_err(|e| failed(format!("this program's path, to start the ranks: {e}")))?;
        for (rank, device) in devices.iter().enumerate().skip(1) {
            let at = |what: &str| started.dir().join(format!("rank{rank}.{what}"));
            let mut spec = spec.clone();
            spec.device = device.clone();
            let job = JobFile {
                spec,
                run_id: ctx.run_id.clone(),
                inputs: ctx.inputs().clone(),
                out_dir: at("out"),
                log: at("log"),
                steps: at("steps"),
                workspace: ctx.workspace().to_path_buf(),
                result: at("result"),
            };
            let file = at("job");
            job.write(&file).map_err(|e| failed(format!("{}: {e}", file.display())))?;
            let mut command = Command::new(&exe);
            command.arg("exec-stage").arg(&file).envs([(RANK, rank.to_string()), (WORLD, devices.len().to_string())]).env(RENDEZVOUS, started.dir());
            let log = at("log");
            started.start(rank, command, log).map_err(|e| failed(format!("starting rank {rank}: {e}")))?;
        }
        ctx.log(format!("data parallel over {} processes, one per device ({}), meeting at {}", devices.len(), devices.join(", "), started.dir().display()));
        let dir = started.dir().to_path_buf();
        let peers = Peers::join_watching(&dir, 0, devices.len(), JOIN_TIMEOUT, &mut || started.exited()).map_err(|e| failed(format!("rank 0 gathering its group: {e}")))?;
        Ok(Self { peers: Some(peers), started: Some(started), ..none() })
    }

    /// `trainer` over this stage's devices.
    pub fn apply<M: TrainableLm>(&mut self, trainer: Trainer<M>) -> Trainer<M> {
        let trainer = trainer.with_replicas(&self.replicas);
        match self.peers.take() {
            Some(peers) => trainer.with_peers(peers),
            None => trainer,
        }
    }

    /// A rank other than 0: its part ends with the training.
    pub fn is_secondary(&self) -> bool {
        self.rank > 0
    }

    /// Waits for the ranks this one started; one that failed fails the stage, naming its log.
    pub fn finish(self) -> Result<(), StageError> {
        self.started.map_or(Ok(()), |s| s.finish().map_err(StageError::Failed))
    }
}

/// Processes unless a thread way is named: on two H200s one process per GPU scaled the
/// distillation step 1.84x, one thread per GPU 1.45x (BENCHMARKS.md, session 7). On the CPU
/// only when asked (`resources.gpus` means nothing there; the tests ask).
fn one_process_per_gpu(device: &str, gpus: usize, setting: Option<&str>) -> bool {
    gpus > 1 && (setting == Some("procs") || (setting.is_none() && device.starts_with("cuda")))
}

/// Each rank's device: on CUDA the stage's GPUs in the order the engine gave them
/// ([`stage_gpus`]: `device` first), on the CPU the CPU for every rank.
fn rank_devices(device: &str, gpus: usize, visible: Option<&str>) -> crate::Result<Vec<String>> {
    if !device.starts_with("cuda") {
        return Ok(vec![device.to_string(); gpus]);
    }
    Ok(stage_gpus(device, gpus, visible)?.into_iter().map(|i| format!("cuda:{i}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_gpus_train_in_processes_unless_a_thread_way_is_named() {
        assert!(one_process_per_gpu("cuda", 2, None));
        assert!(one_process_per_gpu("cuda:1", 4, Some("procs")));
        assert!(!one_process_per_gpu("cuda", 2, Some("nccl")));
        assert!(!one_process_per_gpu("cuda", 1, None), "one GPU is one process");
        assert!(!one_process_per_gpu("cpu", 2, None));
        assert!(one_process_per_gpu("cpu", 2, Some("procs")));
    }

    #[test]
    fn ranks_take_the_stages_gpus_first_one_first() {
        assert_eq!(rank_devices("cuda:2", 2, Some("2,3")).unwrap(), ["cuda:2", "cuda:3"]);
        assert_eq!(rank_devices("cuda", 3, None).unwrap(), ["cuda:0", "cuda:1", "cuda:2"]);
        assert_eq!(rank_devices("cpu", 2, Some("0,1")).unwrap(), ["cpu", "cpu"]);
    }
}

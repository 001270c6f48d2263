//! The all-reduce data-parallel training sums gradients with: `count` f32 tensors of `elements`
//! each on every device, each device on its own thread as the trainer runs them
//! ([`crate::train::all_reduce_in_place`]), checked against the exact sum and timed. Bus
//! bandwidth is NCCL's measure (bytes x 2(n-1)/n per second), comparable with nccl-tests.

use std::collections::BTreeMap;
use std::sync::Barrier;
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use serde::Serialize;

use super::median;
use crate::error::{Error, Result};
use crate::train::{all_reduce_in_place, Partial};

#[derive(Debug, Clone, Serialize)]
pub struct AllReduceResult {
    pub bench: &'static str,
    pub devices: usize,
    pub count: usize,
    pub elements: usize,
    pub ms: f64,
    pub bus_gb_s: f64,
    /// Every device read back the exact sum.
    pub correct: bool,
}

/// With `copies_first`, that many tensors first go from the first device to each other one
/// through burn's `to_device` (an NCCL send and receive on the same communicator).
pub fn run(devices: &[Device], count: usize, elements: usize, repeats: usize, copies_first: usize) -> Result<AllReduceResult> {
    if devices.iter().any(|d| *d == Device::flex()) {
        return Err(Error::Config("the all-reduce bench runs on GPUs (--device cuda); the CPU backend has no collectives".into()));
    }
    for d in &devices[1..] {
        for _ in 0..copies_first {
            let _ = Tensor::<1>::ones([elements], &devices[0]).to_device(d);
        }
        d.sync().map_err(|e| Error::Config(format!("{e:?}")))?;
    }
    let n = devices.len();
    let barrier = Barrier::new(n);
    let expected = (n * (n + 1) / 2) as f32;
    let outcomes: Vec<std::result::Result<(Vec<f64>, bool), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(r, device)| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut times = Vec::new();
                    let mut correct = true;
                    for _ in 0..repeats + 1 {
                        // Device r holds r + 1 everywhere, so the sum is n(n+1)/2.
                        let fill = |len: usize| Tensor::<1>::ones([len], device) * (r + 1) as f64;
                        let grads: BTreeMap<String, Tensor<1>> = (0..count).map(|k| (format!("p{k:04}"), fill(elements))).collect();
                        let mut p = Partial { grads, sums: vec![("loss", fill(1))], tokens: 0 };
                        device.sync().map_err(|e| format!("{e:?}"))?;
                        barrier.wait();
                        let t0 = Instant::now();
                        all_reduce_in_place(&mut p, devices)?;
                        times.push(t0.elapsed().as_secs_f64());
                        barrier.wait();
                        let first = p.grads.values().next().expect("count > 0").clone().narrow(0, 0, 1);
                        let got = first.into_data().try_to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
                        correct &= got[0] == expected;
                    }
                    Ok((times[1..].to_vec(), correct))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a device thread panicked".into()))).collect()
    });
    let mut slowest = Vec::new();
    let mut correct = true;
    for o in outcomes {
        let (times, ok) = o.map_err(Error::Config)?;
        correct &= ok;
        slowest = if slowest.is_empty() { times } else { slowest.iter().zip(times).map(|(a, b): (&f64, f64)| a.max(b)).collect() };
    }
    let secs = median(slowest);
    let bytes = (count * elements * 4) as f64;
    Ok(AllReduceResult { bench: "all_reduce", devices: n, count, elements, ms: secs * 1e3, bus_gb_s: bytes * 2.0 * (n as f64 - 1.0) / n as f64 / secs / 1e9, correct })
}

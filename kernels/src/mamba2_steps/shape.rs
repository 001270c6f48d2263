//! How the steps kernel lays a launch out over cubes and lanes: host-side arithmetic only, so
//! that the CPU's tests check every shape the GPU would be given.
// Only the cuda build launches the kernel; the CPU build compiles this for its tests.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use std::sync::OnceLock;

use crate::Mamba2StepWeights;

/// Units per cube, at most: for one step and for several. `DISTILL_STEPS_CUBE=U` or
/// `ONE,SEVERAL` overrides them (powers of two from 32 up to CUDA's 1,024), to measure.
fn cube_units(steps: usize) -> usize {
    static UNITS: OnceLock<Option<(usize, usize)>> = OnceLock::new();
    let (one, several) = env_pair(&UNITS, "DISTILL_STEPS_CUBE", |u| u.is_power_of_two() && (32..=1024).contains(&u)).unwrap_or((512, 512));
    if steps == 1 { one } else { several }
}

/// `VAR=V` or `VAR=ONE,SEVERAL` read once into `cell`: the values for one step and for
/// several, where each is a number that `valid` takes (else none).
fn env_pair(cell: &'static OnceLock<Option<(usize, usize)>>, var: &str, valid: fn(usize) -> bool) -> Option<(usize, usize)> {
    *cell.get_or_init(|| {
        let value = |v: &str| v.trim().parse().ok().filter(|&x| valid(x));
        let v = std::env::var(var).ok()?;
        match v.split_once(',') {
            Some((a, b)) => Some((value(a)?, value(b)?)),
            None => value(&v).map(|x| (x, x)),
        }
    })
}

/// Steps whose convolved inputs sit in shared memory at once, at most (fewer when there are
/// fewer steps: a single step then holds only its own, as the shared memory a cube takes bounds
/// how many cubes an SM runs at once).
pub(super) const CHUNK: usize = 16;

/// Whether the kernel takes this layer: its virtual lanes (a power of two, for the shuffle
/// reduction) must split `n` evenly, and its conv carries a window (`K >= 2`: the kernel writes
/// the next one). Lane counts whose cubes would not fill whole warps are never chosen
/// ([`lanes_for`]); 16 lanes (or all of `n`'s virtual lanes) always fit.
pub(crate) fn supports(w: &Mamba2StepWeights) -> bool {
    let virt = virtual_lanes(w.d_state);
    virt.is_power_of_two() && w.d_state.is_multiple_of(virt) && w.conv_weight.dims()[1] >= 2 && fits(w.head_dim, w.d_state, 1, ONE_STEP_LANES) && fits(w.head_dim, w.d_state, 2, ONE_STEP_LANES)
}

/// Whether `lanes` (at most the virtual lanes) walk `n` evenly and their cubes fill whole warps
/// (a shuffle over absent lanes is undefined).
fn fits(p: usize, n: usize, steps: usize, lanes: usize) -> bool {
    let (lanes, rows) = cube_shape(p, n, steps, lanes);
    virtual_lanes(n).is_multiple_of(lanes) && (lanes * rows).is_multiple_of(32)
}

/// The lanes a row that a single step takes: 16 moved one step's bytes at 51% of the bandwidth
/// where 32 reached 38.5% (Llama-3-8B's layer at batch 32, bf16, H200; BENCHMARKS.md, session 9).
const ONE_STEP_LANES: usize = 16;

/// The lanes a row for a launch of `steps` steps over `rows_total` state rows (`batch · heads ·
/// head_dim`) on a device of `sms` SMs. Several steps take fewer lanes than one where the
/// launch still gives every SM a cube: fewer lanes give a cube more rows of its head, so fewer
/// cubes repeat the head's `B` and `C` convolutions (each cube convolves them all) and a unit's
/// loads of `B` and `C` serve more entries. Steps that fit one chunk take 8, walked in two
/// passes ([`passes_for`]); more take 4, else 8. On Llama-3-8B's layer at batch 32 (H200,
/// f32 / bf16), 5 steps cost 72.7 / 66.0 µs at 4 lanes, 74.4 / 74.0 at 8 in one pass, and 62.0
/// / 61.0 at 8 in two (session 18); at batch 1, whose cubes of fewer lanes leave most SMs
/// idle, 16 lanes stay fastest. Any lane count rounds alike (see [`virtual_lanes`]).
/// `DISTILL_STEPS_LANES=L` or `ONE,SEVERAL` (powers of two up to 32) sets them instead, to
/// measure.
pub(super) fn lanes_for(p: usize, n: usize, steps: usize, rows_total: usize, sms: Option<u32>) -> usize {
    static LANES: OnceLock<Option<(usize, usize)>> = OnceLock::new();
    if let Some((one, several)) = env_pair(&LANES, "DISTILL_STEPS_LANES", |l| l.is_power_of_two() && l <= 32) {
        let lanes = if steps == 1 { one } else { several };
        if fits(p, n, steps, lanes) {
            return lanes;
        }
    }
    chosen_lanes(p, n, steps, rows_total, sms)
}

/// [`lanes_for`] without `DISTILL_STEPS_LANES`.
fn chosen_lanes(p: usize, n: usize, steps: usize, rows_total: usize, sms: Option<u32>) -> usize {
    if steps == 1 {
        return ONE_STEP_LANES;
    }
    let fills = |lanes: usize| sms.is_some_and(|sms| rows_total / cube_shape(p, n, steps, lanes).1 >= sms as usize);
    let candidates: &[usize] = if steps <= CHUNK { &[8] } else { &[4, 8] };
    candidates.iter().copied().find(|&l| fits(p, n, steps, l) && fills(l)).unwrap_or(ONE_STEP_LANES)
}

/// State entries a unit holds at once, at most, where it can walk them in passes. On
/// Llama-3-8B's layer (ncu, session 18), 32 entries a unit at 4 lanes took 61 registers (two
/// cubes of 512 an SM, 47% occupancy), and so did two passes of 16 (nvcc kept both in
/// registers); at 8 lanes two passes of 8 take 32 registers (four cubes, 90%).
const HELD: usize = 8;

/// The passes in which a unit walks its state entries over `steps` steps at `lanes` lanes:
/// two where it holds more than [`HELD`] and the steps fit one chunk (a pass reads every step's
/// `B` and `C` from shared memory, so all must be there), else one. Two passes split the unit's
/// groups by parity, which keeps the pairwise read-out's order (see the kernel); more would not.
/// `DISTILL_STEPS_PASSES=1` keeps one, to measure.
pub(super) fn passes_for(n: usize, steps: usize, lanes: usize) -> usize {
    static ONE: OnceLock<bool> = OnceLock::new();
    let lanes = lanes.min(virtual_lanes(n));
    let groups = virtual_lanes(n) / lanes;
    let two = (2..=CHUNK).contains(&steps) && n / lanes > HELD && groups.is_multiple_of(2);
    if two && crate::switched_on(&ONE, "DISTILL_STEPS_PASSES", "1") { 2 } else { 1 }
}

/// The lanes a row's read-out is summed over, whatever lanes walk it: a warp's width (or `n`
/// when smaller). A unit with fewer lanes holds several virtual lanes and adds them in the order
/// the missing shuffles would, so every lane count rounds alike and one step, decoding's, equals
/// the first of several, verification's.
pub(super) fn virtual_lanes(n: usize) -> usize {
    n.min(32)
}

/// Entries of `B` and `C` a shared load reads: as many of a virtual lane's (contiguous)
/// entries as fit in 16 bytes.
pub(super) fn vector_width(n: usize) -> usize {
    let per = n / virtual_lanes(n);
    [4, 2].into_iter().find(|&w| per.is_multiple_of(w)).unwrap_or(1)
}

/// `(lanes, rows)` of a cube of (at most) 512 units walking each row with `lanes` lanes (or all
/// of `n`'s virtual lanes when fewer): as many rows of the head as fit. `DISTILL_STEPS_CUBE=ONE,
/// SEVERAL` overrides the 512 (powers of two up to CUDA's 1,024), to measure.
pub(super) fn cube_shape(p: usize, n: usize, steps: usize, lanes: usize) -> (usize, usize) {
    let units = cube_units(steps);
    let lanes = virtual_lanes(n).min(lanes);
    let mut rows = (units / lanes).clamp(1, p);
    while !p.is_multiple_of(rows) {
        rows -= 1;
    }
    (lanes, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The H200's SMs.
    const SMS: Option<u32> = Some(132);

    #[test]
    fn several_steps_walk_rows_with_eight_lanes_in_two_passes_where_every_sm_still_gets_a_cube() {
        // Llama-3-8B's Mamba layer: 32 heads of 128 rows, d_state 128.
        let rows_total = |batch: usize| batch * 32 * 128;
        assert_eq!(chosen_lanes(128, 128, 5, rows_total(32), SMS), 8);
        assert_eq!(cube_shape(128, 128, 5, 8), (8, 64), "a cube of 512 units holds half a head");
        assert_eq!(passes_for(128, 5, 8), 2, "16 entries a unit, 8 a pass");
        assert_eq!(chosen_lanes(128, 128, 5, rows_total(8), SMS), 8, "512 cubes");
        assert_eq!(chosen_lanes(128, 128, 5, rows_total(1), SMS), 16, "64 cubes of 8 lanes would leave 68 SMs idle");
        assert_eq!(passes_for(128, 5, 16), 1, "8 entries a unit");
        // Past one chunk, a unit holds all its entries across the chunks: 4 lanes, one pass.
        assert_eq!(chosen_lanes(128, 128, CHUNK + 1, rows_total(32), SMS), 4);
        assert_eq!(cube_shape(128, 128, CHUNK + 1, 4), (4, 128), "a cube of 512 units holds a whole head");
        assert_eq!(passes_for(128, CHUNK + 1, 4), 1);
        assert_eq!(cube_shape(128, 128, 5, 16), (16, 32));
        // One step keeps 16 lanes whatever the batch; an unknown SM count keeps 16 too.
        assert_eq!(chosen_lanes(128, 128, 1, rows_total(64), SMS), ONE_STEP_LANES);
        assert_eq!(chosen_lanes(128, 128, 5, rows_total(64), None), ONE_STEP_LANES);
        // SmolLM2's hybrid layer at batch 1 (the speculative stage): 9 heads of 64 rows.
        assert_eq!(chosen_lanes(64, 64, 5, 9 * 64, SMS), 16);
    }

    #[test]
    fn every_chosen_shape_fills_whole_warps_and_loads_whole_vectors() {
        let mut checked = 0;
        for p in [8, 16, 64, 128] {
            for n in [4, 8, 16, 64, 128, 256] {
                let virt = virtual_lanes(n);
                if !fits(p, n, 1, ONE_STEP_LANES) || !fits(p, n, 2, ONE_STEP_LANES) {
                    continue;
                }
                for steps in [1, 2, 5, 9, 17] {
                    for batch in [1, 8, 32, 64] {
                        let lanes = chosen_lanes(p, n, steps, batch * 4 * p, SMS);
                        let (lanes, rows) = cube_shape(p, n, steps, lanes);
                        let case = format!("p {p} n {n} steps {steps} batch {batch}: {lanes} lanes x {rows} rows");
                        assert!(virt.is_multiple_of(lanes), "{case}");
                        assert!(p.is_multiple_of(rows), "{case}");
                        assert!((lanes * rows).is_multiple_of(32), "{case}");
                        assert!(lanes * rows <= 1024, "{case}");
                        let (w, per) = (vector_width(n), n / virt);
                        assert!(per.is_multiple_of(w) && [1, 2, 4].contains(&w), "{case}: vectors of {w}");
                        let (passes, groups) = (passes_for(n, steps, lanes), virt / lanes);
                        assert!(groups.is_multiple_of(passes), "{case}: {passes} passes");
                        assert!(passes == 1 || (steps <= CHUNK && n / lanes > HELD), "{case}: {passes} passes");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 4 * 6 * 5 * 4, "the kernel takes every one of these layers");
        // Llama-3-8B's and SmolLM2's d_state load 4 and 2 entries a vector.
        assert_eq!((vector_width(128), vector_width(64), vector_width(16)), (4, 2, 1));
    }
}

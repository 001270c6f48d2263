//! The KV cache: a plain struct the caller owns and passes as `&mut` to `forward`.
//!
//! Keys and values live in buffers with room to spare (`capacity` positions, grown by
//! doubling), written in place at the next free position. Decoding then keeps one tensor
//! shape for many steps: no per-step copy of the whole cache (which `cat` costs) and, on the
//! GPU, no fresh kernel compilation or autotuning for every new length. Slots past the cached
//! length are masked, so rolling back (speculative decoding) is only a shorter length.

use std::cell::OnceCell;

use burn::tensor::{Bool, Device, IndexingUpdateOp, Int, Tensor, TensorData};

/// Capacity of a fresh buffer: small enough that short CPU runs stay cheap, large enough that
/// decoding does not regrow at every step.
const MIN_CAPACITY: usize = 64;

/// Keys and values of every layer for the tokens seen so far, plus which cached positions
/// are real tokens (left padding is not).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Per layer: `[batch, n_kv_heads, capacity, head_dim]` keys and values (only the first
    /// `len()` positions are meaningful).
    pub layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// `[batch][cached]`: false where the position is padding.
    pub valid: Vec<Vec<bool>>,
    /// Positions the buffers hold, once the next step's tokens are in.
    pub capacity: usize,
    /// Positions the caller will fill (prompt plus new tokens): the first regrowth makes room
    /// for all of them, so a generation keeps one buffer length (and one set of kernels)
    /// from its first decode step to its last.
    pub reserved: usize,
}

/// What the attention layers of one forward step need to know about the cache.
#[derive(Debug, Clone)]
pub struct KvStep {
    /// Cached positions before this step: where its keys and values go.
    pub offset: usize,
    /// Buffer length every layer's keys and values must have for this step.
    pub capacity: usize,
    pub mask: StepMask,
    /// Where the step's keys go when the position lives on the device instead of in
    /// `offset`: the same launches then serve every position (decoding replayed from a CUDA
    /// graph, `generate::graph`).
    pub write: Option<KvWrite>,
    /// The mask repeated for each KV head's query heads, made by the first layer that asks
    /// (see [`KvStep::grouped_mask`]).
    pub(crate) grouped: OnceCell<((usize, usize), Tensor<4, Bool>)>,
}

impl KvStep {
    /// The [`StepMask::Masked`] mask repeated for the `group` query heads of each of `kv_heads`,
    /// as rows `(head, token)`: `[batch, kv_heads, group · seq, capacity]`. The repeat is a copy
    /// (an expanded mask cannot be reshaped in place), made once a step for every layer rather
    /// than in each.
    pub fn grouped_mask(&self, kv_heads: usize, group: usize) -> Option<Tensor<4, Bool>> {
        let StepMask::Masked(mask) = &self.mask else {
            return None;
        };
        let make = || {
            let [b, _, s, t] = mask.dims();
            mask.clone().unsqueeze_dim::<5>(2).expand([b, kv_heads, group, s, t]).reshape([b, kv_heads, group * s, t])
        };
        let (key, grouped) = self.grouped.get_or_init(|| ((kv_heads, group), make()));
        Some(if *key == (kv_heads, group) { grouped.clone() } else { make() })
    }
}

/// A step's writes into the cache buffers at positions that live on the device, instead of a
/// slice at a host offset.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one a step, held by the step's inputs alone
pub enum KvWrite {
    /// `[seq]`: the slot each of the step's tokens goes to, clamped into the buffer (a capture's
    /// warm-up can step past the last token, into slots no token reads before writing them). The
    /// keys are scattered there: the write moves the step's rows alone.
    Slots(Tensor<1, Int>),
    /// `[1, 1, capacity, 1]` true at the slots this step writes, and `[capacity]` which of the
    /// step's tokens each slot takes (`None`: a one-token step): the whole buffer read and written
    /// each step (2 x 12 MB a layer for SmolLM2 at 16k tokens; `DISTILL_KV_WRITE=mask`, to measure
    /// one against the other).
    Masked { slots: Tensor<4, Bool>, rows: Option<Tensor<1, Int>> },
}

/// Whether device-positioned steps write the cache through masks (`DISTILL_KV_WRITE=mask`)
/// rather than by scattering their rows.
pub(crate) fn kv_write_by_mask() -> bool {
    static MASK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MASK.get_or_init(|| std::env::var("DISTILL_KV_WRITE").is_ok_and(|v| v.trim() == "mask"))
}

#[derive(Debug, Clone)]
pub enum StepMask {
    /// A full-length causal step on an empty cache with no padding (training, plain prefill):
    /// no mask tensor, the attention kernel applies causality itself.
    Causal,
    /// `[batch, 1, seq, capacity]`, true = masked: padding, the future, and unused slots.
    Masked(Tensor<4, Bool>),
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        Self { layers: vec![None; n_layers], valid: Vec::new(), capacity: 0, reserved: 0 }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every layer's buffers at `capacity` positions from now on, what they hold kept: a
    /// generation replayed from a captured graph writes the same buffers at every step.
    pub fn grown_to(mut self, capacity: usize) -> Self {
        for (k, v) in self.layers.iter_mut().flatten() {
            let len = k.dims()[2];
            if len < capacity {
                *k = regrown(k.clone(), len, capacity);
                *v = regrown(v.clone(), len, capacity);
            }
        }
        self.capacity = capacity;
        self.reserved = capacity;
        self
    }

    /// Drops every position from `len` on (the buffers keep their size).
    pub fn truncate(&mut self, len: usize) {
        for row in self.valid.iter_mut() {
            row.truncate(len);
        }
    }

    /// Position ids of a step's tokens as transformers derives them from the attention mask:
    /// real tokens count on from the cached ones; padding gets position 1 (transformers'
    /// `masked_fill_(mask == 0, 1)`).
    ///
    /// # Shapes
    /// - `valid`: `[batch][seq]` -> `[batch][seq]`
    pub fn positions(&self, valid: &[Vec<bool>]) -> Vec<Vec<usize>> {
        valid
            .iter()
            .enumerate()
            .map(|(r, row)| {
                let mut p = self.valid.get(r).map_or(0, |c| c.iter().filter(|&&v| v).count());
                row.iter().map(|&v| if v { p += 1; p - 1 } else { 1 }).collect()
            })
            .collect()
    }

    /// Appends this step's validity and says where its keys go and what each query may see.
    ///
    /// # Shapes
    /// - `step_valid`: `[batch][seq]`; a masked step's mask is `[batch, 1, seq, capacity]`
    pub fn begin_step(&mut self, step_valid: &[Vec<bool>], device: &Device) -> KvStep {
        let offset = self.len();
        let s = step_valid[0].len();
        if offset == 0 && step_valid.iter().all(|row| row.iter().all(|&v| v)) {
            self.valid = step_valid.to_vec();
            // Keys are stored as computed (exactly `s` long); a later step regrows them.
            self.capacity = s;
            return KvStep { offset, capacity: s, mask: StepMask::Causal, write: None, grouped: OnceCell::new() };
        }
        if self.valid.is_empty() {
            self.valid = vec![Vec::new(); step_valid.len()];
        }
        for (row, new) in self.valid.iter_mut().zip(step_valid) {
            row.extend_from_slice(new);
        }
        let end = offset + s;
        if end > self.capacity {
            self.capacity = grown_capacity(end, self.reserved);
        }
        let (b, t) = (step_valid.len(), self.capacity);
        let mut mask = Vec::with_capacity(b * s * t);
        for row in &self.valid {
            for i in 0..s {
                // A padding query would see nothing and some kernels turn an all-masked row
                // into NaN, which then leaks through 0·NaN: let every query see itself.
                let q = offset + i;
                mask.extend((0..t).map(|j| j != q && (j > q || !row[j])));
            }
        }
        let mask = Tensor::from_data(TensorData::new(mask, [b, 1, s, t]), device);
        KvStep { offset, capacity: t, mask: StepMask::Masked(mask), write: None, grouped: OnceCell::new() }
    }
}

/// `buffer`'s first `kept` positions at the front of a buffer of `capacity` (zeros after).
fn regrown(buffer: Tensor<4>, kept: usize, capacity: usize) -> Tensor<4> {
    let [b, h, _, d] = buffer.dims();
    let grown = Tensor::zeros([b, h, capacity - kept, d], (&buffer.device(), buffer.dtype()));
    Tensor::cat(vec![buffer.narrow(2, 0, kept), grown], 2)
}

/// The buffer length a step ending at `end` regrows to.
pub fn grown_capacity(end: usize, reserved: usize) -> usize {
    end.next_power_of_two().max(MIN_CAPACITY).max(reserved)
}

/// Writes a step's keys (or values) into a layer's buffer at `step.offset`, first growing the
/// buffer to `step.capacity` when it is shorter.
///
/// # Shapes
/// - `buffer`: `[batch, n_kv_heads, old capacity, head_dim]`; `new`: `[batch, n_kv_heads, seq, head_dim]`
/// - returns `[batch, n_kv_heads, step.capacity, head_dim]`
pub(crate) fn store(buffer: Option<Tensor<4>>, new: Tensor<4>, step: &KvStep) -> Tensor<4> {
    let [b, h, s, d] = new.dims();
    let buffer = match (&step.write, buffer) {
        // Held by nothing else, the buffer is written in place: the same one every step.
        (Some(KvWrite::Slots(at)), Some(buffer)) => return buffer.select_assign(2, at.clone(), new, IndexingUpdateOp::Assign),
        (Some(KvWrite::Masked { slots, rows }), Some(buffer)) => {
            let t = buffer.dims()[2];
            let values = match rows {
                Some(rows) => new.select(2, rows.clone()),
                None => new.expand([b, h, t, d]),
            };
            return buffer.mask_where(slots.clone().expand([b, h, t, d]), values);
        }
        (_, buffer) => buffer,
    };
    if step.offset == 0 && s == step.capacity {
        return new;
    }
    let buffer = match buffer {
        None => Tensor::zeros([b, h, step.capacity, d], (&new.device(), new.dtype())),
        Some(old) if old.dims()[2] < step.capacity => {
            let kept = old.dims()[2].min(step.offset);
            regrown(old, kept, step.capacity)
        }
        Some(old) => old,
    };
    buffer.slice_assign([0..b, 0..h, step.offset..step.offset + s, 0..d], new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_of(step: &KvStep) -> Vec<bool> {
        match &step.mask {
            StepMask::Masked(m) => m.clone().into_data().convert::<bool>().try_to_vec().unwrap(),
            StepMask::Causal => panic!("expected a mask"),
        }
    }

    /// Each KV head's query heads see their token's mask, row `(head, token)`; the repeat made
    /// for one grouping is not handed to another.
    #[test]
    fn the_grouped_mask_repeats_each_token_row_for_the_query_heads() {
        let device = Device::flex();
        // Left padding makes the step masked.
        let step = KvCache::new(1).begin_step(&[vec![false, true, true]], &device);
        let base = mask_of(&step); // [1, 1, 3, t]
        let t = base.len() / 3;
        for (kv_heads, group) in [(2, 3), (1, 2), (2, 3)] {
            let grouped: Vec<bool> = step.grouped_mask(kv_heads, group).unwrap().into_data().convert::<bool>().try_to_vec().unwrap();
            assert_eq!(grouped.len(), kv_heads * group * 3 * t);
            for (row, chunk) in grouped.chunks(t).enumerate() {
                assert_eq!(chunk, &base[(row % 3) * t..(row % 3 + 1) * t], "{kv_heads} x {group}, row {row}");
            }
        }
    }

    #[test]
    fn mask_is_causal_skips_padding_unused_slots_and_never_blanks_a_row() {
        let device = Device::flex();
        let mut cache = KvCache::new(1);
        // Row 0 left-padded by one.
        let step = cache.begin_step(&[vec![false, true, true], vec![true, true, true]], &device);
        assert_eq!((step.offset, step.capacity), (0, MIN_CAPACITY));
        let m = mask_of(&step);
        let row = |r: usize, q: usize| m[(r * 3 + q) * MIN_CAPACITY..][..4].to_vec();
        assert_eq!(row(0, 0), vec![false, true, true, true]);
        assert_eq!(row(0, 1), vec![true, false, true, true]);
        assert_eq!(row(0, 2), vec![true, false, false, true]);
        assert_eq!(row(1, 2), vec![false, false, false, true]);
        assert!(m.chunks(MIN_CAPACITY).all(|r| r[3..].iter().all(|&x| x)), "unused slots are masked");
        // One decode step: keys are the 3 cached positions plus the new one.
        let m = mask_of(&cache.begin_step(&[vec![true], vec![true]], &device));
        assert_eq!(m[..5], [true, false, false, false, true]);
        assert_eq!(m[MIN_CAPACITY..MIN_CAPACITY + 5], [false, false, false, false, true]);
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn unpadded_first_step_is_causal_and_later_steps_grow_by_doubling() {
        let device = Device::flex();
        let mut cache = KvCache::new(1);
        let step = cache.begin_step(&[vec![true; 100]], &device);
        assert!(matches!(step.mask, StepMask::Causal));
        let k = Tensor::<4>::ones([1, 1, 100, 2], &device);
        let buffer = store(None, k, &step);
        assert_eq!(buffer.dims()[2], 100);
        let step = cache.begin_step(&[vec![true]], &device);
        assert_eq!((step.offset, step.capacity), (100, 128));
        let buffer = store(Some(buffer), Tensor::<4>::full([1, 1, 1, 2], 2.0, &device), &step);
        let v: Vec<f32> = buffer.into_data().try_to_vec().unwrap();
        assert_eq!(v.len(), 256);
        assert_eq!((v[199], v[200], v[201], v[202]), (1.0, 2.0, 2.0, 0.0));
        cache.truncate(50);
        assert_eq!(cache.begin_step(&[vec![true]], &device).offset, 50);
    }
}

//! ggml tensor types and their dequantizers (block layouts as in ggml's `ggml-quants.c`).

use half::{bf16, f16};

/// QK_K: elements per super-block of the k-quants.
const QK_K: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q4K,
    Q6K,
    BF16,
}

impl GgmlType {
    pub fn from_u32(t: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match t {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            8 => Q8_0,
            12 => Q4K,
            14 => Q6K,
            30 => BF16,
            _ => return None,
        })
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 | F16 | BF16 => 1,
            Q4_0 | Q4_1 | Q8_0 => 32,
            Q4K | Q6K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 => 4,
            F16 | BF16 => 2,
            Q4_0 => 2 + 16,
            Q4_1 => 2 + 2 + 16,
            Q8_0 => 2 + 32,
            Q4K => 2 + 2 + 12 + QK_K / 2,
            Q6K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
        }
    }

    /// Bytes taken by `numel` elements; `None` if not a whole number of blocks or on overflow.
    pub fn byte_len(self, numel: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        numel.is_multiple_of(bs).then(|| (numel / bs).checked_mul(self.type_size() as u64))?
    }

    /// Dequantizes `bytes` (a whole number of blocks, checked by the caller) into f32.
    pub fn dequantize(self, bytes: &[u8]) -> Vec<f32> {
        use GgmlType::*;
        let blocks = bytes.chunks_exact(self.type_size());
        let mut out = Vec::with_capacity(blocks.len() * self.block_size());
        match self {
            F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            F16 => out.extend(blocks.map(|b| f16_at(b, 0))),
            BF16 => out.extend(blocks.map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
            Q4_0 => blocks.for_each(|b| q4_0(b, &mut out)),
            Q4_1 => blocks.for_each(|b| q4_1(b, &mut out)),
            Q8_0 => blocks.for_each(|b| q8_0(b, &mut out)),
            Q4K => blocks.for_each(|b| q4_k(b, &mut out)),
            Q6K => blocks.for_each(|b| q6_k(b, &mut out)),
        }
        out
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// `{ d: f16, qs: [u8; 16] }`: low nibbles are elements 0..16, high nibbles 16..32; x = (q-8)·d.
fn q4_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    out.extend(qs.iter().map(|q| ((q & 0xF) as i32 - 8) as f32 * d));
    out.extend(qs.iter().map(|q| ((q >> 4) as i32 - 8) as f32 * d));
}

/// `{ d: f16, m: f16, qs: [u8; 16] }`: x = q·d + m.
fn q4_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qs = &b[4..20];
    out.extend(qs.iter().map(|q| (q & 0xF) as f32 * d + m));
    out.extend(qs.iter().map(|q| (q >> 4) as f32 * d + m));
}

/// `{ d: f16, qs: [i8; 32] }`: x = q·d.
fn q8_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
}

/// The 6-bit scale and min of sub-block `j` packed in Q4_K's 12 scale bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// `{ d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128] }`: 8 sub-blocks of 32,
/// x = d·sc·q - dmin·m.
fn q4_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..16 + QK_K / 2];
    for (chunk, q) in qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        out.extend(q.iter().map(|&x| d1 * (x & 0xF) as f32 - m1));
        out.extend(q.iter().map(|&x| d2 * (x >> 4) as f32 - m2));
    }
}

/// `{ ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16 }`: 6-bit q = 4 low bits from ql,
/// 2 high bits from qh; x = d·scale·(q - 32).
fn q6_k(b: &[u8], out: &mut Vec<f32>) {
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for half in 0..2 {
        let (ql, qh, sc) = (&ql[64 * half..], &qh[32 * half..], &sc[8 * half..]);
        let mut y = [0f32; 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let s = |k: usize| d * (sc[is + k] as i8) as f32;
            y[l] = s(0) * q1 as f32;
            y[l + 32] = s(2) * q2 as f32;
            y[l + 64] = s(4) * q3 as f32;
            y[l + 96] = s(6) * q4 as f32;
        }
        out.extend_from_slice(&y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_0_block() {
        let mut b = vec![];
        b.extend(h(0.5));
        b.extend((0..16u8).map(|i| i | ((15 - i) << 4)));
        let y = GgmlType::Q4_0.dequantize(&b);
        assert_eq!(y.len(), 32);
        assert_eq!(y[0], -4.0); // (0-8)*0.5
        assert_eq!(y[15], 3.5); // (15-8)*0.5
        assert_eq!(y[16], 3.5); // high nibble of byte 0 = 15
        assert_eq!(y[31], -4.0);
    }

    #[test]
    fn q4_1_block() {
        let mut b = vec![];
        b.extend(h(2.0));
        b.extend(h(-1.0));
        b.extend((0..16u8).map(|i| i | (1 << 4)));
        let y = GgmlType::Q4_1.dequantize(&b);
        assert_eq!(&y[..3], &[-1.0, 1.0, 3.0]);
        assert!(y[16..].iter().all(|&v| v == 1.0));
    }

    #[test]
    fn q8_0_block() {
        let mut b = vec![];
        b.extend(h(0.25));
        b.extend((0..32i8).map(|i| (i - 16) as u8));
        let y = GgmlType::Q8_0.dequantize(&b);
        assert_eq!(y[0], -4.0);
        assert_eq!(y[31], 3.75);
    }

    #[test]
    fn q4_k_block() {
        // Sub-block scales 1..=8 and mins 0..8, packed as ggml packs them.
        let (sc, mn): (Vec<u8>, Vec<u8>) = ((1..=8).collect(), (0..8).collect());
        let mut s = [0u8; 12];
        s[..4].copy_from_slice(&sc[..4]);
        s[4..8].copy_from_slice(&mn[..4]);
        for j in 4..8 {
            s[j + 4] = (sc[j] & 0xF) | ((mn[j] & 0xF) << 4);
            s[j - 4] |= (sc[j] >> 4) << 6;
            s[j] |= (mn[j] >> 4) << 6;
        }
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &s), (sc[j], mn[j]));
        }
        let mut b = vec![];
        b.extend(h(1.0));
        b.extend(h(0.5));
        b.extend(s);
        b.extend(std::iter::repeat_n(0x53u8, 128)); // low nibble 3, high nibble 5
        let y = GgmlType::Q4K.dequantize(&b);
        assert_eq!(y.len(), 256);
        assert_eq!(y[0], 1.0 * 1.0 * 3.0 - 0.5 * 0.0); // sub-block 0
        assert_eq!(y[32], 2.0 * 5.0 - 0.5 * 1.0); // sub-block 1: high nibbles
        assert_eq!(y[255], 8.0 * 5.0 - 0.5 * 7.0); // sub-block 7
    }

    #[test]
    fn q6_k_block() {
        let mut b = vec![0u8; 210];
        b[..128].fill(0x21); // low 4 bits: 1 (elements l, l+32), high: 2 (l+64, l+96)
        b[128..192].fill(0b10_01_00_11); // 2-bit highs: 3, 0, 1, 2
        for (i, s) in b[192..208].iter_mut().enumerate() {
            *s = (i as i8 - 8) as u8;
        }
        b[208..210].copy_from_slice(&h(0.5));
        let y = GgmlType::Q6K.dequantize(&b);
        let q = |lo: i32, hi: i32| (lo | (hi << 4)) - 32;
        assert_eq!(y[0], 0.5 * -8.0 * q(1, 3) as f32);
        assert_eq!(y[32], 0.5 * -6.0 * q(1, 0) as f32);
        assert_eq!(y[64], 0.5 * -4.0 * q(2, 1) as f32);
        assert_eq!(y[96 + 16], -0.5 * q(2, 2) as f32);
        assert_eq!(y[128], 0.5 * 0.0 * q(1, 3) as f32);
    }

    #[test]
    fn sizes_reject_partial_blocks() {
        assert_eq!(GgmlType::Q4_0.byte_len(64), Some(36));
        assert_eq!(GgmlType::Q4_0.byte_len(33), None);
        assert_eq!(GgmlType::Q6K.type_size(), 210);
        assert_eq!(GgmlType::Q4K.type_size(), 144);
        assert_eq!(GgmlType::from_u32(99), None);
    }
}

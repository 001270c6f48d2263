//! Which layers keep attention: the paper's interleaving.

/// Attention layers for a fraction of `n_layers`, as the paper interleaves them (METHOD.md 2):
/// a fraction `1/k` keeps attention at every k-th layer, counting from the top of each block
/// (`k-1, 2k-1, ...`: 50% keeps the odd layers); `1 - 1/k` turns every k-th layer into Mamba
/// (`0, k, 2k, ...`: 75% attention). 0 and 1 are all-Mamba and the teacher. Other fractions
/// have no interleaving of this form: `None` (give `attention_layers` instead).
pub fn interleaved_attention_layers(n_layers: usize, fraction: f64) -> Option<Vec<usize>> {
    let whole = |v: f64| (v.round() >= 1.0 && (v - v.round()).abs() < 1e-9).then(|| v.round() as usize);
    if fraction == 0.0 {
        return Some(Vec::new());
    }
    if fraction == 1.0 {
        return Some((0..n_layers).collect());
    }
    if !(0.0..1.0).contains(&fraction) {
        return None;
    }
    if let Some(k) = whole(1.0 / fraction) {
        return Some((0..n_layers).filter(|i| i % k == k - 1).collect());
    }
    let k = whole(1.0 / (1.0 - fraction))?;
    Some((0..n_layers).filter(|i| i % k != 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_follow_the_papers_schedule_for_32_layers() {
        let odd: Vec<usize> = (1..32).step_by(2).collect();
        assert_eq!(interleaved_attention_layers(32, 0.5).unwrap(), odd);
        assert_eq!(interleaved_attention_layers(32, 0.25).unwrap(), (3..32).step_by(4).collect::<Vec<_>>());
        assert_eq!(interleaved_attention_layers(32, 0.125).unwrap(), vec![7, 15, 23, 31]);
        // 25% Mamba at [0, 4, .., 28].
        let a = interleaved_attention_layers(32, 0.75).unwrap();
        assert_eq!((0..32).filter(|i| !a.contains(i)).collect::<Vec<_>>(), (0..32).step_by(4).collect::<Vec<_>>());
        assert_eq!(interleaved_attention_layers(32, 0.0).unwrap(), Vec::<usize>::new());
        assert_eq!(interleaved_attention_layers(4, 1.0).unwrap(), vec![0, 1, 2, 3]);
        assert!(interleaved_attention_layers(32, 0.4).is_none());
        assert!(interleaved_attention_layers(32, 1.5).is_none());
    }
}

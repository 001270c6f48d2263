//! Deterministic train/validation splits: a row goes to validation by a hash of its content,
//! so the split survives reordering and appending rows.

/// FNV-1a, fixed across platforms and releases (unlike `std`'s hasher).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Whether `row` belongs to the validation split holding `fraction` of the rows.
pub fn in_validation(row: &serde_json::Value, fraction: f64, seed: u64) -> bool {
    let h = fnv1a(format!("{seed}:{row}").as_bytes());
    (h % 1_000_000) as f64 / 1_000_000.0 < fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stable_and_near_its_fraction() {
        let rows: Vec<serde_json::Value> = (0..2000).map(|i| serde_json::json!({ "text": format!("row {i}") })).collect();
        let val: Vec<bool> = rows.iter().map(|r| in_validation(r, 0.1, 0)).collect();
        let n = val.iter().filter(|v| **v).count();
        assert!((150..250).contains(&n), "{n}");
        assert_eq!(val, rows.iter().map(|r| in_validation(r, 0.1, 0)).collect::<Vec<_>>());
    }
}

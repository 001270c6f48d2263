//! Axis ticks at "nice" numbers (1, 2, 5 times a power of ten) and compact number labels.

/// About `target` ticks covering `[lo, hi]`, at multiples of a nice step.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A short label: `0.0003` -> `3e-4`, `12000` -> `12k`, `2.5` -> `2.5`.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e9 {
        format!("{}G", trim(v / 1e9))
    } else if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else if a < 1e-3 {
        let exp = a.log10().floor() as i32;
        format!("{}e{}", trim(v / 10f64.powi(exp)), exp)
    } else {
        trim(v)
    }
}

/// At most 4 significant digits, no trailing zeros.
fn trim(v: f64) -> String {
    let a = v.abs();
    let decimals = if a >= 1000.0 { 0 } else if a >= 100.0 { 1 } else if a >= 10.0 { 2 } else { 3 };
    let s = format!("{v:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_inside() {
        assert_eq!(nice_ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = nice_ticks(0.13, 0.91, 4);
        assert!(t.iter().all(|v| (0.13..=0.91).contains(v)));
        assert_eq!(nice_ticks(3.0, 3.0, 5), vec![3.0]);
    }

    #[test]
    fn labels_are_compact() {
        assert_eq!(fmt_num(0.0003), "3e-4");
        assert_eq!(fmt_num(12000.0), "12k");
        assert_eq!(fmt_num(2.5), "2.5");
        assert_eq!(fmt_num(100_000.0), "100k");
        assert_eq!(fmt_num(1.03), "1.03");
        assert_eq!(fmt_num(0.0), "0");
    }
}

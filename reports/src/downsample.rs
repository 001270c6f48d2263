//! Min/max-per-bucket downsampling: a 100k-step curve becomes a few hundred points that
//! still show every spike, because each bucket keeps its lowest and its highest point.

/// Keeps at most `2 * buckets + 2` points of `points` (sorted by x): the first and last point,
/// and each bucket's minimum and maximum in x order. Non-finite values are dropped first.
pub fn min_max(points: &[(f64, f64)], buckets: usize) -> Vec<(f64, f64)> {
    let finite: Vec<(f64, f64)> =
        points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let buckets = buckets.max(1);
    if finite.len() <= 2 * buckets + 2 {
        return finite;
    }
    let mut out = Vec::with_capacity(2 * buckets + 2);
    let n = finite.len();
    out.push(finite[0]);
    for b in 0..buckets {
        // Buckets split the interior by index: steps are near-uniform, and this is O(n).
        let lo = 1 + b * (n - 2) / buckets;
        let hi = 1 + (b + 1) * (n - 2) / buckets;
        let chunk = &finite[lo..hi];
        let Some((imin, imax)) = extremes(chunk) else { continue };
        let (first, second) = if imin <= imax { (imin, imax) } else { (imax, imin) };
        out.push(chunk[first]);
        if second != first {
            out.push(chunk[second]);
        }
    }
    out.push(finite[n - 1]);
    out
}

/// Indexes of the minimum and maximum y in `chunk`.
fn extremes(chunk: &[(f64, f64)]) -> Option<(usize, usize)> {
    if chunk.is_empty() {
        return None;
    }
    let (mut imin, mut imax) = (0, 0);
    for (i, p) in chunk.iter().enumerate() {
        if p.1 < chunk[imin].1 {
            imin = i;
        }
        if p.1 > chunk[imax].1 {
            imax = i;
        }
    }
    Some((imin, imax))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_series_pass_through() {
        let pts = vec![(0.0, 1.0), (1.0, 2.0), (2.0, f64::NAN)];
        assert_eq!(min_max(&pts, 10), vec![(0.0, 1.0), (1.0, 2.0)]);
    }

    #[test]
    fn keeps_spikes_and_ends() {
        let mut pts: Vec<(f64, f64)> = (0..100_000).map(|i| (i as f64, 1.0)).collect();
        pts[54_321].1 = 50.0;
        pts[77_777].1 = -3.0;
        let out = min_max(&pts, 100);
        assert!(out.len() <= 202, "{}", out.len());
        assert_eq!(out.first(), Some(&(0.0, 1.0)));
        assert_eq!(out.last(), Some(&(99_999.0, 1.0)));
        assert!(out.contains(&(54_321.0, 50.0)));
        assert!(out.contains(&(77_777.0, -3.0)));
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "x stays sorted");
    }
}

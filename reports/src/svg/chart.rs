//! Line charts with axes, ticks, labels and a legend, sized by a viewBox so they scale on
//! screen and print crisp. Series are expected already downsampled.

use std::fmt::Write;

use serde::Serialize;

use super::{COLORS, DASHES, clip, esc, fmt_num, nice_ticks};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Series {
    pub name: String,
    /// (x, y), sorted by x.
    pub points: Vec<(f64, f64)>,
}

pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series],
}

const W: f64 = 640.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const PLOT_H: f64 = 200.0;
/// Series with at most this many points also get a marker per point.
const MARKERS_UP_TO: usize = 40;

impl LineChart<'_> {
    pub fn render(&self) -> String {
        let per_row = 3;
        let rows = self.series.len().div_ceil(per_row).max(1);
        let h = TOP + PLOT_H + 50.0 + 18.0 * rows as f64;
        let (bottom, right) = (TOP + PLOT_H, W - RIGHT);
        let (xr, yr) = self.ranges();
        let sx = |x: f64| LEFT + (x - xr.0) / (xr.1 - xr.0) * (right - LEFT);
        let sy = |y: f64| bottom - (y - yr.0) / (yr.1 - yr.0) * PLOT_H;
        let mut s = String::with_capacity(4096);
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {W} {h}" role="img" aria-label="{t}"><title>{t}</title><text class="chart-title" x="{LEFT}" y="18">{t}</text>"#,
            t = esc(self.title)
        );
        // Grid and tick labels first, so the data draws on top.
        for y in nice_ticks(yr.0, yr.1, 5) {
            let py = sy(y);
            let _ = write!(
                s,
                r#"<line class="grid" x1="{LEFT}" y1="{py:.1}" x2="{right}" y2="{py:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0, py + 4.0, fmt_num(y)
            );
        }
        // Integer x (steps, K) gets integer ticks only: no "K = 2.5".
        let int_x = self.series.iter().flat_map(|s| &s.points).all(|p| p.0.fract() == 0.0);
        for x in nice_ticks(xr.0, xr.1, 6).into_iter().filter(|x| !int_x || x.fract() == 0.0) {
            let px = sx(x);
            let _ = write!(
                s,
                r#"<line class="tickmark" x1="{px:.1}" y1="{bottom}" x2="{px:.1}" y2="{:.1}"/><text class="tick" x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                bottom + 5.0, bottom + 18.0, fmt_num(x)
            );
        }
        let _ = write!(
            s,
            r#"<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}"/><line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}"/><text class="axis-label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text class="axis-label" transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (LEFT + right) / 2.0, bottom + 36.0, esc(self.x_label), TOP + PLOT_H / 2.0, esc(self.y_label)
        );
        for (i, ser) in self.series.iter().enumerate() {
            let (color, dash) = (COLORS[i % COLORS.len()], DASHES[i % DASHES.len()]);
            let _ = write!(
                s,
                r#"<polyline class="series" data-series="{}" data-n="{}" fill="none" stroke="{color}" stroke-width="1.5" stroke-dasharray="{dash}" points=""#,
                esc(&ser.name), ser.points.len()
            );
            for &(x, y) in &ser.points {
                let _ = write!(s, "{:.1},{:.1} ", sx(x), sy(y));
            }
            s.push_str("\"/>");
            if ser.points.len() <= MARKERS_UP_TO {
                for &(x, y) in &ser.points {
                    let _ = write!(s, r#"<circle class="point" cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#, sx(x), sy(y));
                }
            }
            let lx = LEFT + (i % per_row) as f64 * 190.0;
            let ly = bottom + 56.0 + (i / per_row) as f64 * 18.0;
            let _ = write!(
                s,
                r#"<g class="legend"><line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="2.5" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}">{}</text></g>"#,
                lx + 24.0, lx + 30.0, ly + 4.0, esc(&clip(&ser.name, 26))
            );
        }
        s.push_str("</svg>");
        s
    }

    /// Data ranges, widened when flat so a constant series still draws mid-plot.
    fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let pts = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if x0 > x1 {
            return ((0.0, 1.0), (0.0, 1.0));
        }
        let widen = |a: f64, b: f64| if b > a { (a, b) } else { let d = a.abs().max(1.0) * 0.1; (a - d, b + d) };
        let (y0, y1) = widen(y0, y1);
        let pad = (y1 - y0) * 0.05;
        (widen(x0, x1), (y0 - pad, y1 + pad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(series: &[Series]) -> String {
        LineChart { title: "Loss <b>", x_label: "step", y_label: "loss", series }.render()
    }

    #[test]
    fn draws_axes_ticks_legend_and_points() {
        let s = vec![
            Series { name: "loss".into(), points: (0..100).map(|i| (i as f64, 1.0 / (1.0 + i as f64))).collect() },
            Series { name: "loss/kl".into(), points: vec![(0.0, 0.5), (99.0, 0.1)] },
        ];
        let svg = chart(&s);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains(r#"data-n="100""#) && svg.contains(r#"data-series="loss/kl""#));
        assert!(svg.matches(r#"class="tick""#).count() >= 6);
        assert_eq!(svg.matches(r#"<g class="legend">"#).count(), 2);
        assert_eq!(svg.matches("<circle").count(), 2, "markers only on short series");
        assert!(svg.contains("Loss &lt;b&gt;"));
    }

    #[test]
    fn integer_x_gets_integer_ticks_only() {
        let s = vec![Series { name: "speedup".into(), points: vec![(1.0, 1.4), (2.0, 1.6), (3.0, 1.7), (4.0, 1.75)] }];
        let svg = LineChart { title: "K", x_label: "K", y_label: "x", series: &s }.render();
        assert!(svg.contains(r#"text-anchor="middle">2</text>"#));
        assert!(!svg.contains(r#"text-anchor="middle">1.5</text>"#));
    }

    #[test]
    fn empty_and_flat_series_do_not_divide_by_zero() {
        assert!(!chart(&[]).contains("NaN"));
        let flat = vec![Series { name: "lr".into(), points: vec![(5.0, 3e-4), (5.0, 3e-4)] }];
        assert!(!chart(&flat).contains("NaN") && !chart(&flat).contains("inf"));
    }
}

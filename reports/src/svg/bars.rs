//! Horizontal bar charts: one bar per labelled value, colored by group (ours vs the paper).

use std::fmt::Write;

use super::{COLORS, clip, esc, fmt_num, nice_ticks};

const W: f64 = 640.0;
const LEFT: f64 = 170.0;
const RIGHT: f64 = 56.0;
const BAR: f64 = 16.0;

/// `bars` are (label, value, group); `groups` names the groups for the legend.
pub fn bar_chart(title: &str, x_label: &str, bars: &[(String, f64, usize)], groups: &[&str]) -> String {
    let top = 30.0 + if groups.len() > 1 { 18.0 } else { 0.0 };
    let bottom = top + bars.len() as f64 * (BAR + 6.0) + 4.0;
    let h = bottom + 40.0;
    let right = W - RIGHT;
    let max = bars.iter().map(|b| b.1).filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    let max = if max > 0.0 { max * 1.05 } else { 1.0 };
    let sx = |v: f64| LEFT + v.clamp(0.0, max) / max * (right - LEFT);
    let mut s = String::with_capacity(2048);
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart bars" viewBox="0 0 {W} {h}" role="img" aria-label="{t}"><title>{t}</title><text class="chart-title" x="8" y="18">{t}</text>"#,
        t = esc(title)
    );
    if groups.len() > 1 {
        for (i, g) in groups.iter().enumerate() {
            let lx = LEFT + i as f64 * 140.0;
            let _ = write!(
                s,
                r#"<g class="legend"><rect x="{lx}" y="28" width="12" height="10" fill="{}"/><text x="{:.1}" y="37">{}</text></g>"#,
                COLORS[i % COLORS.len()], lx + 16.0, esc(g)
            );
        }
    }
    for t in nice_ticks(0.0, max, 5) {
        let px = sx(t);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{bottom}"/><text class="tick" x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            bottom + 14.0, fmt_num(t)
        );
    }
    for (i, (label, v, g)) in bars.iter().enumerate() {
        let y = top + 4.0 + i as f64 * (BAR + 6.0);
        let wdt = (sx(*v) - LEFT).max(0.0);
        let _ = write!(
            s,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}<title>{}</title></text><rect class="bar" data-value="{v}" x="{LEFT}" y="{y:.1}" width="{wdt:.1}" height="{BAR}" fill="{}"/><text class="tick" x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT - 6.0, y + 12.0, esc(&clip(label, 24)), esc(label),
            COLORS[g % COLORS.len()], LEFT + wdt + 4.0, y + 12.0, fmt_num(*v)
        );
    }
    let _ = write!(
        s,
        r#"<line class="axis" x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{bottom}"/><text class="axis-label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text></svg>"#,
        (LEFT + right) / 2.0, bottom + 32.0, esc(x_label)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rect_per_bar_and_a_legend_for_groups() {
        let bars = vec![("ours <50%>".to_string(), 1.04, 0), ("paper".to_string(), 1.03, 1)];
        let svg = bar_chart("PPL ratio", "ratio", &bars, &["ours", "paper"]);
        assert_eq!(svg.matches(r#"class="bar""#).count(), 2);
        assert_eq!(svg.matches(r#"<g class="legend">"#).count(), 2);
        assert!(svg.contains("ours &lt;50%&gt;"));
        assert!(!bar_chart("x", "y", &[], &[]).contains("NaN"));
    }
}

//! SVG drawn by us: line charts, bar charts and the stage DAG. Every string that reaches an
//! SVG goes through [`esc`], because these strings are inserted into the page as trusted markup.

mod bars;
mod chart;
mod dag;
mod ticks;

pub use bars::bar_chart;
pub use chart::{LineChart, Series};
pub use dag::{DagNode, dag_svg};
pub use ticks::{fmt_num, nice_ticks};

/// Escapes text for SVG/HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Okabe-Ito colors: distinguishable with color-blindness; dashes tell series apart on paper.
pub const COLORS: [&str; 8] =
    ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];
pub const DASHES: [&str; 4] = ["", "6 3", "2 2", "8 3 2 3"];

/// Cuts a label to `max` characters with an ellipsis (the full text goes in a `<title>`).
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(esc("<a href=\"x\" b='y'>&</a>"), "&lt;a href=&quot;x&quot; b=&#39;y&#39;&gt;&amp;&lt;/a&gt;");
    }

    #[test]
    fn clips_on_char_boundaries() {
        assert_eq!(clip("ééééé", 3), "éé…");
        assert_eq!(clip("abc", 3), "abc");
    }
}

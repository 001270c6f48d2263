//! Template filters for numbers: `num`, `dur`, `bytes`, `pct`. Missing values print as a dash.

use minijinja::{Environment, Value};

use crate::svg::fmt_num;

pub fn register(env: &mut Environment<'static>) {
    env.add_filter("num", |v: Value| with_f64(&v, fmt_num));
    env.add_filter("dur", |v: Value| with_f64(&v, fmt_duration));
    env.add_filter("bytes", |v: Value| with_f64(&v, fmt_bytes));
    env.add_filter("pct", |v: Value| with_f64(&v, |p| format!("{}{}%", if p > 0.0 { "+" } else { "" }, fmt_num(p))));
}

fn with_f64(v: &Value, f: impl Fn(f64) -> String) -> String {
    match f64::try_from(v.clone()) {
        Ok(x) if !v.is_none() && !v.is_undefined() => f(x),
        _ => "—".into(),
    }
}

/// `12.5` -> `12.5 s`, `3725` -> `1h 02m 05s`.
pub fn fmt_duration(s: f64) -> String {
    if s < 60.0 {
        return format!("{} s", fmt_num((s * 10.0).round() / 10.0));
    }
    let t = s.round() as u64;
    let (h, m, sec) = (t / 3600, t / 60 % 60, t % 60);
    if h > 0 { format!("{h}h {m:02}m {sec:02}s") } else { format!("{m}m {sec:02}s") }
}

/// `2_470_000_000` -> `2.47 GB`.
pub fn fmt_bytes(b: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{} {}", fmt_num((v * 100.0).round() / 100.0), units[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_durations_and_sizes() {
        assert_eq!(fmt_duration(12.5), "12.5 s");
        assert_eq!(fmt_duration(3725.0), "1h 02m 05s");
        assert_eq!(fmt_duration(61.0), "1m 01s");
        assert_eq!(fmt_bytes(2_470_000_000.0), "2.47 GB");
        assert_eq!(fmt_bytes(12.0), "12 B");
    }

    #[test]
    fn missing_values_are_a_dash() {
        assert_eq!(with_f64(&Value::from(()), fmt_num), "—");
        assert_eq!(with_f64(&Value::UNDEFINED, fmt_num), "—");
        assert_eq!(with_f64(&Value::from(1.5), fmt_num), "1.5");
    }
}

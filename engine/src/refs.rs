//! `@stage` and `@stage/output` references, the way stages name each other's outputs.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    pub stage: String,
    pub output: Option<String>,
}

impl Reference {
    /// Parses `@name`, `@name/output`, `@fam[a=1,b=2]/out`; `None` if `s` is no reference.
    pub fn parse(s: &str) -> Option<Reference> {
        let body = s.strip_prefix('@')?;
        // A member name's brackets may hold anything, nested brackets included
        // (`heldout[distill[hybrid50]]`).
        let name_end = match body.find('[') {
            Some(open) if body[..open].find('/').is_none() => open + closing_bracket(&body[open..])? + 1,
            _ => body.find('/').unwrap_or(body.len()),
        };
        let stage = body[..name_end].to_string();
        if stage.is_empty() {
            return None;
        }
        let rest = &body[name_end..];
        let output = match rest.strip_prefix('/') {
            Some(o) if !o.is_empty() => Some(o.to_string()),
            Some(_) => return None,
            None if rest.is_empty() => None,
            None => return None,
        };
        Some(Reference { stage, output })
    }
}

/// Index of the `]` that closes the `[` at the start of `s`.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.output {
            Some(o) => write!(f, "@{}/{}", self.stage, o),
            None => write!(f, "@{}", self.stage),
        }
    }
}

/// Every string in a JSON value that starts with `@`, with its dotted path.
pub fn find_references(v: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::String(s) if s.starts_with('@') => out.push((path.to_string(), s.clone())),
        serde_json::Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                find_references(x, &format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                find_references(x, &p, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(stage: &str, output: Option<&str>) -> Option<Reference> {
        Some(Reference { stage: stage.into(), output: output.map(Into::into) })
    }

    #[test]
    fn parses_members_and_outputs() {
        assert_eq!(Reference::parse("@teacher"), r("teacher", None));
        assert_eq!(Reference::parse("@corpus/heldout"), r("corpus", Some("heldout")));
        assert_eq!(Reference::parse("@d[3]"), r("d[3]", None));
        assert_eq!(Reference::parse("@s[a=1,b=x/y]/model"), r("s[a=1,b=x/y]", Some("model")));
        assert_eq!(Reference::parse("@p/data/train.jsonl"), r("p", Some("data/train.jsonl")));
        assert_eq!(Reference::parse("@h[d[x]]/m"), r("h[d[x]]", Some("m")));
        assert_eq!(Reference::parse("teacher"), None);
        assert_eq!(Reference::parse("@"), None);
        assert_eq!(Reference::parse("@x/"), None);
        assert_eq!(Reference::parse("@x[1]y"), None);
    }
}

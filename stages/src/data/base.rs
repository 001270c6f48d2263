//! Bad-row accounting and the data error type.

use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{what}: {bad} of {total} rows are bad ({counts:?}); fix the data or raise max_bad_fraction")]
    MostlyBad { what: String, bad: usize, total: usize, counts: BTreeMap<String, usize> },
    #[error("{what}: no usable rows among {total} ({counts:?})")]
    Empty { what: String, total: usize, counts: BTreeMap<String, usize> },
    #[error(transparent)]
    Stage(#[from] crate::Error),
}

/// Rows skipped, by reason (`missing_field`, `bad_role`, `empty_text`, `prompt_too_long`...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BadRows {
    pub total: usize,
    pub counts: BTreeMap<String, usize>,
}

impl BadRows {
    pub fn seen(&mut self) {
        self.total += 1;
    }

    pub fn bad(&mut self, reason: &str) {
        *self.counts.entry(reason.to_string()).or_default() += 1;
    }

    pub fn bad_count(&self) -> usize {
        self.counts.values().sum()
    }

    /// Fails when more than `max_fraction` of the rows were bad, or none was good.
    pub fn check(&self, what: &str, max_fraction: f64) -> Result<(), DataError> {
        let bad = self.bad_count();
        if self.total == bad {
            return Err(DataError::Empty { what: what.to_string(), total: self.total, counts: self.counts.clone() });
        }
        if bad as f64 > max_fraction * self.total as f64 {
            return Err(DataError::MostlyBad { what: what.to_string(), bad, total: self.total, counts: self.counts.clone() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mostly_bad_dataset_fails_with_its_counts() {
        let mut b = BadRows::default();
        for i in 0..10 {
            b.seen();
            if i < 6 {
                b.bad(if i % 2 == 0 { "bad_role" } else { "empty_text" });
            }
        }
        assert!(b.check("d", 0.7).is_ok());
        let e = b.check("d", 0.5).unwrap_err().to_string();
        assert!(e.contains("6 of 10") && e.contains("bad_role") && e.contains("empty_text"), "{e}");
    }
}

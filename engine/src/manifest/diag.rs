//! Manifest errors rendered like a compiler's: `file:line:column`, the offending line and a
//! caret under the culprit.

use std::fmt;
use std::path::PathBuf;

use codespan_reporting::diagnostic::{Diagnostic, Label};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term::{self, Config};

use super::node::{FileId, Span};

/// Every text a manifest was assembled from: files, included files, `--set` arguments.
#[derive(Clone, Default)]
pub struct Sources {
    files: SimpleFiles<String, String>,
    paths: Vec<Option<PathBuf>>,
}

impl Sources {
    pub fn add_file(&mut self, path: PathBuf, display: String, text: String) -> FileId {
        self.paths.push(Some(path));
        self.files.add(display, text)
    }

    /// A text that is not a file (a `--set` argument).
    pub fn add_text(&mut self, name: String, text: String) -> FileId {
        self.paths.push(None);
        self.files.add(name, text)
    }

    pub fn text(&self, file: FileId) -> &str {
        self.files.get(file).map(|f| f.source().as_str()).unwrap_or("")
    }

    pub fn path(&self, file: FileId) -> Option<&PathBuf> {
        self.paths.get(file).and_then(Option::as_ref)
    }

    /// `name:line:column` of a span's start (1-based).
    pub fn location(&self, span: &Span) -> String {
        let Ok(f) = self.files.get(span.file) else { return "?".into() };
        let text = f.source();
        let start = span.range.start.min(text.len());
        let line = text[..start].matches('\n').count() + 1;
        let col = start - text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        format!("{}:{line}:{col}", f.name())
    }
}

/// One problem, with the places it concerns.
#[derive(Clone, Debug)]
pub struct Problem {
    pub message: String,
    pub labels: Vec<(Span, String)>,
    pub notes: Vec<String>,
}

impl Problem {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), labels: Vec::new(), notes: Vec::new() }
    }

    pub fn at(mut self, span: &Span, label: impl Into<String>) -> Self {
        self.labels.push((span.clone(), label.into()));
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

/// A manifest that cannot become a plan: one or more problems and the texts they point into.
#[derive(Clone)]
pub struct ManifestError {
    pub problems: Vec<Problem>,
    pub sources: Sources,
}

impl ManifestError {
    pub fn new(problems: Vec<Problem>, sources: &Sources) -> Self {
        Self { problems, sources: sources.clone() }
    }

    /// A problem that concerns no position in any file (a missing manifest).
    pub fn plain(message: impl Into<String>) -> Self {
        Self { problems: vec![Problem::new(message)], sources: Sources::default() }
    }

    /// The first problem's `file:line:column`, if it has a place.
    pub fn first_location(&self) -> Option<String> {
        let p = self.problems.first()?;
        let (span, _) = p.labels.first()?;
        Some(self.sources.location(span))
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = Config::default();
        for p in &self.problems {
            let labels = p
                .labels
                .iter()
                .enumerate()
                .map(|(i, (s, l))| {
                    let label = if i == 0 {
                        Label::primary(s.file, s.range.clone())
                    } else {
                        Label::secondary(s.file, s.range.clone())
                    };
                    label.with_message(l)
                })
                .collect();
            let d = Diagnostic::error()
                .with_message(&p.message)
                .with_labels(labels)
                .with_notes(p.notes.clone());
            match term::emit_into_string(&config, &self.sources.files, &d) {
                Ok(s) => f.write_str(&s)?,
                Err(_) => writeln!(f, "error: {}", p.message)?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for ManifestError {}

//! Manifests: TOML files -> a validated, expanded [`crate::plan::Plan`], with compiler-like
//! errors (`file:line:column`, the line, a caret).

mod build;
mod diag;
mod expand;
mod graph;
mod link;
mod load;
mod node;
mod raw;
mod schema;
mod template;

pub use build::{build, default_dtype};
pub use link::normalize;
pub use diag::{ManifestError, Problem, Sources};
pub use schema::manifest_schema;

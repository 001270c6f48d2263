//! Reading a stage's `params` into a typed struct, with errors that name the param.

use distill_engine::stage::{ParamError, StageError, StageSpec};
use serde::de::DeserializeOwned;

pub fn parse<T: DeserializeOwned>(spec: &StageSpec) -> Result<T, ParamError> {
    parse_value(&spec.params)
}

pub fn parse_value<T: DeserializeOwned>(params: &serde_json::Value) -> Result<T, ParamError> {
    let params = if params.is_null() { serde_json::json!({}) } else { params.clone() };
    serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "params".to_string() } else { format!("params.{path}") };
        ParamError::new(path, e.into_inner().to_string())
    })
}

/// A stage-kind error from ours.
pub fn failed(e: crate::Error) -> StageError {
    StageError::other(e)
}

/// Checks that a param is an `@stage` reference.
pub fn reference(path: &str, value: &str) -> Result<(), ParamError> {
    if value.starts_with('@') && value.len() > 1 {
        Ok(())
    } else {
        Err(ParamError::new(path, format!("expected a reference like `@teacher`, got `{value}`")))
    }
}


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

/// For kinds that compute on a device: `device` and `dtype` must name a runtime this build
/// has, checked when planning so a CPU build refuses `cuda` before anything runs.
pub fn check_runtime(spec: &StageSpec) -> Result<(), ParamError> {
    crate::runtime::Runtime::parse(&spec.device, Some(&spec.dtype)).map(|_| ()).map_err(|e| ParamError::new("device", e.to_string()))
}

/// The environment entries of such kinds' cache keys: their outputs depend on both.
pub fn runtime_env(spec: &StageSpec) -> std::collections::BTreeMap<String, String> {
    [("device".to_string(), spec.device.clone()), ("dtype".to_string(), spec.dtype.clone())].into()
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


/// Params whose every key must be a field of `T`: serde's `deny_unknown_fields` cannot be
/// used with `flatten`, and its message names no near miss, so keys are checked here first
/// and a typo (`lr_warmup`) fails with the path and the nearest valid name.
pub fn parse_strict<T: DeserializeOwned>(params: &serde_json::Value) -> Result<T, ParamError> {
    check_keys(params, &[fields_of::<T>()])?;
    parse_value(params)
}

/// A training kind's params: its own fields (`K`) and the shared optimizer's (`O`) in one flat
/// table, each parsed from its own keys; any other key is refused as in `parse_strict`.
pub fn parse_split<K: DeserializeOwned, O: DeserializeOwned>(params: &serde_json::Value) -> Result<(K, O), ParamError> {
    let (own, shared) = (fields_of::<K>(), fields_of::<O>());
    check_keys(params, &[own, shared])?;
    let part = |keep: &[&str]| match params {
        serde_json::Value::Object(m) => serde_json::Value::Object(m.iter().filter(|(k, _)| keep.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()),
        other => other.clone(),
    };
    Ok((parse_value(&part(own))?, parse_value(&part(shared))?))
}

fn check_keys(params: &serde_json::Value, known: &[&[&str]]) -> Result<(), ParamError> {
    let Some(map) = params.as_object() else { return Ok(()) }; // a non-table fails in parse_value
    let all = || known.iter().flat_map(|k| k.iter().copied());
    // The first unknown key: one error names one place in the manifest.
    let Some(key) = map.keys().find(|k| !all().any(|f| f == k.as_str())) else { return Ok(()) };
    let hint = match closest(key, all()) {
        Some(near) => format!("did you mean `{near}`?"),
        None => format!("valid params: {}", all().collect::<Vec<_>>().join(", ")),
    };
    Err(ParamError::new(format!("params.{key}"), format!("unknown param; {hint}")))
}

/// The known name nearest to `name` by edit distance, if near enough to be a typo. A name that
/// contains a known one or is contained in it (`lr_warmup`: `warmup`, `lr`) counts as near;
/// among those the closest by edit distance wins.
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (!(name.contains(k) || k.contains(name)), edit_distance(name, k), k))
        .filter(|(far, d, k)| !far || *d <= 2.max(k.len() / 3))
        .min_by_key(|(far, d, _)| (*far, *d))
        .map(|(_, _, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != *cb)).min(row[j] + 1).min(up + 1);
            diag = up;
        }
    }
    row[b.len()]
}

/// The field names `T`'s derived `Deserialize` asks for (serde's `FIELDS`), read by a
/// deserializer that records them and stops.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(self, _: &'static str, fields: &'static [&'static str], _: V) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Own {
        #[allow(dead_code)]
        student: String,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Shared {
        #[serde(default)]
        warmup: u64,
        #[serde(default)]
        lr: f64,
    }

    /// Issue 5: a typo in a training kind's params was silently ignored.
    #[test]
    fn issue_5_unknown_params_fail_with_the_nearest_name() {
        let (_, s): (Own, Shared) = parse_split(&serde_json::json!({ "student": "@s", "warmup": 3, "lr": 0.1 })).unwrap();
        assert_eq!((s.warmup, s.lr), (3, 0.1));
        let e = parse_split::<Own, Shared>(&serde_json::json!({ "student": "@s", "lr_warmup": 3 })).unwrap_err();
        assert_eq!((e.path.as_str(), e.message.as_str()), ("params.lr_warmup", "unknown param; did you mean `warmup`?"));
        let e = parse_strict::<Own>(&serde_json::json!({ "studnet": "@s" })).unwrap_err();
        assert_eq!(e.path, "params.studnet");
        assert!(e.message.contains("`student`"), "{e}");
        let e = parse_strict::<Own>(&serde_json::json!({ "student": "@s", "zzzzzzzz": 1 })).unwrap_err();
        assert_eq!(e.message, "unknown param; valid params: student");
        assert_eq!(parse_split::<Own, Shared>(&serde_json::json!({ "student": 3 })).unwrap_err().path, "params.student");
    }
}

//! JSON Schema of the manifest (`distill schema`), so taplo / Even Better TOML can complete
//! and check manifests in editors. Each kind contributes the schema of its params.

use serde_json::{Value, json};

use crate::stage::Registry;

pub fn manifest_schema(registry: &Registry) -> Value {
    let kinds: Vec<&str> = registry.names().collect();
    let per_kind: Vec<Value> = registry
        .iter()
        .map(|k| {
            json!({
                "if": { "properties": { "kind": { "const": k.kind() } }, "required": ["kind"] },
                "then": { "properties": { "params": k.params_schema() } }
            })
        })
        .collect();
    let string_list = json!({ "type": "array", "items": { "type": "string" } });
    let stage = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["kind"],
        "properties": {
            "kind": { "enum": kinds, "description": "what the stage does" },
            "description": { "type": "string" },
            "needs": { "description": "stages (or families) that must finish first", "items": { "type": "string" }, "type": "array" },
            "params": { "type": "object", "description": "validated by the kind; `@stage` / `@stage/output` strings are inputs" },
            "resources": {
                "type": "object", "additionalProperties": false,
                "properties": { "gpus": { "type": "integer", "minimum": 0 }, "threads": { "type": "integer", "minimum": 1 } }
            },
            "retries": { "type": "integer", "minimum": 0 },
            "frozen": { "type": "boolean", "description": "never rerun once it has outputs" },
            "device": { "type": "string", "pattern": "^(cpu|cuda(:[0-9]+)?)$" },
            "dtype": { "enum": ["f32", "bf16"] },
            "foreach": { "type": "array", "description": "expands into NAME[item] stages; use {{ item }} and {{ prev }}" },
            "matrix": { "type": "object", "additionalProperties": { "type": "array" }, "description": "expands into NAME[a=1,b=2] stages; use {{ matrix.a }}" },
            "start": { "type": "string", "description": "{{ prev }} of a foreach family's first member" },
            "cmd": { "type": "string", "description": "command kind: shell command; {{ params.x }} allowed" },
            "deps": string_list.clone(),
            "outs": string_list,
            "env": { "type": "object", "additionalProperties": { "type": "string" } },
            "workdir": { "type": "string" }
        },
        "allOf": per_kind
    });
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "distill manifest",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "include": { "type": "array", "items": { "type": "string" }, "description": "manifests this one extends" },
            "experiment": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "name": { "type": "string" },
                    "description": { "type": "string" },
                    "seed": { "type": "integer", "minimum": 0 },
                    "device": { "type": "string", "pattern": "^(cpu|cuda(:[0-9]+)?)$" },
                    "dtype": { "enum": ["f32", "bf16"] }
                }
            },
            "vars": { "type": "object", "description": "values usable in strings as {{ vars.name }}" },
            "stages": { "type": "object", "additionalProperties": stage }
        }
    })
}

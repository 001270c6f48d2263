//! A minimal GGUF writer (f32 tensors, scalar and array metadata): builds fixtures for tests and
//! small files for tools.

use super::value::Value;

#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    /// name, row-major shape, f32 values
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl GgufWriter {
    pub fn meta(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    pub fn tensor(&mut self, name: &str, shape: Vec<usize>, values: Vec<f32>) -> &mut Self {
        self.tensors.push((name.to_string(), shape, values));
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(b"GGUF");
        b.extend(3u32.to_le_bytes());
        b.extend((self.tensors.len() as u64).to_le_bytes());
        b.extend((self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut b, k);
            put_value(&mut b, v, true);
        }
        let mut offset = 0u64;
        for (name, shape, values) in &self.tensors {
            put_str(&mut b, name);
            b.extend((shape.len() as u32).to_le_bytes());
            for d in shape.iter().rev() {
                b.extend((*d as u64).to_le_bytes());
            }
            b.extend(0u32.to_le_bytes()); // F32
            b.extend(offset.to_le_bytes());
            offset += (values.len() * 4).next_multiple_of(32) as u64;
        }
        b.resize(b.len().next_multiple_of(32), 0);
        for (_, _, values) in &self.tensors {
            b.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            b.resize(b.len().next_multiple_of(32), 0);
        }
        b
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend(s.as_bytes());
}

/// Type tags as in the GGUF spec: 4 u32, 6 f32, 7 bool, 8 string, 9 array, 11 i64.
fn type_tag(v: &Value) -> u32 {
    match v {
        Value::Int(i) if (0..=u32::MAX as i64).contains(i) => 4,
        Value::Int(_) => 11,
        Value::U64(_) => 10,
        Value::Float(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
    }
}

fn put_value(b: &mut Vec<u8>, v: &Value, tagged: bool) {
    if tagged {
        b.extend(type_tag(v).to_le_bytes());
    }
    match v {
        Value::Int(i) if type_tag(v) == 4 => b.extend((*i as u32).to_le_bytes()),
        Value::Int(i) => b.extend(i.to_le_bytes()),
        Value::U64(u) => b.extend(u.to_le_bytes()),
        Value::Float(f) => b.extend((*f as f32).to_le_bytes()),
        Value::Bool(x) => b.push(*x as u8),
        Value::String(s) => put_str(b, s),
        Value::Array(items) => {
            // Arrays are homogeneous: the first item decides the tag (i32 for integer arrays).
            let tag = match items.first() {
                Some(Value::Int(_)) => 5,
                Some(first) => type_tag(first),
                None => 8,
            };
            b.extend(tag.to_le_bytes());
            b.extend((items.len() as u64).to_le_bytes());
            for item in items {
                match item {
                    Value::Int(i) => b.extend((*i as i32).to_le_bytes()),
                    other => put_value(b, other, false),
                }
            }
        }
    }
}

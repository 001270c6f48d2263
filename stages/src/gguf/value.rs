//! GGUF metadata values.

use super::reader::Cursor;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueType {
    U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64,
}

impl ValueType {
    pub(crate) fn read(c: &mut Cursor) -> Result<Self> {
        use ValueType::*;
        let t = c.u32()?;
        let table = [U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64];
        table.get(t as usize).copied().ok_or_else(|| c.truncated(format!("unknown metadata value type {t}")))
    }
    /// The fewest bytes one value of this type takes (for bounds checks on array lengths).
    fn min_size(self) -> usize {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    U64(u64),
    Float(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub(crate) fn read(c: &mut Cursor, ty: ValueType) -> Result<Self> {
        use ValueType as T;
        let le = |b: &[u8]| -> u64 { b.iter().rev().fold(0u64, |a, &x| (a << 8) | x as u64) };
        Ok(match ty {
            T::U8 => Value::Int(c.u8()? as i64),
            T::I8 => Value::Int(c.u8()? as i8 as i64),
            T::U16 => Value::Int(le(c.take(2, "u16")?) as i64),
            T::I16 => Value::Int(le(c.take(2, "i16")?) as u16 as i16 as i64),
            T::U32 => Value::Int(c.u32()? as i64),
            T::I32 => Value::Int(c.u32()? as i32 as i64),
            T::F32 => Value::Float(f32::from_bits(c.u32()?) as f64),
            T::Bool => Value::Bool(c.u8()? != 0),
            T::String => Value::String(c.string()?),
            T::U64 => Value::U64(c.u64()?),
            T::I64 => Value::Int(c.u64()? as i64),
            T::F64 => Value::Float(f64::from_bits(c.u64()?)),
            T::Array => {
                let item = ValueType::read(c)?;
                let n = c.count(item.min_size(), "metadata array")?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(Value::read(c, item)?);
                }
                Value::Array(items)
            }
        })
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(i) => u64::try_from(*i).ok(),
            Value::U64(u) => Some(*u),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::U64(u) => i64::try_from(*u).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            other => other.as_i64().map(|i| i as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

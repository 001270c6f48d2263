//! A TOML document as a tree of spanned nodes, so every value can be traced back to the
//! file, line and column it came from after includes, `--set` and templating.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// Index of a source in [`super::Sources`].
pub type FileId = usize;

#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub file: FileId,
    pub range: Range<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Table),
}

/// Ordered entries; a key keeps its own span for "unknown key" errors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub entries: Vec<(Key, Node)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

impl Table {
    pub fn get(&self, name: &str) -> Option<&Node> {
        self.entries.iter().find(|(k, _)| k.name == name).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.entries.iter_mut().find(|(k, _)| k.name == name).map(|(_, v)| v)
    }

    pub fn key(&self, name: &str) -> Option<&Key> {
        self.entries.iter().find(|(k, _)| k.name == name).map(|(k, _)| k)
    }

    pub fn remove(&mut self, name: &str) -> Option<(Key, Node)> {
        let i = self.entries.iter().position(|(k, _)| k.name == name)?;
        Some(self.entries.remove(i))
    }

    /// Sets a value, keeping the position of an existing key.
    pub fn insert(&mut self, key: Key, node: Node) {
        match self.entries.iter_mut().find(|(k, _)| k.name == key.name) {
            Some(slot) => slot.1 = node,
            None => self.entries.push((key, node)),
        }
    }
}

impl Node {
    pub fn as_table(&self) -> Option<&Table> {
        match &self.value {
            Value::Table(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Datetime(_) => "a datetime",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }

    /// The node at a dotted path of table keys and array indices.
    pub fn at(&self, path: &[PathSeg]) -> Option<&Node> {
        path.iter().try_fold(self, |n, seg| match (seg, &n.value) {
            (PathSeg::Key(k), Value::Table(t)) => t.get(k),
            (PathSeg::Index(i), Value::Array(a)) => a.get(*i),
            _ => None,
        })
    }

    /// Converts to JSON for serde (datetimes become strings).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::String(s) | Value::Datetime(s) => J::String(s.clone()),
            Value::Integer(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
            Value::Bool(b) => J::Bool(*b),
            Value::Array(a) => J::Array(a.iter().map(Node::to_json).collect()),
            Value::Table(t) => J::Object(
                t.entries.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect(),
            ),
        }
    }

    /// Builds a node from JSON (templated values), every part spanned at `span`.
    pub fn from_json(v: &serde_json::Value, span: &Span) -> Node {
        use serde_json::Value as J;
        let value = match v {
            J::Null => Value::String(String::new()),
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Value::String(s.clone()),
            J::Array(a) => Value::Array(a.iter().map(|x| Node::from_json(x, span)).collect()),
            J::Object(m) => Value::Table(Table {
                entries: m
                    .iter()
                    .map(|(k, x)| (Key { name: k.clone(), span: span.clone() }, Node::from_json(x, span)))
                    .collect(),
            }),
        };
        Node { value, span: span.clone() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// Converts toml's spanned parse tree.
pub fn from_toml(table: &DeTable<'_>, span: Range<usize>, file: FileId) -> Node {
    let entries = table
        .iter()
        .map(|(k, v)| {
            let key = Key { name: k.get_ref().to_string(), span: Span { file, range: k.span() } };
            (key, value_from_toml(v.get_ref(), v.span(), file))
        })
        .collect();
    Node { value: Value::Table(Table { entries }), span: Span { file, range: span } }
}

fn value_from_toml(v: &DeValue<'_>, span: Range<usize>, file: FileId) -> Node {
    let value = match v {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => {
            Value::Integer(i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).unwrap_or(i64::MAX))
        }
        DeValue::Float(f) => Value::Float(f.as_str().replace('_', "").parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::Datetime(d.to_string()),
        DeValue::Array(a) => Value::Array(
            a.iter().map(|x| value_from_toml(x.get_ref(), x.span(), file)).collect(),
        ),
        DeValue::Table(t) => return from_toml(t, span, file),
    };
    Node { value, span: Span { file, range: span } }
}

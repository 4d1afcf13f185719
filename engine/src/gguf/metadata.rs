//! GGUF metadata values and typed accessors.
//!
//! Keys are read through [`Metadata::get`] (required: a missing key is an error that
//! names it), [`Metadata::get_opt`] (absent is `None`) and [`Metadata::get_or`]
//! (absent is the default). The `arch_*` variants prefix the key with the file's
//! `general.architecture`, so a model reads `md.arch_get::<u32>("block_count")?`
//! instead of spelling out `"llama.block_count"`. A present key of the wrong type is
//! always an error, never a silent default.

use std::collections::HashMap;
use std::fmt;

use super::GgufError;

/// GGUF metadata value type ids, as stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// The type for a type id read from a file; `None` for an unknown id.
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The smallest number of bytes a value of this type occupies in a file
    /// (a string is at least its u64 length, an array its element type and count).
    /// Used to bound counts read from the file before allocating.
    pub(crate) fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }

    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }
}

/// One metadata value. Arrays may nest.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// A short type description for error messages: `u32`, `string`,
    /// `array of 262144 string`.
    pub fn type_desc(&self) -> String {
        match self {
            Value::Array(items) => match items.first() {
                Some(first) => format!("array of {} {}", items.len(), first.type_desc()),
                None => "empty array".to_string(),
            },
            other => other.value_type().name().to_string(),
        }
    }

    /// The value as an integer, for any integer type (lossless).
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Formats the value with arrays longer than `max_items` abbreviated
    /// (`[a, b, c, ... 262141 more]`) and long strings cut at `max_str` chars.
    pub fn display_abbrev(&self, max_items: usize, max_str: usize) -> String {
        let mut out = String::new();
        self.write_abbrev(&mut out, max_items, max_str);
        out
    }

    fn write_abbrev(&self, out: &mut String, max_items: usize, max_str: usize) {
        use std::fmt::Write;
        match self {
            Value::String(s) => {
                let n = s.chars().count();
                if n > max_str {
                    let cut: String = s.chars().take(max_str).collect();
                    let _ = write!(out, "{cut:?}… ({n} chars)");
                } else {
                    let _ = write!(out, "{s:?}");
                }
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().take(max_items).enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write_abbrev(out, max_items, max_str);
                }
                if items.len() > max_items {
                    let _ = write!(out, ", ... {} more", items.len() - max_items);
                }
                out.push(']');
            }
            other => {
                let _ = write!(out, "{other}");
            }
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U8(v) => write!(f, "{v}"),
            Value::I8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $v:ident),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(x: $t) -> Value {
                Value::$v(x)
            }
        })*
    };
}
value_from!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, String => String, u64 => U64, i64 => I64, f64 => F64);

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_string())
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(items: Vec<T>) -> Value {
        Value::Array(items.into_iter().map(Into::into).collect())
    }
}

/// A Rust type that a metadata value converts into. Integer types accept any
/// integer value that fits (a `u32` key reads as `u64` or `usize`, an `i32` key
/// holding 7 reads as `u32`); `f32` accepts `f32` and `f64` values.
pub trait FromValue<'a>: Sized {
    /// What the accessor expected, for error messages.
    const EXPECTED: &'static str;
    fn from_value(v: &'a Value) -> Option<Self>;
}

macro_rules! from_value_int {
    ($($t:ty),*) => {
        $(impl<'a> FromValue<'a> for $t {
            const EXPECTED: &'static str = stringify!($t);
            fn from_value(v: &'a Value) -> Option<Self> {
                v.as_i128().and_then(|x| <$t>::try_from(x).ok())
            }
        })*
    };
}
from_value_int!(u8, i8, u16, i16, u32, i32, u64, i64, usize);

impl<'a> FromValue<'a> for f32 {
    const EXPECTED: &'static str = "f32";
    fn from_value(v: &'a Value) -> Option<Self> {
        match *v {
            Value::F32(x) => Some(x),
            Value::F64(x) => Some(x as f32),
            _ => None,
        }
    }
}

impl<'a> FromValue<'a> for f64 {
    const EXPECTED: &'static str = "f64";
    fn from_value(v: &'a Value) -> Option<Self> {
        match *v {
            Value::F32(x) => Some(x.into()),
            Value::F64(x) => Some(x),
            _ => None,
        }
    }
}

impl<'a> FromValue<'a> for bool {
    const EXPECTED: &'static str = "bool";
    fn from_value(v: &'a Value) -> Option<Self> {
        match *v {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
}

impl<'a> FromValue<'a> for String {
    const EXPECTED: &'static str = "string";
    fn from_value(v: &'a Value) -> Option<Self> {
        v.as_str().map(str::to_string)
    }
}

impl<'a> FromValue<'a> for &'a str {
    const EXPECTED: &'static str = "string";
    fn from_value(v: &'a Value) -> Option<Self> {
        v.as_str()
    }
}

impl<'a> FromValue<'a> for &'a Value {
    const EXPECTED: &'static str = "any value";
    fn from_value(v: &'a Value) -> Option<Self> {
        Some(v)
    }
}

impl<'a> FromValue<'a> for &'a [Value] {
    const EXPECTED: &'static str = "array";
    fn from_value(v: &'a Value) -> Option<Self> {
        v.as_array()
    }
}

impl<'a> FromValue<'a> for Vec<&'a str> {
    const EXPECTED: &'static str = "array of string";
    fn from_value(v: &'a Value) -> Option<Self> {
        v.as_array()?.iter().map(Value::as_str).collect()
    }
}

macro_rules! from_value_vec {
    ($($t:ty => $name:literal),*) => {
        $(impl<'a> FromValue<'a> for Vec<$t> {
            const EXPECTED: &'static str = $name;
            fn from_value(v: &'a Value) -> Option<Self> {
                v.as_array()?.iter().map(<$t>::from_value).collect()
            }
        })*
    };
}
from_value_vec!(String => "array of string", f32 => "array of f32", f64 => "array of f64",
    i32 => "array of i32", u32 => "array of u32", u64 => "array of u64", i64 => "array of i64",
    usize => "array of usize", u8 => "array of u8", bool => "array of bool");

/// Ordered metadata: key -> value, in file order, with O(1) lookup.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    pub fn new() -> Metadata {
        Metadata::default()
    }

    pub(crate) fn with_capacity(n: usize) -> Metadata {
        Metadata {
            entries: Vec::with_capacity(n),
            index: HashMap::with_capacity(n),
        }
    }

    /// Sets `key`, keeping its position if it was present; returns the old value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        let key = key.into();
        let value = value.into();
        match self.index.get(&key) {
            Some(&i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
                None
            }
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.index.remove(key)?;
        let (_, v) = self.entries.remove(i);
        for idx in self.index.values_mut() {
            if *idx > i {
                *idx -= 1;
            }
        }
        Some(v)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The raw value of `key`.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// `general.architecture`, if present and a string.
    pub fn arch(&self) -> Option<&str> {
        self.value("general.architecture").and_then(Value::as_str)
    }

    /// Required key: a missing key or a value of another type is an error naming the key.
    pub fn get<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<T, GgufError> {
        self.get_opt(key)?.ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
        })
    }

    /// Optional key: absent is `Ok(None)`; present with another type is an error.
    pub fn get_opt<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<Option<T>, GgufError> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => T::from_value(v)
                .map(Some)
                .ok_or_else(|| GgufError::WrongType {
                    key: key.to_string(),
                    expected: T::EXPECTED,
                    found: v.type_desc(),
                }),
        }
    }

    /// Defaulted key: absent is `default`; present with another type is an error.
    pub fn get_or<'a, T: FromValue<'a>>(&'a self, key: &str, default: T) -> Result<T, GgufError> {
        Ok(self.get_opt(key)?.unwrap_or(default))
    }

    /// `"{arch}.{suffix}"`, with arch from `general.architecture`.
    pub fn arch_key(&self, suffix: &str) -> Result<String, GgufError> {
        let arch = self.get::<&str>("general.architecture")?;
        Ok(format!("{arch}.{suffix}"))
    }

    /// Required arch-prefixed key: `arch_get::<u32>("attention.head_count")` reads
    /// `"{arch}.attention.head_count"`.
    pub fn arch_get<'a, T: FromValue<'a>>(&'a self, suffix: &str) -> Result<T, GgufError> {
        let key = self.arch_key(suffix)?;
        self.get(&key)
    }

    /// Optional arch-prefixed key.
    pub fn arch_get_opt<'a, T: FromValue<'a>>(
        &'a self,
        suffix: &str,
    ) -> Result<Option<T>, GgufError> {
        let key = self.arch_key(suffix)?;
        self.get_opt(&key)
    }

    /// Defaulted arch-prefixed key.
    pub fn arch_get_or<'a, T: FromValue<'a>>(
        &'a self,
        suffix: &str,
        default: T,
    ) -> Result<T, GgufError> {
        let key = self.arch_key(suffix)?;
        self.get_or(&key, default)
    }
}

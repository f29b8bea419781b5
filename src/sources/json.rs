//! JSON values read straight from an API page's text, without a `serde_json::Value` tree:
//! the pieces the CRM connectors' typed readers share. A string borrows from the page when it
//! has no escapes; every reading keeps the `Value` reading's lenience (a float JSON cannot hold
//! is null, containers keep their JSON), so a typed reader reads what a `Value` reader did.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// Visitor methods for the JSON types a lenient field does not expect: they read as
/// `$make(visitor)` (nested arrays are skipped whole).
macro_rules! other_types_are {
    ($make:expr) => {
        fn visit_bool<E: ::serde::de::Error>(self, _: bool) -> std::result::Result<Self::Value, E> {
            Ok(($make)(self))
        }
        fn visit_i64<E: ::serde::de::Error>(self, _: i64) -> std::result::Result<Self::Value, E> {
            Ok(($make)(self))
        }
        fn visit_u64<E: ::serde::de::Error>(self, _: u64) -> std::result::Result<Self::Value, E> {
            Ok(($make)(self))
        }
        fn visit_f64<E: ::serde::de::Error>(self, _: f64) -> std::result::Result<Self::Value, E> {
            Ok(($make)(self))
        }
        fn visit_str<E: ::serde::de::Error>(self, _: &str) -> std::result::Result<Self::Value, E> {
            Ok(($make)(self))
        }
        fn visit_unit<E: ::serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(($make)(self))
        }
        fn visit_none<E: ::serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(($make)(self))
        }
        fn visit_seq<A: ::serde::de::SeqAccess<'de>>(
            self,
            seq: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            ::serde::de::Visitor::visit_seq(::serde::de::IgnoredAny, seq)?;
            Ok(($make)(self))
        }
    };
}

pub(crate) use other_types_are;

/// A string borrowed from the page when it has no escapes.
pub struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// One JSON value as the converter needs it: strings borrowed where they can be, containers
/// (never expected, but kept as their JSON text) as a `Value`.
#[derive(Debug, Clone, PartialEq)]
pub enum Wire<'a> {
    Null,
    Str(Cow<'a, str>),
    Bool(bool),
    Number(Number),
    Other(Value),
}

impl<'a> Wire<'a> {
    /// The value as text, as the `Value` reading gave it: numbers and containers as their
    /// JSON, booleans as `true`/`false`; `None` for null.
    pub fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Wire::Null => None,
            Wire::Str(s) => Some(Cow::Borrowed(s.as_ref())),
            Wire::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            Wire::Number(n) => Some(Cow::Owned(n.to_string())),
            Wire::Other(v) => Some(Cow::Owned(v.to_string())),
        }
    }
}

/// Reads a [`Wire`].
pub struct WireSeed;

impl<'de> DeserializeSeed<'de> for WireSeed {
    type Value = Wire<'de>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for WireSeed {
    type Value = Wire<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Self::Value, E> {
        Ok(Wire::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
        Ok(Wire::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
        Ok(Wire::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Self::Value, E> {
        // As `Value` reads it: a float JSON cannot hold is null.
        Ok(Number::from_f64(v).map_or(Wire::Null, Wire::Number))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
        Ok(Wire::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(Wire::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Self::Value, E> {
        Ok(Wire::Str(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(Wire::Null)
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(Wire::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Self::Value, A::Error> {
        Value::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Wire::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Self::Value, A::Error> {
        Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(Wire::Other)
    }
}

/// Escapes every non-ASCII character and every `/` (both occur only inside strings in
/// JSON), so strings and names take the unescaping path.
#[cfg(test)]
pub(crate) fn escaped(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    for c in json.chars() {
        if c == '/' {
            out.push_str("\\/");
        } else if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

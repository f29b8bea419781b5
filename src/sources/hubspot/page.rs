//! The wire shape of list, search and batch-read pages, read without a `serde_json::Value`
//! tree per record.
//!
//! A page is first split into its records' JSON text (kept as is for dead letters), then each
//! record is read once: its own fields into a [`Head`] that borrows from the page, its
//! properties straight into the column slots of [`Slots`] as they are met. Every lenience of
//! a `Value` reading is kept on purpose (a duplicate key: the last wins; a field of an
//! unexpected JSON type: as if absent), so a record reads the same as it always did; the
//! `records` tests hold the two readings side by side on hostile records.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::Result;
use crate::sources::http::{Call, HttpError};
use crate::sources::hubspot::HubspotError;
use crate::sources::hubspot::records::{Slots, parse_millis};
use crate::sources::json::{Text, Wire, WireSeed, other_types_are};

/// A 2xx answer's body, parsed on demand so its records can borrow from it.
pub struct PageBody {
    call: Call,
    body: Bytes,
}

/// One page: its records unparsed, and what the paging needs.
pub struct Page<'a> {
    pub results: Vec<&'a RawValue>,
    /// `paging.next.after`, a string or a number on the wire.
    pub next_after: Option<String>,
    /// Search's count of the whole result set.
    pub total: Option<u64>,
}

impl PageBody {
    pub(super) fn new(call: Call, body: Bytes) -> PageBody {
        PageBody { call, body }
    }

    /// The page, or why it is not one: JSON that does not parse is the API's fault (as any
    /// 2xx body that is not the documented JSON), a page without `results` the stream's.
    pub fn parse(&self, stream: &str) -> Result<Page<'_>> {
        let wire: PageWire<'_> =
            serde_json::from_slice(&self.body).map_err(|source| HttpError::Json {
                call: self.call.clone(),
                source,
            })?;
        let results = wire.results.ok_or_else(|| HubspotError::NoResults {
            stream: stream.to_string(),
        })?;
        Ok(Page {
            results,
            next_after: wire.paging.as_ref().and_then(next_after),
            total: wire.total.as_ref().and_then(Value::as_u64),
        })
    }
}

/// `paging.next.after` as HubSpot sends it: a string, sometimes a number.
fn next_after(paging: &Value) -> Option<String> {
    match paging.get("next")?.get("after")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The page object; anything else has no `results`.
#[derive(Default)]
struct PageWire<'a> {
    results: Option<Vec<&'a RawValue>>,
    paging: Option<Value>,
    total: Option<Value>,
}

impl<'de> Deserialize<'de> for PageWire<'de> {
    fn deserialize<D: de::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(PageVisitor)
    }
}

struct PageVisitor;

impl<'de> Visitor<'de> for PageVisitor {
    type Value = PageWire<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a page object")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut page = PageWire::default();
        while let Some(key) = map.next_key_seed(Text)? {
            match key.as_ref() {
                "results" => page.results = map.next_value_seed(Records)?,
                "paging" => page.paging = Some(map.next_value()?),
                "total" => page.total = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(page)
    }

    other_types_are!(|_| PageWire::default());
}

/// `results`: each record's JSON text, or `None` when it is not an array.
struct Records;

impl<'de> DeserializeSeed<'de> for Records {
    type Value = Option<Vec<&'de RawValue>>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Records {
    type Value = Option<Vec<&'de RawValue>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(100));
        while let Some(record) = seq.next_element::<&'de RawValue>()? {
            records.push(record);
        }
        Ok(Some(records))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }
}

/// A record's id as the wire had it.
#[derive(Debug, Clone, PartialEq)]
enum Id<'a> {
    Text(Cow<'a, str>),
    /// A JSON number, as its JSON text.
    Number(String),
}

/// A record's own fields, borrowed from the page; its properties went into the [`Slots`]
/// given to [`Head::read`].
#[derive(Debug, Clone, PartialEq)]
pub struct Head<'a> {
    /// The record's JSON as it came, for a dead letter.
    pub raw: &'a str,
    id: Option<Id<'a>>,
    pub archived: bool,
    /// `updatedAt` when it is a string.
    updated_at: Option<Cow<'a, str>>,
    /// `archivedAt`: `Some(None)` when present but not a string, which (as before) does not
    /// fall back to `updatedAt`.
    archived_at: Option<Option<Cow<'a, str>>>,
}

impl<'a> Head<'a> {
    /// Reads `raw`, its properties into `slots` (emptied first) when given. A record that is
    /// not an object reads as one without fields.
    pub fn read(raw: &'a RawValue, slots: Option<&mut Slots>) -> serde_json::Result<Head<'a>> {
        let text = raw.get();
        let mut slots = slots;
        if let Some(slots) = slots.as_deref_mut() {
            slots.clear();
        }
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let head = de::Deserializer::deserialize_any(
            &mut deserializer,
            RecordVisitor { raw: text, slots },
        )?;
        deserializer.end()?;
        Ok(head)
    }

    /// The id as text: a string as is, a number as its JSON.
    pub fn id_text(&self) -> Option<&str> {
        match &self.id {
            Some(Id::Text(s)) => Some(s),
            Some(Id::Number(n)) => Some(n),
            None => None,
        }
    }

    /// The id when it is a JSON string (batch read answers so).
    pub fn id_string(&self) -> Option<&str> {
        match &self.id {
            Some(Id::Text(s)) => Some(s),
            _ => None,
        }
    }

    /// The id as an integer, when it is one.
    pub fn id(&self) -> Option<i64> {
        self.id_text()?.parse().ok()
    }

    /// The version stamp's text: `archivedAt` for an archived record (when present),
    /// else `updatedAt`.
    pub fn version_text(&self) -> Option<&str> {
        match (&self.archived_at, self.archived) {
            (Some(archived_at), true) => archived_at.as_deref(),
            _ => self.updated_at.as_deref(),
        }
    }

    pub fn updated_millis(&self) -> Option<i64> {
        self.updated_at.as_deref().and_then(parse_millis)
    }

    pub fn archived_millis(&self) -> Option<i64> {
        self.archived_at
            .as_ref()
            .and_then(Option::as_deref)
            .and_then(parse_millis)
    }

    fn empty(raw: &'a str) -> Head<'a> {
        Head {
            raw,
            id: None,
            archived: false,
            updated_at: None,
            archived_at: None,
        }
    }
}

struct RecordVisitor<'a, 's> {
    raw: &'a str,
    slots: Option<&'s mut Slots>,
}

impl<'de, 's> Visitor<'de> for RecordVisitor<'de, 's> {
    type Value = Head<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record object")
    }

    fn visit_map<A: MapAccess<'de>>(
        mut self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut head = Head::empty(self.raw);
        while let Some(key) = map.next_key_seed(Text)? {
            match key.as_ref() {
                "id" => {
                    head.id = match map.next_value_seed(WireSeed)? {
                        Wire::Str(s) => Some(Id::Text(s)),
                        Wire::Number(n) => Some(Id::Number(n.to_string())),
                        _ => None,
                    }
                }
                "archived" => head.archived = map.next_value_seed(WireSeed)? == Wire::Bool(true),
                "updatedAt" => head.updated_at = string(map.next_value_seed(WireSeed)?),
                "archivedAt" => {
                    head.archived_at = Some(string(map.next_value_seed(WireSeed)?));
                }
                "properties" => match self.slots.as_deref_mut() {
                    // A repeated `properties` replaces the earlier one, as in a `Value`.
                    Some(slots) => {
                        slots.clear();
                        map.next_value_seed(Properties { slots })?;
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(head)
    }

    other_types_are!(|visitor: Self| Head::empty(visitor.raw));
}

fn string(wire: Wire<'_>) -> Option<Cow<'_, str>> {
    match wire {
        Wire::Str(s) => Some(s),
        _ => None,
    }
}

/// `properties`: each value converted into its column's slot as it is read; names the
/// schema does not hold are skipped unread. Anything but an object leaves every slot null.
struct Properties<'s> {
    slots: &'s mut Slots,
}

impl<'de> DeserializeSeed<'de> for Properties<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Properties<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a properties object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let mut position = 0;
        while let Some(name) = map.next_key_seed(Text)? {
            match self.slots.column(position, &name) {
                Some(column) => {
                    let value = map.next_value_seed(WireSeed)?;
                    self.slots.set(column, &value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            position += 1;
        }
        Ok(())
    }

    other_types_are!(|_| ());
}

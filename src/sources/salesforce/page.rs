//! The wire shape of REST query pages (crm-apis.md A2), read without a `serde_json::Value`
//! tree per record.
//!
//! A page is split once into its records' JSON text (kept as sent, for dead letters) and the
//! fields the paging needs; each record is then read once, its fields straight into the
//! column slots of a [`Slots`] by name. Every lenience of the `Value` reading this replaced is
//! kept on purpose (a duplicate key: the last wins; a page field of an unexpected JSON type: as
//! if absent), so a record reads as it always did; the `records` tests hold the two readings
//! side by side on hostile records.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::SalesforceError;
use super::records::{Raw, Slots};
use crate::sources::json::{Text, Wire, WireSeed, other_types_are};
use crate::{Error, Result};

/// One answer of `query`/`queryAll`: the body, where each record's JSON sits in it, and what
/// the paging needs. Owned, so a reader can hold pages across awaits.
pub struct QueryPage {
    text: String,
    shape: PageWire<Range<usize>>,
}

impl QueryPage {
    /// Splits a 2xx body. JSON that does not parse (a body cut short, not UTF-8) is an error
    /// the client retries; a page of the wrong shape parses and is judged by [`QueryPage::next_path`].
    pub fn parse(body: Bytes) -> serde_json::Result<QueryPage> {
        let text = String::from_utf8(Vec::from(body))
            .map_err(|_| <serde_json::Error as de::Error>::custom("the answer is not UTF-8"))?;
        let wire: PageWire<&RawValue> = serde_json::from_str(&text)?;
        let start = text.as_ptr() as usize;
        // Each record's text is a slice of `text`: keep its place, not the borrow.
        let place = |raw: &RawValue| {
            let at = raw.get().as_ptr() as usize - start;
            at..at + raw.get().len()
        };
        let shape = PageWire {
            object: wire.object,
            records: match wire.records {
                Records::Absent => Records::Absent,
                Records::NotArray => Records::NotArray,
                Records::Array(records) => Records::Array(records.into_iter().map(place).collect()),
            },
            done: wire.done,
            next_records_url: wire.next_records_url,
            total_size: wire.total_size,
        };
        Ok(QueryPage { text, shape })
    }

    /// The path of the next page (`None` when `done`), or why this is not a query page.
    pub fn next_path(&self, object: &str) -> Result<Option<String>> {
        let shape = |what: &'static str| -> Error {
            SalesforceError::PageShape {
                object: object.to_string(),
                what,
            }
            .into()
        };
        let page = &self.shape;
        if !page.object {
            return Err(shape("is not a JSON object"));
        }
        if matches!(page.records, Records::NotArray) {
            return Err(shape("has a records field that is not an array"));
        }
        let done = page.done.ok_or_else(|| shape("has no done flag"))?;
        if done {
            return Ok(None);
        }
        let next = page
            .next_records_url
            .as_deref()
            .filter(|url| !url.is_empty())
            .ok_or_else(|| shape("is not the last one but has no nextRecordsUrl"))?;
        Ok(Some(next_path(next)))
    }

    /// Each record's JSON text, as sent.
    pub fn records(&self) -> impl ExactSizeIterator<Item = &str> {
        let places: &[Range<usize>] = match &self.shape.records {
            Records::Array(places) => places,
            _ => &[],
        };
        // The places are those of values serde_json read from this very text.
        places
            .iter()
            .map(|place| self.text.get(place.clone()).unwrap_or_default())
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        match &self.shape.records {
            Records::Array(places) => places.len(),
            _ => 0,
        }
    }

    /// The `index`-th record's JSON text.
    pub fn record(&self, index: usize) -> Option<&str> {
        match &self.shape.records {
            Records::Array(places) => self.text.get(places.get(index)?.clone()),
            _ => None,
        }
    }

    /// `totalSize` when it is a non-negative integer (COUNT() answers carry it).
    pub fn total_size(&self) -> Option<u64> {
        self.shape.total_size
    }
}

/// `nextRecordsUrl` is a path from the instance root; an absolute URL is reduced to one, so
/// that every request goes to the session's instance.
pub(super) fn next_path(url: &str) -> String {
    if url.starts_with("http://") || url.starts_with("https://") {
        if let Ok(parsed) = url::Url::parse(url) {
            return match parsed.query() {
                Some(query) => format!("{}?{query}", parsed.path()),
                None => parsed.path().to_string(),
            };
        }
    }
    url.to_string()
}

/// A page's fields as a `Value` reading saw them; `R` is how a record is held.
struct PageWire<R> {
    /// False when the page is not a JSON object.
    object: bool,
    records: Records<R>,
    /// `done` when it is a boolean.
    done: Option<bool>,
    /// `nextRecordsUrl` when it is a string.
    next_records_url: Option<String>,
    total_size: Option<u64>,
}

impl<R> PageWire<R> {
    fn not_an_object() -> PageWire<R> {
        PageWire {
            object: false,
            records: Records::Absent,
            done: None,
            next_records_url: None,
            total_size: None,
        }
    }
}

/// `records`: absent or null reads as no records.
enum Records<R> {
    Absent,
    Array(Vec<R>),
    NotArray,
}

impl<'de> Deserialize<'de> for PageWire<&'de RawValue> {
    fn deserialize<D: de::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(PageVisitor)
    }
}

struct PageVisitor;

impl<'de> Visitor<'de> for PageVisitor {
    type Value = PageWire<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a query page")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut page = PageWire::not_an_object();
        page.object = true;
        while let Some(key) = map.next_key_seed(Text)? {
            match key.as_ref() {
                "records" => page.records = map.next_value_seed(RecordsSeed)?,
                "done" => {
                    page.done = match map.next_value_seed(WireSeed)? {
                        Wire::Bool(done) => Some(done),
                        _ => None,
                    }
                }
                "nextRecordsUrl" => {
                    page.next_records_url = match map.next_value_seed(WireSeed)? {
                        Wire::Str(url) => Some(url.into_owned()),
                        _ => None,
                    }
                }
                "totalSize" => {
                    page.total_size = match map.next_value_seed(WireSeed)? {
                        Wire::Number(n) => n.as_u64(),
                        _ => None,
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(page)
    }

    other_types_are!(|_| PageWire::not_an_object());
}

struct RecordsSeed;

impl<'de> DeserializeSeed<'de> for RecordsSeed {
    type Value = Records<&'de RawValue>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed {
    type Value = Records<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(2_000));
        while let Some(record) = seq.next_element::<&'de RawValue>()? {
            records.push(record);
        }
        Ok(Records::Array(records))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Records::NotArray)
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(Records::Absent)
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(Records::Absent)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<Self::Value, E> {
        Ok(Records::NotArray)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<Self::Value, E> {
        Ok(Records::NotArray)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<Self::Value, E> {
        Ok(Records::NotArray)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<Self::Value, E> {
        Ok(Records::NotArray)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<Self::Value, E> {
        Ok(Records::NotArray)
    }
}

/// Reads one record's fields into `slots` as part `part` (1 for a whole record; the field
/// chunks of a split read are parts 1, 2, ...: a field takes the first part's value, and
/// `attributes` is no part's). False when the record is not a JSON object.
pub fn read_record(
    text: &str,
    slots: &mut Slots,
    part: u16,
    merging: bool,
) -> serde_json::Result<bool> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let object = de::Deserializer::deserialize_any(
        &mut deserializer,
        RecordVisitor {
            slots,
            part,
            merging,
        },
    )?;
    deserializer.end()?;
    Ok(object)
}

struct RecordVisitor<'s> {
    slots: &'s mut Slots,
    part: u16,
    merging: bool,
}

impl<'de> Visitor<'de> for RecordVisitor<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<bool, A::Error> {
        let mut position = 0;
        while let Some(name) = map.next_key_seed(Text)? {
            let column = self
                .slots
                .column(position, &name)
                .filter(|&column| self.slots.takes(column, self.part))
                .filter(|_| !(self.merging && name == "attributes"));
            match column {
                Some(column) => {
                    let value = map.next_value_seed(WireSeed)?;
                    self.slots.set(column, Raw::Json(&value), self.part);
                }
                // `attributes`, relationship objects and fields not staged.
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            position += 1;
        }
        Ok(true)
    }

    other_types_are!(|_| false);
}

/// What the split reader and the key listing look at before (or instead of) reading a record
/// whole: `Id` and the cursor field, `None` where absent.
#[derive(Debug, Clone, PartialEq)]
pub struct Head<'a> {
    pub id: Option<Wire<'a>>,
    pub stamp: Option<Wire<'a>>,
}

impl<'a> Head<'a> {
    /// Reads `text`'s `Id` and `cursor`; `None` when the record is not a JSON object.
    pub fn read(text: &'a str, cursor: &str) -> serde_json::Result<Option<Head<'a>>> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let head = de::Deserializer::deserialize_any(&mut deserializer, HeadVisitor { cursor })?;
        deserializer.end()?;
        Ok(head)
    }

    /// The `Id` when it is a string.
    pub fn id(&self) -> Option<&str> {
        match &self.id {
            Some(Wire::Str(id)) => Some(id),
            _ => None,
        }
    }
}

struct HeadVisitor<'c> {
    cursor: &'c str,
}

impl<'de> Visitor<'de> for HeadVisitor<'_> {
    type Value = Option<Head<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record object")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut head = Head {
            id: None,
            stamp: None,
        };
        while let Some(name) = map.next_key_seed(Text)? {
            if name == super::KEY {
                head.id = Some(map.next_value_seed(WireSeed)?);
            } else if name == self.cursor {
                head.stamp = Some(map.next_value_seed(WireSeed)?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Some(head))
    }

    other_types_are!(|_| None);
}

/// A record read from a page that does not parse on its own (a number JSON cannot hold).
pub(super) fn unreadable(object: &str, source: serde_json::Error) -> SalesforceError {
    SalesforceError::RecordJson {
        object: object.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(text: &str) -> QueryPage {
        QueryPage::parse(Bytes::copy_from_slice(text.as_bytes())).unwrap()
    }

    #[test]
    fn pages_yield_records_and_the_next_path() {
        let first = page(
            r#"{"totalSize": 3, "done": false, "nextRecordsUrl": "/services/data/v62.0/query/01g-2000",
                "records": [{"Id": "001A"}, {"Id": "001B"}]}"#,
        );
        assert_eq!(
            first.records().collect::<Vec<_>>(),
            [r#"{"Id": "001A"}"#, r#"{"Id": "001B"}"#]
        );
        assert_eq!(
            first.next_path("Account").unwrap().as_deref(),
            Some("/services/data/v62.0/query/01g-2000")
        );
        assert_eq!(first.total_size(), Some(3));

        let last = page(r#"{"totalSize": 3, "done": true, "records": [{"Id": "001C"}]}"#);
        assert_eq!(last.records().len(), 1);
        assert_eq!(last.next_path("Account").unwrap(), None);

        let count = page(r#"{"totalSize": 300, "done": true, "records": null}"#);
        assert_eq!(count.records().len(), 0);
        assert_eq!(count.total_size(), Some(300));
        assert_eq!(page(r#"{"totalSize": -1}"#).total_size(), None);

        for bad in [
            r#"{"done": false, "records": []}"#,
            r#"{"done": false, "nextRecordsUrl": "", "records": []}"#,
            r#"{"records": []}"#,
            r#"{"done": "true", "records": []}"#,
            r#"{"done": true, "records": {}}"#,
            r#"{"done": true, "records": 5}"#,
            "[]",
            "7",
        ] {
            assert!(page(bad).next_path("Account").is_err(), "{bad}");
        }
        // The last of repeated keys wins, as in a `Value`.
        let repeated = page(r#"{"done": false, "records": [1], "done": true, "records": [2, 3]}"#);
        assert_eq!(repeated.next_path("Account").unwrap(), None);
        assert_eq!(repeated.records().collect::<Vec<_>>(), ["2", "3"]);
    }

    #[test]
    fn bodies_cut_short_or_not_utf8_do_not_parse() {
        let cut = br#"{"done": true, "records": [{"Id": "001A"}, {"Id": "00"#;
        assert!(QueryPage::parse(Bytes::from_static(cut)).is_err());
        assert!(
            QueryPage::parse(Bytes::from_static(b"{\"done\": true, \"x\": \"\xff\"}")).is_err()
        );
        assert!(QueryPage::parse(Bytes::new()).is_err());
    }

    #[test]
    fn absolute_next_urls_become_paths() {
        assert_eq!(
            next_path("https://acme.my.salesforce.com/services/data/v62.0/queryAll/01g-4000"),
            "/services/data/v62.0/queryAll/01g-4000"
        );
        assert_eq!(
            next_path("/services/data/v62.0/query/01g-2000"),
            "/services/data/v62.0/query/01g-2000"
        );
    }

    #[test]
    fn heads_read_the_id_and_the_cursor_only() {
        let text = r#"{"attributes": {"Id": "x"}, "Id": "001A", "SystemModstamp": 5, "Name": [1]}"#;
        let head = Head::read(text, "SystemModstamp").unwrap().unwrap();
        assert_eq!(head.id(), Some("001A"));
        assert_eq!(head.stamp, Some(Wire::Number(5.into())));
        assert_eq!(Head::read("[1]", "SystemModstamp").unwrap(), None);
        let no_id = Head::read(r#"{"Id": 5}"#, "SystemModstamp")
            .unwrap()
            .unwrap();
        assert_eq!(no_id.id(), None);
        assert_eq!(no_id.stamp, None);
    }
}

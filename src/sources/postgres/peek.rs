//! The keys a CDC slot holds changes for but has not delivered yet, read without consuming
//! them (`pg_logical_slot_peek_binary_changes`): `syncline reconcile` counts their differences
//! as in flight, not drift. Only the pgoutput (protocol 1) messages that carry a key are read:
//! Relation, to learn the table and the key's position, then Insert, Update and Delete.

use std::collections::{HashMap, HashSet};
use std::pin::pin;

use futures::TryStreamExt;
use tokio_postgres::Client;

use super::catalog::{TableSpec, ValueKind, source_error};
use crate::Result;
use crate::reconcile::drift::Key;

/// Every key of `spec`'s table with a change pending in `slot` (publication `publication`).
pub async fn pending_keys(
    client: &Client,
    slot: &str,
    publication: &str,
    spec: &TableSpec,
) -> Result<HashSet<Key>> {
    let rows = client
        .query_raw(super::sql::templates::PEEK_CHANGES, [slot, publication])
        .await
        .map_err(source_error("peek at the replication slot"))?;
    let mut rows = pin!(rows);
    let mut decoder = Peek {
        spec,
        relations: HashMap::new(),
        keys: HashSet::new(),
    };
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(source_error("peek at the replication slot"))?
    {
        let data: &[u8] = row.get(0);
        // A message this reader cannot follow names no key; the compare then reports the
        // difference as drift, which a repair fixes without harm.
        let _ = decoder.message(data);
    }
    Ok(decoder.keys)
}

struct Peek<'a> {
    spec: &'a TableSpec,
    /// Relation id → position of the key column, for the stream's table only.
    relations: HashMap<u32, usize>,
    keys: HashSet<Key>,
}

impl Peek<'_> {
    fn message(&mut self, data: &[u8]) -> Option<()> {
        let mut reader = Reader(data);
        match reader.byte()? {
            b'R' => {
                let id = reader.u32()?;
                let namespace = reader.string()?;
                let name = reader.string()?;
                reader.byte()?;
                let columns = reader.u16()?;
                let mut key_at = None;
                for at in 0..columns {
                    reader.byte()?;
                    if reader.string()? == self.spec.key().name {
                        key_at = Some(at as usize);
                    }
                    reader.u32()?;
                    reader.u32()?;
                }
                if namespace == self.spec.schema && name == self.spec.name {
                    self.relations.insert(id, key_at?);
                } else {
                    self.relations.remove(&id);
                }
            }
            b'I' | b'U' | b'D' => {
                let id = reader.u32()?;
                let key_at = *self.relations.get(&id)?;
                // Every tuple of the message (old key, old row, new row) names a key.
                while let Some(kind) = reader.byte() {
                    if !matches!(kind, b'K' | b'O' | b'N') {
                        break;
                    }
                    if let Some(key) = reader.tuple_value(key_at)? {
                        self.push(&key);
                    }
                }
            }
            _ => {}
        }
        Some(())
    }

    fn push(&mut self, text: &str) {
        let key = if self.spec.key().kind == ValueKind::Int {
            match text.parse() {
                Ok(value) => Key::Int(value),
                Err(_) => return,
            }
        } else {
            Key::Text(text.to_string())
        };
        self.keys.insert(key);
    }
}

/// A cursor over one message's bytes; `None` when it ends early.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Option<String> {
        let end = self.0.iter().position(|&b| b == 0)?;
        let text = String::from_utf8_lossy(self.take(end)?).into_owned();
        self.take(1)?;
        Some(text)
    }

    /// Reads a tuple and returns the text of column `at` (`None` inside when it is null or
    /// unchanged).
    fn tuple_value(&mut self, at: usize) -> Option<Option<String>> {
        let columns = self.u16()? as usize;
        let mut found = None;
        for column in 0..columns {
            match self.byte()? {
                b't' | b'b' => {
                    let len = self.u32()? as usize;
                    let bytes = self.take(len)?;
                    if column == at {
                        found = Some(String::from_utf8_lossy(bytes).into_owned());
                    }
                }
                _ => {}
            }
        }
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::postgres::catalog::SourceColumn;

    fn spec() -> TableSpec {
        TableSpec {
            schema: "public".into(),
            name: "contacts".into(),
            columns: vec![SourceColumn {
                name: "id".into(),
                kind: ValueKind::Int,
                sql_type: "bigint".into(),
            }],
            cursor: None,
        }
    }

    fn relation(id: u32, name: &str) -> Vec<u8> {
        let mut data = vec![b'R'];
        data.extend(id.to_be_bytes());
        data.extend(b"public\0");
        data.extend(name.as_bytes());
        data.push(0);
        data.push(b'd');
        data.extend(2u16.to_be_bytes());
        for column in ["email", "id"] {
            data.push(0);
            data.extend(column.as_bytes());
            data.push(0);
            data.extend(25u32.to_be_bytes());
            data.extend((-1i32).to_be_bytes());
        }
        data
    }

    fn tuple(kind: u8, id: &str) -> Vec<u8> {
        let mut data = vec![kind];
        data.extend(2u16.to_be_bytes());
        data.push(b'n');
        data.push(b't');
        data.extend((id.len() as u32).to_be_bytes());
        data.extend(id.as_bytes());
        data
    }

    #[test]
    fn keys_of_inserts_updates_and_deletes_of_the_table_only() {
        let spec = spec();
        let mut peek = Peek {
            spec: &spec,
            relations: HashMap::new(),
            keys: HashSet::new(),
        };
        peek.message(&relation(7, "contacts")).unwrap();
        peek.message(&relation(8, "other")).unwrap();
        let mut insert = vec![b'I'];
        insert.extend(7u32.to_be_bytes());
        insert.extend(tuple(b'N', "5"));
        peek.message(&insert).unwrap();
        let mut update = vec![b'U'];
        update.extend(7u32.to_be_bytes());
        update.extend(tuple(b'K', "6"));
        update.extend(tuple(b'N', "7"));
        peek.message(&update).unwrap();
        let mut delete = vec![b'D'];
        delete.extend(8u32.to_be_bytes());
        delete.extend(tuple(b'K', "9"));
        assert!(peek.message(&delete).is_none(), "not the stream's table");
        let mut keys: Vec<Key> = peek.keys.into_iter().collect();
        keys.sort();
        assert_eq!(keys, [Key::Int(5), Key::Int(6), Key::Int(7)]);
    }
}

//! Listings read from PostgreSQL, the source and the destination alike: the select
//! expressions of key, version and content hash (one definition for both sides, so equal rows
//! hash equal), and the decoder of the binary COPY that streams them in key order.

use futures::StreamExt;
use tokio_postgres::CopyOutStream;
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::Type;

use super::drift::{HashKind, Key, Listed, Listing};
use crate::error::{Classified, ErrorKind};
use crate::sql::quote_ident;

/// A listing's COPY failed midway. Only the server's message and SQLSTATE (its DETAIL can quote
/// row values), or the driver's error.
#[derive(Debug, thiserror::Error)]
#[error("reading the {side} listing failed: {message}")]
pub struct ListingError {
    pub side: &'static str,
    pub message: String,
}

impl Classified for ListingError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Transient
    }
}

fn listing_error(side: &'static str, err: &tokio_postgres::Error) -> ListingError {
    ListingError {
        side,
        message: match err.as_db_error() {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            None => err.to_string(),
        },
    }
}

/// The key's select expression and its ORDER BY: integers numerically, text by bytes.
pub fn key_sql(key: &str, int_key: bool) -> (String, String) {
    let column = quote_ident(key);
    if int_key {
        (format!("{column}::int8"), column)
    } else {
        (
            format!("{column}::text"),
            format!("{column}::text COLLATE \"C\""),
        )
    }
}

/// A timestamp (with or without zone) as microseconds since the epoch; a time without zone
/// counts as UTC, as it is staged.
pub fn micros_sql(expression: &str) -> String {
    format!("(extract(epoch FROM {expression}) * 1000000)::int8")
}

/// The content hash of a row over `columns`: each column's canonical text ([`HashKind`]),
/// `quote_nullable`d (so NULL and the text 'NULL' differ) and joined by `,`, then md5.
pub fn row_hash_sql(columns: &[(String, HashKind)]) -> String {
    let parts: Vec<String> = columns
        .iter()
        .map(|(name, kind)| {
            let column = quote_ident(name);
            let text = match kind {
                HashKind::Int => format!("{column}::int8::text"),
                HashKind::Float => format!("{column}::float8::text"),
                HashKind::Bool => format!("{column}::bool::text"),
                HashKind::Date => format!("({column}::date - DATE '1970-01-01')::text"),
                HashKind::Timestamp => format!("{}::text", micros_sql(&column)),
                HashKind::Text => format!("{column}::text"),
            };
            format!("quote_nullable({text})")
        })
        .collect();
    format!("md5(concat_ws(',', {}))", parts.join(", "))
}

/// Decodes `COPY (SELECT key, version::int8, hash::text ...) TO STDOUT (FORMAT binary)` into
/// chunks of `chunk` records, as the rows arrive.
pub fn decode(out: CopyOutStream, int_key: bool, chunk: usize, side: &'static str) -> Listing {
    let key_type = if int_key { Type::INT8 } else { Type::TEXT };
    let rows = BinaryCopyOutStream::new(out, &[key_type, Type::INT8, Type::TEXT]);
    rows.map(move |row| {
        let row = row.map_err(|err| listing_error(side, &err))?;
        let key = if int_key {
            Key::Int(row.try_get(0).map_err(|err| listing_error(side, &err))?)
        } else {
            Key::Text(row.try_get(0).map_err(|err| listing_error(side, &err))?)
        };
        Ok::<Listed, crate::Error>(Listed {
            key,
            version: row.try_get(1).map_err(|err| listing_error(side, &err))?,
            hash: row.try_get(2).map_err(|err| listing_error(side, &err))?,
        })
    })
    .chunks(chunk.max(1))
    .map(|rows| rows.into_iter().collect::<crate::Result<Vec<Listed>>>())
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_one_expression_for_both_sides() {
        let sql = row_hash_sql(&[
            ("id".into(), HashKind::Int),
            ("at".into(), HashKind::Timestamp),
            ("Name".into(), HashKind::Text),
        ]);
        assert_eq!(
            sql,
            "md5(concat_ws(',', quote_nullable(\"id\"::int8::text), \
             quote_nullable((extract(epoch FROM \"at\") * 1000000)::int8::text), \
             quote_nullable(\"Name\"::text)))"
        );
        assert_eq!(
            key_sql("k", false),
            ("\"k\"::text".into(), "\"k\"::text COLLATE \"C\"".into())
        );
    }
}

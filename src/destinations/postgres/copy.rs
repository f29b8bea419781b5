//! Streams staged Arrow batches into the session's staging table with binary COPY.
//!
//! Rows are encoded straight from the Arrow arrays, so memory is bounded by one batch plus
//! a message of encoded rows, whatever the size of the load.

use std::pin::pin;

use arrow::array::{
    Array, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, LargeStringArray,
    StringArray, StringViewArray, TimestampMicrosecondArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, NaiveDate, Utc};
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use tokio_postgres::Transaction;
use tokio_postgres::types::{IsNull, ToSql, Type};

use crate::Result;

use super::types::{Column, PgType};
use super::{PostgresError, pg_error};
use crate::destinations::layout::ColumnType;
use crate::schema::{DELETED_COLUMN, LOAD_ID_COLUMN};
use tokio_postgres::error::SqlState;

/// Copies every batch of `batches` into the staging table with `statement`
/// (`COPY ... (columns) FROM STDIN (FORMAT binary)`, columns in the order of `columns`).
/// Returns the number of rows copied. Batch columns are found by name, so their order may
/// differ from the staged schema's; a missing column or a different type is an error.
pub(super) async fn copy_batches(
    tx: &Transaction<'_>,
    statement: &str,
    columns: &[Column],
    batches: BoxStream<'static, Result<RecordBatch>>,
) -> Result<u64> {
    let steps = [
        "start COPY into the staging table",
        "COPY rows into the staging table",
        "finish COPY into the staging table",
    ];
    match copy_rows(tx, statement, columns, None, steps, batches).await {
        Ok(rows) => Ok(rows),
        Err(Stop::Driver(step, err)) => Err(pg_error(step, err).into()),
        Err(Stop::Encode(err)) => Err(err.into()),
        Err(Stop::Other(err)) => Err(err),
        // Only a copy with a load id refuses deletes.
        Err(Stop::Deletes) => unreachable!("a staging copy takes deletes"),
    }
}

/// How a copy straight into an empty table ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direct {
    Copied(u64),
    /// A row is a delete, which the general path must apply; the copy was abandoned.
    CarriesDeletes,
    /// A key repeats, which the table's unique key refused; the copy failed.
    KeyRepeats,
}

/// Copies the carried columns of every batch, then `load_id`, straight into the table with
/// `statement` (see `sql::DirectSql`). Gives up at the first delete, and reports a key the
/// unique index refused; either way the caller rolls back to its savepoint.
pub(super) async fn copy_into_empty(
    tx: &Transaction<'_>,
    statement: &str,
    carried: &[Column],
    load_id: &str,
    batches: BoxStream<'static, Result<RecordBatch>>,
) -> Result<Direct> {
    let steps = [
        "start COPY into the empty table",
        "COPY rows into the empty table",
        "finish COPY into the empty table",
    ];
    match copy_rows(tx, statement, carried, Some(load_id), steps, batches).await {
        Ok(rows) => Ok(Direct::Copied(rows)),
        Err(Stop::Deletes) => Ok(Direct::CarriesDeletes),
        Err(Stop::Driver(_, err)) if err.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            Ok(Direct::KeyRepeats)
        }
        Err(Stop::Driver(step, err)) => Err(pg_error(step, err).into()),
        Err(Stop::Encode(err)) => Err(err.into()),
        Err(Stop::Other(err)) => Err(err),
    }
}

/// Why a copy stopped.
enum Stop {
    Driver(&'static str, tokio_postgres::Error),
    Encode(PostgresError),
    Other(crate::Error),
    /// A copy with a load id met a delete.
    Deletes,
}

impl From<crate::Error> for Stop {
    fn from(err: crate::Error) -> Stop {
        Stop::Other(err)
    }
}

impl From<PostgresError> for Stop {
    fn from(err: PostgresError) -> Stop {
        Stop::Other(err.into())
    }
}

/// Encodes each row of `batches` as `columns` (and `load_id` last, when given), into CopyData
/// messages of about [`COPY_MESSAGE_BYTES`]. With a load id, a batch holding a delete stops the copy
/// before any of its rows is sent; dropping the unfinished sink makes the server abort the
/// COPY.
async fn copy_rows(
    tx: &Transaction<'_>,
    statement: &str,
    columns: &[Column],
    load_id: Option<&str>,
    [start, rows, finish]: [&'static str; 3],
    mut batches: BoxStream<'static, Result<RecordBatch>>,
) -> Result<u64, Stop> {
    let mut types: Vec<Type> = columns.iter().map(|column| column.ty.wire_type()).collect();
    if load_id.is_some() {
        types.push(Type::TEXT);
    }
    let sink = tx
        .copy_in(statement)
        .await
        .map_err(|err| Stop::Driver(start, err))?;
    let mut sink = pin!(sink);
    let mut frames = CopyFrames::new(types);
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        if load_id.is_some() && carries_deletes(&batch)? {
            return Err(Stop::Deletes);
        }
        let readers = columns
            .iter()
            .map(|column| ColumnReader::new(&batch, column))
            .collect::<Result<Vec<_>, _>>()?;
        let mut row: Vec<Cell<'_>> = Vec::with_capacity(readers.len() + 1);
        for index in 0..batch.num_rows() {
            row.clear();
            for reader in &readers {
                row.push(reader.cell(index)?);
            }
            if let Some(load_id) = load_id {
                row.push(Cell::Text(Some(load_id)));
            }
            frames.row(&row).map_err(|(at, source)| {
                Stop::Encode(PostgresError::Encode {
                    step: rows,
                    column: columns
                        .get(at)
                        .map_or_else(|| LOAD_ID_COLUMN.to_owned(), |c| c.name.clone()),
                    source,
                })
            })?;
            if frames.buf.len() >= COPY_MESSAGE_BYTES {
                sink.send(frames.take())
                    .await
                    .map_err(|err| Stop::Driver(rows, err))?;
            }
        }
    }
    frames.end();
    sink.send(frames.take())
        .await
        .map_err(|err| Stop::Driver(finish, err))?;
    sink.as_mut()
        .finish()
        .await
        .map_err(|err| Stop::Driver(finish, err))
}

/// Rows framed in PostgreSQL's binary COPY format, each value encoded by its `ToSql`.
///
/// tokio-postgres's `BinaryCopyInWriter` frames the same way, but is awaited once per row and
/// hands the connection a message every 4 KiB: some 50,000 messages, each a wake-up of the
/// connection's task, for a million CRM rows. Framed here, they go out in messages of
/// [`COPY_MESSAGE_BYTES`].
struct CopyFrames {
    types: Vec<Type>,
    buf: BytesMut,
}

/// What one CopyData message carries: a few hundred rows, and below glibc's `mmap` threshold
/// (see `main.rs`), so the buffers come from the heap and are reused rather than mapped and
/// faulted in afresh for every message.
const COPY_MESSAGE_BYTES: usize = 128 * 1024;

/// The signature that starts binary COPY data.
const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

impl CopyFrames {
    fn new(types: Vec<Type>) -> CopyFrames {
        let mut buf = BytesMut::new();
        buf.put_slice(COPY_SIGNATURE);
        buf.put_i32(0); // flags: no OIDs
        buf.put_i32(0); // no header extension
        CopyFrames { types, buf }
    }

    /// Frames one row: its field count, then each value's length (-1 for NULL) and bytes. A
    /// value that cannot be encoded gives its column's index and the encoder's reason.
    fn row(&mut self, cells: &[Cell<'_>]) -> Result<(), (usize, BoxError)> {
        debug_assert_eq!(cells.len(), self.types.len());
        self.buf.put_i16(cells.len() as i16);
        for (index, (cell, ty)) in cells.iter().zip(&self.types).enumerate() {
            let at = self.buf.len();
            self.buf.put_i32(0);
            let len = match cell.to_sql_checked(ty, &mut self.buf) {
                Ok(IsNull::Yes) => -1,
                Ok(IsNull::No) => i32::try_from(self.buf.len() - at - 4)
                    .map_err(|err| (index, BoxError::from(err)))?,
                Err(err) => return Err((index, err)),
            };
            self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        Ok(())
    }

    /// The trailer that ends the data.
    fn end(&mut self) {
        self.buf.put_i16(-1);
    }

    /// What is framed so far, to send.
    fn take(&mut self) -> Bytes {
        self.buf.split().freeze()
    }
}

/// Whether any row of `batch` is a delete (`_syncline_deleted`; a NULL counts as one, so the
/// general path decides what it means).
fn carries_deletes(batch: &RecordBatch) -> Result<bool, PostgresError> {
    let column =
        batch
            .column_by_name(DELETED_COLUMN)
            .ok_or_else(|| PostgresError::BatchLacksColumn {
                column: DELETED_COLUMN.to_owned(),
            })?;
    let deleted: &BooleanArray = downcast(column.as_ref(), DELETED_COLUMN)?;
    Ok(deleted.true_count() > 0 || deleted.null_count() > 0)
}

/// One value of a row being copied, typed as binary COPY encodes it.
#[derive(Debug)]
enum Cell<'a> {
    Int64(Option<i64>),
    Float64(Option<f64>),
    Text(Option<&'a str>),
    Boolean(Option<bool>),
    Date(Option<NaiveDate>),
    Timestamp(Option<DateTime<Utc>>),
    Numeric(Option<Numeric>),
}

/// A decimal as binary COPY sends a `numeric`: the unscaled integer and its scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Numeric {
    unscaled: i128,
    scale: u8,
}

impl Numeric {
    /// PostgreSQL's binary `numeric`: the number of base-10000 digits, the weight of the
    /// first (its power of 10000), the sign, the display scale, then the digits, most
    /// significant first, with leading and trailing zero digits left out.
    fn encode(self, out: &mut BytesMut) {
        const POSITIVE: u16 = 0x0000;
        const NEGATIVE: u16 = 0x4000;
        let scale = usize::from(self.scale);
        let digits = self.unscaled.unsigned_abs().to_string();
        // At least one integer digit, so "5" at scale 2 reads as 0.05.
        let digits = format!("{digits:0>width$}", width = scale + 1);
        let (integer, fraction) = digits.split_at(digits.len() - scale);
        // Groups of four decimal digits aligned on the point: the integer part padded on
        // the left, the fraction on the right.
        let integer = format!("{integer:0>width$}", width = integer.len().div_ceil(4) * 4);
        let fraction = format!(
            "{fraction:0<width$}",
            width = fraction.len().div_ceil(4) * 4
        );
        let integer_groups = integer.len() / 4;
        let mut groups: Vec<u16> = integer
            .as_bytes()
            .chunks(4)
            .chain(fraction.as_bytes().chunks(4))
            .map(|chunk| chunk.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
            .collect();
        let leading = groups.iter().take_while(|g| **g == 0).count();
        groups.drain(..leading);
        while groups.last() == Some(&0) {
            groups.pop();
        }
        // The weight of the first digit kept (0 when the value is zero).
        let weight = if groups.is_empty() {
            0
        } else {
            integer_groups as i16 - 1 - leading as i16
        };
        out.put_i16(groups.len() as i16);
        out.put_i16(weight);
        out.put_u16(if self.unscaled < 0 {
            NEGATIVE
        } else {
            POSITIVE
        });
        out.put_u16(u16::from(self.scale));
        for group in groups {
            out.put_u16(group);
        }
    }
}

impl ToSql for Numeric {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        self.encode(out);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Encodes as the inner value would; `to_sql_checked` delegates so each value is checked
/// against the column's wire type exactly as the plain Rust type would be.
impl ToSql for Cell<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Cell::Int64(value) => value.to_sql(ty, out),
            Cell::Float64(value) => value.to_sql(ty, out),
            Cell::Text(value) => value.to_sql(ty, out),
            Cell::Boolean(value) => value.to_sql(ty, out),
            Cell::Date(value) => value.to_sql(ty, out),
            Cell::Timestamp(value) => value.to_sql(ty, out),
            Cell::Numeric(value) => value.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <Option<i64> as ToSql>::accepts(ty)
            || <Option<f64> as ToSql>::accepts(ty)
            || <Option<&str> as ToSql>::accepts(ty)
            || <Option<bool> as ToSql>::accepts(ty)
            || <Option<NaiveDate> as ToSql>::accepts(ty)
            || <Option<DateTime<Utc>> as ToSql>::accepts(ty)
            || <Option<Numeric> as ToSql>::accepts(ty)
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Cell::Int64(value) => value.to_sql_checked(ty, out),
            Cell::Float64(value) => value.to_sql_checked(ty, out),
            Cell::Text(value) => value.to_sql_checked(ty, out),
            Cell::Boolean(value) => value.to_sql_checked(ty, out),
            Cell::Date(value) => value.to_sql_checked(ty, out),
            Cell::Timestamp(value) => value.to_sql_checked(ty, out),
            Cell::Numeric(value) => value.to_sql_checked(ty, out),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// A typed view of one column of one batch.
#[derive(Clone, Copy)]
enum ColumnReader<'a> {
    Int64(&'a Int64Array),
    Float64(&'a Float64Array),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Boolean(&'a BooleanArray),
    Date32(&'a Date32Array, &'a str),
    TimestampMs(&'a TimestampMillisecondArray, &'a str),
    TimestampUs(&'a TimestampMicrosecondArray, &'a str),
    /// The array and its scale.
    Decimal(&'a Decimal128Array, u8),
}

impl<'a> ColumnReader<'a> {
    fn new(batch: &'a RecordBatch, column: &'a Column) -> Result<ColumnReader<'a>, PostgresError> {
        let name = column.name.as_str();
        let index =
            batch
                .schema_ref()
                .index_of(name)
                .map_err(|_| PostgresError::BatchLacksColumn {
                    column: name.to_owned(),
                })?;
        let array: &'a dyn Array = &**batch.column(index);
        if PgType::from_arrow(array.data_type()) != Some(column.ty) {
            return Err(PostgresError::BatchColumnType {
                column: name.to_owned(),
                batch_type: array.data_type().clone(),
                load_type: column.ty.name().into_owned(),
            });
        }
        Ok(match array.data_type() {
            DataType::Int64 => ColumnReader::Int64(downcast(array, name)?),
            DataType::Float64 => ColumnReader::Float64(downcast(array, name)?),
            DataType::Utf8 => ColumnReader::Utf8(downcast(array, name)?),
            DataType::LargeUtf8 => ColumnReader::LargeUtf8(downcast(array, name)?),
            DataType::Utf8View => ColumnReader::Utf8View(downcast(array, name)?),
            DataType::Boolean => ColumnReader::Boolean(downcast(array, name)?),
            DataType::Date32 => ColumnReader::Date32(downcast(array, name)?, name),
            // `PgType::from_arrow` accepted it, so it is a UTC timestamp in ms or µs.
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                ColumnReader::TimestampMs(downcast(array, name)?, name)
            }
            DataType::Timestamp(_, _) => ColumnReader::TimestampUs(downcast(array, name)?, name),
            // `PgType::from_arrow` accepted it, so 0 <= scale <= precision <= 38.
            DataType::Decimal128(_, scale) => {
                ColumnReader::Decimal(downcast(array, name)?, *scale as u8)
            }
            other => {
                return Err(PostgresError::UnsupportedType {
                    column: name.to_owned(),
                    data_type: other.clone(),
                });
            }
        })
    }

    /// The value at `row`. Never includes the value in an error: it may be personal data.
    fn cell(self, row: usize) -> Result<Cell<'a>, PostgresError> {
        Ok(match self {
            ColumnReader::Int64(array) => {
                Cell::Int64(array.is_valid(row).then(|| array.value(row)))
            }
            ColumnReader::Float64(array) => {
                Cell::Float64(array.is_valid(row).then(|| array.value(row)))
            }
            ColumnReader::Utf8(array) => Cell::Text(array.is_valid(row).then(|| array.value(row))),
            ColumnReader::LargeUtf8(array) => {
                Cell::Text(array.is_valid(row).then(|| array.value(row)))
            }
            ColumnReader::Utf8View(array) => {
                Cell::Text(array.is_valid(row).then(|| array.value(row)))
            }
            ColumnReader::Boolean(array) => {
                Cell::Boolean(array.is_valid(row).then(|| array.value(row)))
            }
            ColumnReader::Date32(array, name) => Cell::Date(if array.is_valid(row) {
                Some(
                    array
                        .value_as_date(row)
                        .ok_or_else(|| out_of_range(name, row))?,
                )
            } else {
                None
            }),
            ColumnReader::TimestampMs(array, name) => Cell::Timestamp(if array.is_valid(row) {
                Some(
                    DateTime::<Utc>::from_timestamp_millis(array.value(row))
                        .ok_or_else(|| out_of_range(name, row))?,
                )
            } else {
                None
            }),
            ColumnReader::TimestampUs(array, name) => Cell::Timestamp(if array.is_valid(row) {
                Some(
                    DateTime::<Utc>::from_timestamp_micros(array.value(row))
                        .ok_or_else(|| out_of_range(name, row))?,
                )
            } else {
                None
            }),
            ColumnReader::Decimal(array, scale) => {
                Cell::Numeric(array.is_valid(row).then(|| Numeric {
                    unscaled: array.value(row),
                    scale,
                }))
            }
        })
    }
}

fn downcast<'a, T: Array + 'static>(
    array: &'a dyn Array,
    name: &str,
) -> Result<&'a T, PostgresError> {
    array
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| PostgresError::ArrayLayout {
            column: name.to_owned(),
        })
}

fn out_of_range(name: &str, row: usize) -> PostgresError {
    PostgresError::OutOfRange {
        column: name.to_owned(),
        row,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(unscaled: i128, scale: u8) -> Vec<u8> {
        let mut out = BytesMut::new();
        Numeric { unscaled, scale }.encode(&mut out);
        out.to_vec()
    }

    /// `ndigits, weight, sign, dscale, digits...` as big-endian 16-bit words.
    fn words(words: &[u16]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn numerics_encode_as_postgres_sends_them() {
        // What `SELECT numeric_send(x)` returns in PostgreSQL for each value.
        // 12345.67 = 1|2345|6700 with weight 1.
        assert_eq!(encoded(1_234_567, 2), words(&[3, 1, 0, 2, 1, 2345, 6700]));
        // -0.01 = 0100 at weight -1, negative.
        assert_eq!(encoded(-1, 2), words(&[1, 0xffff, 0x4000, 2, 100]));
        // 0.00: no digits.
        assert_eq!(encoded(0, 2), words(&[0, 0, 0, 2]));
        // 10000 at scale 0: one digit 1 at weight 1, trailing zero group dropped.
        assert_eq!(encoded(10_000, 0), words(&[1, 1, 0, 0, 1]));
        // 0.00001234 at scale 8: digits 0000|1234 after the point, the leading zero dropped.
        assert_eq!(encoded(1234, 8), words(&[1, 0xfffe, 0, 8, 1234]));
        // The largest 38-digit value.
        let max = 10i128.pow(38) - 1;
        let mut expected = vec![10, 9, 0, 0, 99];
        expected.extend([9999; 9]);
        assert_eq!(encoded(max, 0), words(&expected));
    }
}

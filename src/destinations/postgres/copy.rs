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
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use tokio_postgres::Transaction;

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
    let sink = tx
        .copy_in(statement)
        .await
        .map_err(|err| Stop::Driver(start, err))?;
    let mut sink = pin!(sink);
    let fields = i16::try_from(columns.len() + usize::from(load_id.is_some()))
        .expect("a PostgreSQL table has at most 1,600 columns");
    let mut frames = CopyFrames::new();
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        if load_id.is_some() && carries_deletes(&batch)? {
            return Err(Stop::Deletes);
        }
        let readers = columns
            .iter()
            .map(|column| ColumnReader::new(&batch, column))
            .collect::<Result<Vec<_>, _>>()?;
        for index in 0..batch.num_rows() {
            frames.buf.put_i16(fields);
            for (at, reader) in readers.iter().enumerate() {
                reader
                    .frame(index, &mut frames.buf)
                    .map_err(|unframed| unframed.into_stop(rows, &columns[at].name, index))?;
            }
            if let Some(load_id) = load_id {
                frames
                    .text(load_id)
                    .map_err(|unframed| unframed.into_stop(rows, LOAD_ID_COLUMN, index))?;
            }
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

/// Rows framed in PostgreSQL's binary COPY format: each row's field count, then each value's
/// length (-1 for NULL) and bytes, written straight from the Arrow arrays by
/// [`ColumnReader::frame`].
///
/// tokio-postgres's `BinaryCopyInWriter` frames the same way, but is awaited once per row and
/// hands the connection a message every 4 KiB: some 50,000 messages, each a wake-up of the
/// connection's task, for a million CRM rows. Framed here, they go out in messages of
/// [`COPY_MESSAGE_BYTES`]. Nor does a value go through `ToSql`, which checks the wire type
/// of every value (by name, for text) and converts each date and timestamp through chrono:
/// the column's type is checked once per batch, when its reader is made.
struct CopyFrames {
    buf: BytesMut,
}

/// What one CopyData message carries: a few hundred rows, and below glibc's `mmap` threshold
/// (see `main.rs`), so the buffers come from the heap and are reused rather than mapped and
/// faulted in afresh for every message.
const COPY_MESSAGE_BYTES: usize = 128 * 1024;

/// The signature that starts binary COPY data.
const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

impl CopyFrames {
    fn new() -> CopyFrames {
        let mut buf = BytesMut::with_capacity(COPY_MESSAGE_BYTES + COPY_MESSAGE_BYTES / 4);
        buf.put_slice(COPY_SIGNATURE);
        buf.put_i32(0); // flags: no OIDs
        buf.put_i32(0); // no header extension
        CopyFrames { buf }
    }

    /// Frames a `text` value.
    fn text(&mut self, text: &str) -> Result<(), Unframed> {
        frame_text(text, &mut self.buf)
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

/// Frames `text` as a `text` value: its length, then its UTF-8 bytes.
fn frame_text(text: &str, out: &mut BytesMut) -> Result<(), Unframed> {
    let len = i32::try_from(text.len()).map_err(|_| Unframed::TooLong)?;
    out.put_i32(len);
    out.put_slice(text.as_bytes());
    Ok(())
}

/// Why a value could not be framed. Never holds the value: it may be personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unframed {
    /// A date or timestamp past what PostgreSQL's binary format counts from 2000-01-01.
    OutOfRange,
    /// A text of 2 GiB or more, past the length a field can carry.
    TooLong,
}

impl Unframed {
    /// The copy's error for `column`'s value in `row` of its batch.
    fn into_stop(self, step: &'static str, column: &str, row: usize) -> Stop {
        match self {
            Unframed::OutOfRange => Stop::Encode(PostgresError::OutOfRange {
                column: column.to_owned(),
                row,
            }),
            Unframed::TooLong => Stop::Encode(PostgresError::Encode {
                step,
                column: column.to_owned(),
                source: "a text value of 2 GiB or more".into(),
            }),
        }
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
        let scale = u32::from(self.scale);
        let magnitude = self.unscaled.unsigned_abs();
        let (integer, fraction) = div_rem(magnitude, 10u128.pow(scale));
        // At most 10 base-10000 digits on each side of the point (38 decimal digits).
        let mut digits = [0u16; 20];
        // Least significant first: the fraction's digits are aligned on the point, so its
        // last one is padded on the right ("0.5" is the digit 5000 at weight -1).
        let mut count = 0;
        let fraction_digits = scale.div_ceil(4);
        if fraction_digits > 0 {
            let last_width = scale - (fraction_digits - 1) * 4;
            let (mut rest, last) = div_rem(fraction, 10u128.pow(last_width));
            digits[count] = (last * 10u128.pow(4 - last_width)) as u16;
            count += 1;
            for _ in 1..fraction_digits {
                let (higher, digit) = div_rem(rest, 10_000);
                (rest, digits[count]) = (higher, digit as u16);
                count += 1;
            }
        }
        let mut rest = integer;
        let mut integer_digits = 0i16;
        while rest > 0 {
            let (higher, digit) = div_rem(rest, 10_000);
            (rest, digits[count]) = (higher, digit as u16);
            count += 1;
            integer_digits += 1;
        }
        let digits = &mut digits[..count];
        digits.reverse();
        let leading = digits.iter().take_while(|d| **d == 0).count();
        let trailing = digits[leading..]
            .iter()
            .rev()
            .take_while(|d| **d == 0)
            .count();
        let kept = &digits[leading..digits.len() - trailing];
        // The weight of the first digit kept (0 when the value is zero).
        let weight = if kept.is_empty() {
            0
        } else {
            integer_digits - 1 - leading as i16
        };
        out.put_i16(kept.len() as i16);
        out.put_i16(weight);
        out.put_u16(if self.unscaled < 0 {
            NEGATIVE
        } else {
            POSITIVE
        });
        out.put_u16(u16::from(self.scale));
        for digit in kept {
            out.put_u16(*digit);
        }
    }
}

/// `n / d` and `n % d`, in 64 bits when both fit (a 128-bit division is a library call).
fn div_rem(n: u128, d: u128) -> (u128, u128) {
    match (u64::try_from(n), u64::try_from(d)) {
        (Ok(n), Ok(d)) => (u128::from(n / d), u128::from(n % d)),
        _ => (n / d, n % d),
    }
}

/// Days from 1970-01-01, Arrow's epoch, to 2000-01-01, PostgreSQL's.
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01T00:00:00Z to 2000-01-01T00:00:00Z.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A typed view of one column of one batch.
#[derive(Clone, Copy)]
enum ColumnReader<'a> {
    Int64(&'a Int64Array),
    Float64(&'a Float64Array),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Boolean(&'a BooleanArray),
    Date32(&'a Date32Array),
    TimestampMs(&'a TimestampMillisecondArray),
    TimestampUs(&'a TimestampMicrosecondArray),
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
            DataType::Date32 => ColumnReader::Date32(downcast(array, name)?),
            // `PgType::from_arrow` accepted it, so it is a UTC timestamp in ms or µs.
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                ColumnReader::TimestampMs(downcast(array, name)?)
            }
            DataType::Timestamp(_, _) => ColumnReader::TimestampUs(downcast(array, name)?),
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

    /// Frames the value at `row` as binary COPY sends a value of its column's type (the
    /// reader's array was checked against it): its length, -1 for NULL, then its bytes, as
    /// the type's binary send function writes them: `bigint` and `double precision` as 8
    /// big-endian bytes, `text` as UTF-8, `boolean` as one byte, `date` as days and
    /// `timestamptz` as microseconds since 2000-01-01, `numeric` as [`Numeric::encode`].
    fn frame(self, row: usize, out: &mut BytesMut) -> Result<(), Unframed> {
        if !self.is_valid(row) {
            out.put_i32(-1);
            return Ok(());
        }
        match self {
            ColumnReader::Int64(array) => {
                out.put_i32(8);
                out.put_i64(array.value(row));
            }
            ColumnReader::Float64(array) => {
                out.put_i32(8);
                out.put_f64(array.value(row));
            }
            ColumnReader::Utf8(array) => frame_text(array.value(row), out)?,
            ColumnReader::LargeUtf8(array) => frame_text(array.value(row), out)?,
            ColumnReader::Utf8View(array) => frame_text(array.value(row), out)?,
            ColumnReader::Boolean(array) => {
                out.put_i32(1);
                out.put_u8(u8::from(array.value(row)));
            }
            ColumnReader::Date32(array) => {
                let days = array.value(row).checked_sub(PG_EPOCH_DAYS);
                out.put_i32(4);
                out.put_i32(days.ok_or(Unframed::OutOfRange)?);
            }
            ColumnReader::TimestampMs(array) => {
                let micros = array.value(row).checked_mul(1000);
                out.put_i32(8);
                out.put_i64(micros.and_then(pg_micros).ok_or(Unframed::OutOfRange)?);
            }
            ColumnReader::TimestampUs(array) => {
                out.put_i32(8);
                out.put_i64(pg_micros(array.value(row)).ok_or(Unframed::OutOfRange)?);
            }
            ColumnReader::Decimal(array, scale) => {
                let at = out.len();
                out.put_i32(0);
                Numeric {
                    unscaled: array.value(row),
                    scale,
                }
                .encode(out);
                let len = (out.len() - at - 4) as i32;
                out[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
        Ok(())
    }

    fn is_valid(self, row: usize) -> bool {
        match self {
            ColumnReader::Int64(array) => array.is_valid(row),
            ColumnReader::Float64(array) => array.is_valid(row),
            ColumnReader::Utf8(array) => array.is_valid(row),
            ColumnReader::LargeUtf8(array) => array.is_valid(row),
            ColumnReader::Utf8View(array) => array.is_valid(row),
            ColumnReader::Boolean(array) => array.is_valid(row),
            ColumnReader::Date32(array) => array.is_valid(row),
            ColumnReader::TimestampMs(array) => array.is_valid(row),
            ColumnReader::TimestampUs(array) => array.is_valid(row),
            ColumnReader::Decimal(array, _) => array.is_valid(row),
        }
    }
}

/// Epoch microseconds as PostgreSQL counts them, from 2000-01-01.
fn pg_micros(unix_micros: i64) -> Option<i64> {
    unix_micros.checked_sub(PG_EPOCH_MICROS)
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

    /// The encoding as PostgreSQL's `numeric_send` is described, by way of the decimal text:
    /// groups of four digits aligned on the point, zero groups at either end left out.
    fn by_text(unscaled: i128, scale: u8) -> Vec<u8> {
        let scale = usize::from(scale);
        let digits = format!("{:0>width$}", unscaled.unsigned_abs(), width = scale + 1);
        let (integer, fraction) = digits.split_at(digits.len() - scale);
        let integer = format!("{integer:0>width$}", width = integer.len().div_ceil(4) * 4);
        let fraction = format!(
            "{fraction:0<width$}",
            width = fraction.len().div_ceil(4) * 4
        );
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
        let weight = if groups.is_empty() {
            0
        } else {
            (integer.len() / 4) as i16 - 1 - leading as i16
        };
        let sign = if unscaled < 0 { 0x4000 } else { 0 };
        let mut words = vec![groups.len() as u16, weight as u16, sign, scale as u16];
        words.extend(groups);
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    proptest::proptest! {
        /// Every Decimal128 value of every scale, small (the 64-bit path) and up to 38 digits.
        #[test]
        fn a_numeric_encodes_as_its_decimal_text_reads(
            digits in 0u32..=38,
            value in proptest::num::i128::ANY,
            scale in 0u8..=38,
        ) {
            let bound = 10i128.pow(digits);
            let unscaled = value % bound;
            proptest::prop_assert_eq!(encoded(unscaled, scale), by_text(unscaled, scale));
        }
    }
}

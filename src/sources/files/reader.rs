//! Reading files: an object's bytes as a blocking `BufRead` (so the `csv` crate and line
//! splitting work on a stream, never the whole file), rows into Arrow batches, bad lines
//! into dead letters. Runs on a blocking thread, beside the pipeline that stages batches.

use std::io::{BufRead, Read};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::config::{ColumnType, FileStreamConfig, Format};
use super::error::{FilesError, ReadError};
use super::layout::Layout;
use super::parse::{Inference, JsonRows, Row, classify_text, convert_text};
use crate::load::DeadLetter;
use crate::sources::Extracted;
use crate::sources::cells::{Cell, ColumnBuilder};
use crate::{Error, Result};

/// An object's bytes as they are read: a local file directly (object_store would hop to a
/// blocking task per 8 KiB chunk), anything else chunk by chunk from the store's stream.
pub enum ObjectReader {
    File(std::io::BufReader<std::fs::File>),
    Stream {
        handle: Handle,
        chunks: BoxStream<'static, object_store::Result<Bytes>>,
        chunk: Bytes,
    },
}

/// Read buffer for local files.
const FILE_BUFFER: usize = 1 << 20;

impl ObjectReader {
    /// Opens an object for reading; call on a blocking thread.
    pub fn open(
        handle: &Handle,
        store: &Arc<dyn ObjectStore>,
        path: &Path,
    ) -> Result<ObjectReader, ReadError> {
        let got = handle.block_on(store.get(path))?;
        if let GetResultPayload::File(file, _) = &got.payload {
            // A whole-object get starts at 0; the file is read to its end like the stream.
            if got.range.start == 0 {
                let file = file.try_clone()?;
                return Ok(ObjectReader::File(std::io::BufReader::with_capacity(
                    FILE_BUFFER,
                    file,
                )));
            }
        }
        Ok(ObjectReader::Stream {
            handle: handle.clone(),
            chunks: got.into_stream(),
            chunk: Bytes::new(),
        })
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ObjectReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        match self {
            ObjectReader::File(file) => file.fill_buf(),
            ObjectReader::Stream {
                handle,
                chunks,
                chunk,
            } => {
                while chunk.is_empty() {
                    match handle.block_on(chunks.next()) {
                        None => break,
                        Some(Ok(next)) => *chunk = next,
                        Some(Err(e)) => return Err(std::io::Error::other(e)),
                    }
                }
                Ok(chunk)
            }
        }
    }

    fn consume(&mut self, amount: usize) {
        match self {
            ObjectReader::File(file) => file.consume(amount),
            ObjectReader::Stream { chunk, .. } => {
                let _ = chunk.split_to(amount);
            }
        }
    }
}

/// One file to load.
#[derive(Debug, Clone)]
pub struct FileToRead {
    pub location: Path,
    /// The path relative to the source URL, as globs and dead letters name it.
    pub relative: String,
    /// The version of its rows when there is no version column: the file's last-modified
    /// time when its content was first loaded.
    pub version_ms: i64,
}

/// What a load reads and where it sends it.
pub struct Load {
    pub handle: Handle,
    pub store: Arc<dyn ObjectStore>,
    pub layout: Arc<Layout>,
    pub config: FileStreamConfig,
    /// Rows whose cursor value is below this are skipped.
    pub since: Option<i64>,
    pub batch_rows: usize,
    pub tx: mpsc::Sender<Result<Extracted>>,
}

/// The receiving side hung up; stop reading quietly.
#[derive(Debug)]
pub struct Hangup;

/// Dead letters are sent in groups of this many (or with the batch they came with).
const DEAD_LETTER_GROUP: usize = 1000;

impl Load {
    /// Reads every file in order, sending batches, dead letters and finally the largest
    /// cursor value seen (when there is a cursor column).
    pub fn run(self, files: Vec<FileToRead>) -> Result<(), LoadError> {
        let mut out = Output::new(&self);
        for file in &files {
            let reader = ObjectReader::open(&self.handle, &self.store, &file.location)
                .map_err(|e| read_error(file, e))?;
            match self.config.format() {
                Format::Jsonl => self.read_jsonl(file, reader, &mut out)?,
                Format::Csv => self.read_csv(file, reader, &mut out)?,
            }
        }
        out.flush()?;
        if self.layout.cursor.is_some() {
            if let Some(reached) = out.max_cursor {
                out.send(Extracted::CursorReached(reached))?;
            }
        }
        Ok(())
    }

    fn read_jsonl(
        &self,
        file: &FileToRead,
        mut reader: ObjectReader,
        out: &mut Output,
    ) -> Result<(), LoadError> {
        let mut rows = JsonRows::new(&self.layout);
        let max = self.config.max_record_bytes;
        let mut line = Vec::with_capacity(4096);
        let mut number = 0u64;
        loop {
            let read = read_line_capped(&mut reader, &mut line, max)
                .map_err(|e| read_error(file, e.into()))?;
            number += 1;
            match read {
                Line::End => return Ok(()),
                Line::TooLong => {
                    out.row.clear();
                    out.dead(file, number, too_long(max), capped_raw(&line))?;
                    continue;
                }
                Line::Read => {}
            }
            let text = trim_line_end(&line);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.row.clear();
            match rows.parse(text, &mut out.row) {
                Ok(()) => out.accept(self, file, number, || lossy(text))?,
                Err(reason) => out.dead(file, number, reason, lossy(text))?,
            }
        }
    }

    fn read_csv(
        &self,
        file: &FileToRead,
        reader: ObjectReader,
        out: &mut Output,
    ) -> Result<(), LoadError> {
        let config = &self.config;
        let max = config.max_record_bytes;
        let mut csv = csv_reader(config).from_reader(Budgeted::new(reader, max));
        let nulls = config.null_values();
        let mut record = csv::ByteRecord::new();
        // File field position → layout column.
        let mut columns: Option<Vec<Option<usize>>> = None;
        if !config.header() {
            let declared = config.declared().unwrap_or_default();
            columns = Some(
                declared
                    .iter()
                    .map(|(name, _)| self.layout.index_of(name))
                    .collect(),
            );
        }
        loop {
            let more = csv
                .read_byte_record(&mut record)
                .map_err(|e| read_error(file, e.into()))?;
            if !more {
                return Ok(());
            }
            let number = record.position().map_or(0, |p| p.line());
            let start = record.position().map_or(0, |p| p.byte());
            let end = csv.position().byte();
            match csv.get_mut().record_read(start, end) {
                Record::Fits => {}
                Record::TooLong => {
                    out.row.clear();
                    let raw = capped_raw(&record_bytes(&record, config.delimiter()));
                    out.dead(file, number, too_long(max), raw)?;
                    continue;
                }
                Record::RestOfFile => {
                    out.row.clear();
                    let raw = capped_raw(&record_bytes(&record, config.delimiter()));
                    return out.dead(file, number, too_long(max), raw);
                }
            }
            let Some(columns) = &columns else {
                let names = header_names(&record);
                columns = Some(
                    names
                        .iter()
                        .map(|name| self.layout.index_of(name))
                        .collect(),
                );
                if !names.iter().any(|n| *n == self.layout.columns[0].name) {
                    return Err(FilesError::NoKeyColumn {
                        file: file.relative.clone(),
                        key: self.layout.columns[0].name.clone(),
                        columns: names.join(", "),
                    }
                    .into());
                }
                continue;
            };
            let raw = || join_record(&record, config.delimiter());
            out.row.clear();
            if record.len() != columns.len() {
                let reason = format!("expected {} fields, found {}", columns.len(), record.len());
                out.dead(file, number, reason, raw())?;
                continue;
            }
            let mut failed = None;
            for (field, column) in record.iter().zip(columns) {
                let Some(column) = *column else { continue };
                let text = match std::str::from_utf8(field) {
                    Ok(text) => text,
                    Err(bad) => {
                        let problem = crate::values::Problem::NotUtf8 {
                            byte: bad.valid_up_to(),
                            within: "field",
                        };
                        failed = Some((column, problem.to_string()));
                        break;
                    }
                };
                if nulls.iter().any(|n| n == text) {
                    continue;
                }
                let kind = self.layout.columns[column].kind;
                if kind == ColumnType::Utf8 {
                    out.row.set_text(column, text);
                    continue;
                }
                match convert_text(kind, text) {
                    Ok(cell) => out.row.set(column, cell),
                    Err(reason) => {
                        failed = Some((column, reason));
                        break;
                    }
                }
            }
            match failed {
                Some((column, reason)) => {
                    out.row.failed = Some(column);
                    let name = &self.layout.columns[column].name;
                    out.dead(file, number, format!("{name}: {reason}"), raw())?
                }
                None => out.accept(self, file, number, raw)?,
            }
        }
    }
}

/// Why a load ended early.
pub enum LoadError {
    Hangup,
    Failed(Error),
}

impl From<Hangup> for LoadError {
    fn from(_: Hangup) -> LoadError {
        LoadError::Hangup
    }
}

impl From<FilesError> for LoadError {
    fn from(err: FilesError) -> LoadError {
        LoadError::Failed(err.into())
    }
}

/// The batch being filled, pending dead letters, and the row buffer.
struct Output {
    builders: Vec<ColumnBuilder>,
    version: ColumnBuilder,
    deleted: ColumnBuilder,
    rows: usize,
    batch_rows: usize,
    schema: arrow::datatypes::SchemaRef,
    dead: Vec<DeadLetter>,
    row: Row,
    max_cursor: Option<i64>,
    tx: mpsc::Sender<Result<Extracted>>,
}

impl Output {
    fn new(load: &Load) -> Output {
        let layout = &load.layout;
        Output {
            builders: layout
                .columns
                .iter()
                .map(|c| ColumnBuilder::new(&super::layout::data_type(c.kind)))
                .collect(),
            version: ColumnBuilder::new(&crate::schema::timestamp_type()),
            deleted: ColumnBuilder::new(&arrow::datatypes::DataType::Boolean),
            rows: 0,
            batch_rows: load.batch_rows.max(1),
            schema: layout.schema.clone(),
            dead: Vec::new(),
            row: Row::new(layout.columns.len()),
            max_cursor: None,
            tx: load.tx.clone(),
        }
    }

    /// Takes the parsed row into the batch, unless it is older than the cursor or lacks
    /// what every row needs (a key, a version).
    fn accept(
        &mut self,
        load: &Load,
        file: &FileToRead,
        line: u64,
        raw: impl FnOnce() -> String,
    ) -> Result<(), LoadError> {
        let layout = &load.layout;
        if self.row.cells[0] == Cell::Null {
            let key = &layout.columns[0].name;
            self.row.failed = Some(0);
            return self.dead(
                file,
                line,
                format!("{key}: the key is missing or null"),
                raw(),
            );
        }
        if let Some(at) = layout.cursor {
            if let Cell::Int(value) | Cell::Millis(value) = self.row.cells[at] {
                if load.since.is_some_and(|since| value < since) {
                    return Ok(());
                }
                self.max_cursor = Some(self.max_cursor.map_or(value, |m| m.max(value)));
            }
        }
        let version = match layout.version {
            None => file.version_ms,
            Some(at) => match self.row.cells[at] {
                Cell::Int(ms) | Cell::Millis(ms) => ms,
                _ => {
                    let name = &layout.columns[at].name;
                    self.row.failed = Some(at);
                    return self.dead(
                        file,
                        line,
                        format!("{name}: the version is missing or null"),
                        raw(),
                    );
                }
            },
        };
        let deleted = layout
            .deleted
            .is_some_and(|at| self.row.cells[at] == Cell::Bool(true));
        for (builder, cell) in self.builders.iter_mut().zip(&self.row.cells) {
            builder.append_ref(cell);
        }
        self.version.append(Cell::Millis(version));
        self.deleted.append(Cell::Bool(deleted));
        self.rows += 1;
        if self.rows >= self.batch_rows {
            self.flush()?;
        }
        Ok(())
    }

    fn dead(
        &mut self,
        file: &FileToRead,
        line: u64,
        reason: String,
        raw: String,
    ) -> Result<(), LoadError> {
        let field = self
            .row
            .failed
            .map(|at| self.schema.field(at).name().clone());
        self.dead.push(DeadLetter {
            key: self.row.key_text(),
            field,
            reason: format!("{}:{line}: {reason}", file.relative),
            raw,
        });
        if self.dead.len() >= DEAD_LETTER_GROUP {
            let letters = std::mem::take(&mut self.dead);
            self.send(Extracted::DeadLetters(letters))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), LoadError> {
        if self.rows > 0 {
            let mut columns: Vec<_> = self.builders.iter_mut().map(|b| b.finish()).collect();
            columns.push(self.version.finish());
            columns.push(self.deleted.finish());
            self.rows = 0;
            let batch =
                RecordBatch::try_new(self.schema.clone(), columns).map_err(FilesError::Batch)?;
            self.send(Extracted::Batch(batch))?;
        }
        if !self.dead.is_empty() {
            let letters = std::mem::take(&mut self.dead);
            self.send(Extracted::DeadLetters(letters))?;
        }
        Ok(())
    }

    fn send(&self, item: Extracted) -> Result<(), Hangup> {
        self.tx.blocking_send(Ok(item)).map_err(|_| Hangup)
    }
}

fn read_error(file: &FileToRead, source: ReadError) -> FilesError {
    FilesError::Read {
        file: file.relative.clone(),
        source,
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Header names; an empty name becomes `column_N` (1-based), a UTF-8 BOM is dropped.
fn header_names(record: &csv::ByteRecord) -> Vec<String> {
    record
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let field = field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field);
            let name = String::from_utf8_lossy(field).trim().to_string();
            if name.is_empty() {
                format!("column_{}", i + 1)
            } else {
                name
            }
        })
        .collect()
}

/// A record's fields joined by the delimiter: the dead letter's `raw` for CSV.
fn join_record(record: &csv::ByteRecord, delimiter: u8) -> String {
    lossy(&record_bytes(record, delimiter))
}

fn record_bytes(record: &csv::ByteRecord, delimiter: u8) -> Vec<u8> {
    let mut raw = Vec::new();
    for (i, field) in record.iter().enumerate() {
        if i > 0 {
            raw.push(delimiter);
        }
        raw.extend_from_slice(field);
    }
    raw
}

/// How much of a record longer than `max_record_bytes` its dead letter keeps: enough to find
/// it in the file; dead letters are held in groups, so a whole record each could be gigabytes.
const OVERSIZED_RAW: usize = 1024;

fn too_long(max: usize) -> String {
    format!("record longer than {max} bytes")
}

fn capped_raw(bytes: &[u8]) -> String {
    let mut end = bytes.len().min(OVERSIZED_RAW);
    // Cut at a character boundary, so a cut character does not become U+FFFD.
    while end > 0 && end < bytes.len() && (bytes[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    lossy(&bytes[..end])
}

/// What [`read_line_capped`] read.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// The input had ended.
    End,
    /// A line, its newline included when it had one.
    Read,
    /// A line longer than the cap, consumed to its newline; only its first bytes were kept.
    TooLong,
}

/// Reads one line into `line` (cleared first) like `read_until(b'\n')`, but keeps at most
/// `max` bytes: a longer line (newline included) is consumed to its newline chunk by chunk
/// and only its first `max` bytes stay in `line`, so a file without newlines never lands in
/// memory whole.
fn read_line_capped(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    line.clear();
    let mut total = 0usize;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        let (taken, done) = match available.iter().position(|&b| b == b'\n') {
            Some(newline) => (newline + 1, true),
            None => (available.len(), false),
        };
        total = total.saturating_add(taken);
        let room = max.saturating_sub(line.len()).min(taken);
        line.extend_from_slice(&available[..room]);
        reader.consume(taken);
        if done {
            break;
        }
    }
    Ok(match total {
        0 => Line::End,
        total if total > max => Line::TooLong,
        _ => Line::Read,
    })
}

/// The CSV reader's buffer. [`Budgeted`] lets a record run this much past the cap, because
/// the parser may hold that much read but not yet parsed.
const CSV_BUFFER: usize = 8 * 1024;

/// A CSV reader (without headers, flexible) for a stream's delimiter and quote.
fn csv_reader(config: &FileStreamConfig) -> csv::ReaderBuilder {
    let mut builder = csv::ReaderBuilder::new();
    builder
        .delimiter(config.delimiter())
        .quote(config.quote())
        // Headers and ragged records are handled by the callers, with line numbers.
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(CSV_BUFFER);
    builder
}

/// The bytes under a CSV reader, on a budget per record: once the record being parsed has
/// run more than `max` bytes past its start (plus the parser's buffer), the input ends as if
/// the file did. The `csv` crate grows a record until it ends, so an unclosed quote would
/// otherwise pull the rest of the file into memory; nothing tells where such a record would
/// end without parsing all of it, so the rest of the file is that one broken record.
struct Budgeted<R> {
    inner: R,
    max: usize,
    /// Bytes handed to the parser so far.
    delivered: u64,
    /// Where the record being parsed starts.
    record_start: u64,
    /// Whether the input was ended early.
    spent: bool,
}

/// How a record [`Budgeted`] let through compares with the cap.
#[derive(Debug, PartialEq, Eq)]
enum Record {
    Fits,
    /// Longer than the cap but complete: reading goes on after it.
    TooLong,
    /// Cut off by the budget: the rest of the file is this record.
    RestOfFile,
}

impl<R> Budgeted<R> {
    fn new(inner: R, max: usize) -> Budgeted<R> {
        Budgeted {
            inner,
            max,
            delivered: 0,
            record_start: 0,
            spent: false,
        }
    }

    /// Takes note that the parser returned the record from byte `start` to `end` (where the
    /// next one starts), and says how it compares with the cap.
    fn record_read(&mut self, start: u64, end: u64) -> Record {
        self.record_start = end;
        if self.spent {
            Record::RestOfFile
        } else if end.saturating_sub(start) > self.max as u64 {
            Record::TooLong
        } else {
            Record::Fits
        }
    }
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let limit = self.record_start + (self.max + CSV_BUFFER) as u64;
        let allowed = limit.saturating_sub(self.delivered);
        if allowed == 0 {
            self.spent = true;
            return Ok(0);
        }
        let wanted = buf
            .len()
            .min(usize::try_from(allowed).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..wanted])?;
        self.delivered += read as u64;
        Ok(read)
    }
}

/// Infers the columns of a file from its first `rows` records. Blocking.
pub fn infer_columns(
    config: &FileStreamConfig,
    mut reader: ObjectReader,
    rows: usize,
) -> Result<Vec<(String, ColumnType)>, ReadError> {
    let max = config.max_record_bytes;
    let mut inference = Inference::default();
    match config.format() {
        Format::Jsonl => {
            let mut seen = 0;
            let mut line = Vec::new();
            // Lines over the cap are left out of the sample, as the load dead-letters them.
            loop {
                match read_line_capped(&mut reader, &mut line, max)? {
                    Line::End => break,
                    Line::TooLong => continue,
                    Line::Read => {}
                }
                let text = trim_line_end(&line);
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                inference.observe_json_line(text);
                seen += 1;
                if seen >= rows {
                    break;
                }
            }
        }
        Format::Csv => {
            let mut csv = csv_reader(config).from_reader(Budgeted::new(reader, max));
            let nulls = config.null_values();
            let mut record = csv::ByteRecord::new();
            let next = |csv: &mut csv::Reader<Budgeted<ObjectReader>>,
                        record: &mut csv::ByteRecord|
             -> Result<Option<Record>, ReadError> {
                if !csv.read_byte_record(record)? {
                    return Ok(None);
                }
                let start = record.position().map_or(0, |p| p.byte());
                let end = csv.position().byte();
                Ok(Some(csv.get_mut().record_read(start, end)))
            };
            if next(&mut csv, &mut record)? != Some(Record::Fits) {
                return Ok(Vec::new());
            }
            let names = header_names(&record);
            let columns: Vec<usize> = names.iter().map(|n| inference.column(n)).collect();
            for _ in 0..rows {
                match next(&mut csv, &mut record)? {
                    None | Some(Record::RestOfFile) => break,
                    Some(Record::TooLong) => continue,
                    Some(Record::Fits) => {}
                }
                if record.len() != columns.len() {
                    continue;
                }
                for (field, &column) in record.iter().zip(&columns) {
                    let Ok(text) = std::str::from_utf8(field) else {
                        continue;
                    };
                    if !nulls.iter().any(|n| n == text) {
                        inference.observe(column, classify_text(text));
                    }
                }
            }
        }
    }
    Ok(inference.finish())
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Cursor};

    use super::*;

    /// Every line `read_line_capped` reads from `input` through a reader of `buffer` bytes,
    /// as what it kept and whether it was too long.
    fn lines(input: &str, max: usize, buffer: usize) -> Vec<(String, Line)> {
        let mut reader = BufReader::with_capacity(buffer, Cursor::new(input.as_bytes()));
        let mut line = Vec::new();
        let mut out = Vec::new();
        loop {
            match read_line_capped(&mut reader, &mut line, max).unwrap() {
                Line::End => return out,
                read => out.push((lossy(&line), read)),
            }
        }
    }

    #[test]
    fn a_line_over_the_cap_is_cut_and_the_next_line_read_whole() {
        let input = format!("{{\"a\":1}}\n{}\n{{\"b\":2}}", "x".repeat(100));
        for buffer in [1, 3, 64, 4096] {
            assert_eq!(
                lines(&input, 10, buffer),
                [
                    ("{\"a\":1}\n".to_string(), Line::Read),
                    ("x".repeat(10), Line::TooLong),
                    ("{\"b\":2}".to_string(), Line::Read),
                ],
                "buffer {buffer}"
            );
        }
        // The newline counts: a line of exactly the cap fits without it, not with it.
        assert_eq!(lines("abcd", 4, 2), [("abcd".to_string(), Line::Read)]);
        assert_eq!(lines("abcd\n", 4, 2), [("abcd".to_string(), Line::TooLong)]);
    }

    /// Every record of `input` read through [`Budgeted`] as its first field and how it
    /// compared with the cap; stops after a record that ends the file.
    fn records(input: &str, max: usize) -> Vec<(String, Record)> {
        let budgeted = Budgeted::new(Cursor::new(input.as_bytes().to_vec()), max);
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(CSV_BUFFER)
            .from_reader(budgeted);
        let mut record = csv::ByteRecord::new();
        let mut out = Vec::new();
        while csv.read_byte_record(&mut record).unwrap() {
            let start = record.position().unwrap().byte();
            let end = csv.position().byte();
            let fit = csv.get_mut().record_read(start, end);
            let stop = fit == Record::RestOfFile;
            out.push((lossy(&record[0]), fit));
            if stop {
                break;
            }
        }
        out
    }

    #[test]
    fn a_closed_long_csv_record_is_skipped_and_an_unclosed_quote_ends_the_file() {
        let long = "y".repeat(2000);
        let closed = format!("1,a\n2,\"{long}\"\n3,c\n");
        assert_eq!(
            records(&closed, 100),
            [
                ("1".to_string(), Record::Fits),
                ("2".to_string(), Record::TooLong),
                ("3".to_string(), Record::Fits),
            ]
        );
        // Far longer than the cap and the parser's buffer: cut off, never read to the end.
        let rest: String = (4..10_000).map(|i| format!("{i},x\n")).collect();
        let unclosed = format!("1,a\n2,\"open\n{rest}");
        assert_eq!(
            records(&unclosed, 100),
            [
                ("1".to_string(), Record::Fits),
                ("2".to_string(), Record::RestOfFile),
            ]
        );
    }
}

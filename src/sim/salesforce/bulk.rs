//! Bulk API 2.0 query jobs (crm-apis.md A6): the state machine that status polls advance,
//! the job-info bodies, and the CSV result chunks with their `Sforce-Locator`s.
//!
//! A job's rows are rendered to CSV cells when it is created, so later changes to the
//! data never show up in its results, as with Salesforce's own snapshot.

use serde_json::{Map, Value, json};

use super::records::{bulk_datetime, parse_datetime, rest_datetime};
use super::schema::{FieldDef, FieldType};

/// Rows per results chunk when the request names no `maxRecords`.
pub(crate) const DEFAULT_MAX_RECORDS: usize = 50_000;
/// Key prefix of Bulk job Ids.
pub(crate) const JOB_PREFIX: &str = "750";
/// `apiVersion` in job bodies, a JSON number.
const API_VERSION_NUMBER: f64 = 62.0;
/// The run-as user of the connected app.
const CREATED_BY: &str = "005000000000000001";
const FAILURE_MESSAGE: &str =
    "InternalServerError: the query job failed while processing (injected by the simulator)";

/// Where a job is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
    UploadComplete,
    InProgress,
    JobComplete,
    Failed,
    Aborted,
}

impl JobState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobState::UploadComplete => "UploadComplete",
            JobState::InProgress => "InProgress",
            JobState::JobComplete => "JobComplete",
            JobState::Failed => "Failed",
            JobState::Aborted => "Aborted",
        }
    }

    fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::JobComplete | JobState::Failed | JobState::Aborted
        )
    }
}

/// `query` hides soft-deleted rows; `queryAll` includes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Query,
    QueryAll,
}

impl Operation {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "query" => Some(Operation::Query),
            "queryAll" => Some(Operation::QueryAll),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Operation::Query => "query",
            Operation::QueryAll => "queryAll",
        }
    }

    pub(crate) fn include_deleted(self) -> bool {
        self == Operation::QueryAll
    }
}

/// The `columnDelimiter` and `lineEnding` a job was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CsvFormat {
    delimiter: u8,
    delimiter_name: &'static str,
    crlf: bool,
}

impl Default for CsvFormat {
    fn default() -> Self {
        CsvFormat {
            delimiter: b',',
            delimiter_name: "COMMA",
            crlf: false,
        }
    }
}

impl CsvFormat {
    /// Accepts Salesforce's names; `None` keeps the defaults (COMMA, LF).
    pub(crate) fn parse(
        column_delimiter: Option<&str>,
        line_ending: Option<&str>,
    ) -> Result<Self, BulkError> {
        let (delimiter, delimiter_name) = match column_delimiter.unwrap_or("COMMA") {
            "COMMA" => (b',', "COMMA"),
            "TAB" => (b'\t', "TAB"),
            "PIPE" => (b'|', "PIPE"),
            "SEMICOLON" => (b';', "SEMICOLON"),
            "CARET" => (b'^', "CARET"),
            "BACKQUOTE" => (b'`', "BACKQUOTE"),
            other => {
                return Err(BulkError::invalid_job(format!(
                    "Invalid column delimiter: {other}"
                )));
            }
        };
        let crlf = match line_ending.unwrap_or("LF") {
            "LF" => false,
            "CRLF" => true,
            other => {
                return Err(BulkError::invalid_job(format!(
                    "Invalid line ending: {other}"
                )));
            }
        };
        Ok(CsvFormat {
            delimiter,
            delimiter_name,
            crlf,
        })
    }
}

/// A refused Bulk request: answered 400 with `[{"errorCode": code, "message": …}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BulkError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl BulkError {
    pub(crate) fn invalid_job(message: impl Into<String>) -> Self {
        BulkError {
            code: "INVALIDJOB",
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        BulkError {
            code: "UNKNOWN_EXCEPTION",
            message: message.into(),
        }
    }
}

/// Everything fixed when a job is created.
#[derive(Debug, Clone)]
pub(crate) struct JobSpec {
    /// `750` + 15 digits.
    pub(crate) id: String,
    pub(crate) operation: Operation,
    /// The sObject name, describe casing.
    pub(crate) object: &'static str,
    pub(crate) created_ms: i64,
    /// Status polls until the job leaves `InProgress`; 0 completes on the first poll.
    pub(crate) complete_after: u32,
    /// End in `Failed` instead of `JobComplete`.
    pub(crate) fail: bool,
    pub(crate) format: CsvFormat,
    /// The SELECT field names, the CSV header row.
    pub(crate) header: Vec<String>,
    /// Result rows, one cell per header column, `""` for null.
    pub(crate) rows: Vec<Vec<String>>,
}

/// One Bulk 2.0 query job.
#[derive(Debug, Clone)]
pub(crate) struct BulkJob {
    spec: JobSpec,
    state: JobState,
    polls: u32,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) csv: Vec<u8>,
    /// Data rows in `csv`: `Sforce-NumberOfRecords`.
    pub(crate) records: usize,
    /// The next chunk's locator, `None` on the last chunk (`Sforce-Locator: null`).
    pub(crate) next_locator: Option<String>,
}

impl BulkJob {
    /// A freshly created job, in `UploadComplete`.
    pub(crate) fn new(spec: JobSpec) -> Self {
        BulkJob {
            spec,
            state: JobState::UploadComplete,
            polls: 0,
        }
    }

    #[cfg(test)]
    fn state(&self) -> JobState {
        self.state
    }

    /// One status poll: moves `UploadComplete` → `InProgress` → … → `JobComplete` (or
    /// `Failed`) once `complete_after` polls have happened. Terminal states stay put.
    pub(crate) fn poll(&mut self) -> JobState {
        if !self.state.is_terminal() {
            self.polls = self.polls.saturating_add(1);
            self.state = if self.polls < self.spec.complete_after {
                JobState::InProgress
            } else if self.spec.fail {
                JobState::Failed
            } else {
                JobState::JobComplete
            };
        }
        self.state
    }

    /// `PATCH {"state":"Aborted"}`: only a job still running can be aborted.
    pub(crate) fn abort(&mut self) -> Result<(), BulkError> {
        if self.state.is_terminal() {
            return Err(BulkError {
                code: "INVALIDJOBSTATE",
                message: format!("Job is already in state {}", self.state.as_str()),
            });
        }
        self.state = JobState::Aborted;
        Ok(())
    }

    /// The job-info body returned on creation and abort.
    pub(crate) fn info(&self) -> Value {
        Value::Object(self.base())
    }

    /// The body of `GET /jobs/query/{id}`: the info plus progress, and `errorMessage`
    /// when the job failed.
    pub(crate) fn status(&self) -> Value {
        let mut body = self.base();
        let complete = self.state == JobState::JobComplete;
        body.insert("jobType".to_owned(), json!("V2Query"));
        body.insert(
            "numberRecordsProcessed".to_owned(),
            json!(if complete { self.spec.rows.len() } else { 0 }),
        );
        body.insert("retries".to_owned(), json!(0));
        body.insert(
            "totalProcessingTime".to_owned(),
            json!(u64::from(self.polls) * 250),
        );
        if self.state == JobState::Failed {
            body.insert("errorMessage".to_owned(), json!(FAILURE_MESSAGE));
        }
        Value::Object(body)
    }

    fn base(&self) -> Map<String, Value> {
        let spec = &self.spec;
        let created = rest_datetime(spec.created_ms);
        let body = json!({
            "id": spec.id,
            "operation": spec.operation.as_str(),
            "object": spec.object,
            "createdById": CREATED_BY,
            "createdDate": created,
            "systemModstamp": created,
            "state": self.state.as_str(),
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": API_VERSION_NUMBER,
            "lineEnding": if spec.format.crlf { "CRLF" } else { "LF" },
            "columnDelimiter": spec.format.delimiter_name,
        });
        match body {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    /// `GET /jobs/query/{id}/results?locator=L&maxRecords=N` (raw query values).
    ///
    /// Refused unless the job is `JobComplete`; a locator is the offset of the chunk's
    /// first row, and may be fetched again for as long as the job exists.
    pub(crate) fn results(
        &self,
        locator: Option<&str>,
        max_records: Option<&str>,
    ) -> Result<Chunk, BulkError> {
        if self.state != JobState::JobComplete {
            return Err(BulkError::invalid_job(format!(
                "Results are only available once the job is JobComplete; job {} is {}",
                self.spec.id,
                self.state.as_str()
            )));
        }
        let total = self.spec.rows.len();
        let offset = match locator.map(str::trim) {
            None | Some("") => 0,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|&offset| offset <= total)
                .ok_or_else(|| BulkError {
                    code: "INVALIDLOCATOR",
                    message: format!("Invalid locator: {text}"),
                })?,
        };
        let max = match max_records.map(str::trim) {
            None | Some("") => DEFAULT_MAX_RECORDS,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|&max| max > 0)
                .ok_or_else(|| {
                    BulkError::invalid_job(format!(
                        "maxRecords must be a positive integer, got {text}"
                    ))
                })?,
        };
        let end = offset.saturating_add(max).min(total);
        let rows = &self.spec.rows[offset..end];
        Ok(Chunk {
            csv: self.write_csv(rows)?,
            records: rows.len(),
            next_locator: (end < total).then(|| end.to_string()),
        })
    }

    /// RFC 4180 with every field quoted, as Salesforce writes it.
    fn write_csv(&self, rows: &[Vec<String>]) -> Result<Vec<u8>, BulkError> {
        let terminator = if self.spec.format.crlf {
            csv::Terminator::CRLF
        } else {
            csv::Terminator::Any(b'\n')
        };
        let mut writer = csv::WriterBuilder::new()
            .delimiter(self.spec.format.delimiter)
            .terminator(terminator)
            .quote_style(csv::QuoteStyle::Always)
            .from_writer(Vec::new());
        let failed = |err: csv::Error| BulkError::internal(err.to_string());
        writer.write_record(&self.spec.header).map_err(failed)?;
        for row in rows {
            writer.write_record(row).map_err(failed)?;
        }
        writer
            .into_inner()
            .map_err(|err| BulkError::internal(err.error().to_string()))
    }
}

/// One CSV cell: null as empty, datetimes in the `…000Z` form, booleans `true`/`false`,
/// numbers as JSON writes them.
pub(crate) fn csv_cell(def: &FieldDef, value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) if def.ty == FieldType::DateTime => {
            parse_datetime(text).map_or_else(|| text.clone(), bulk_datetime)
        }
        Some(Value::String(text)) => text.clone(),
        Some(Value::Bool(flag)) => flag.to_string(),
        Some(Value::Number(number)) => number.to_string(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::salesforce::schema::{ObjectSchema, SObject};

    fn job(rows: usize, complete_after: u32, fail: bool) -> BulkJob {
        BulkJob::new(JobSpec {
            id: "750000000000000001".to_owned(),
            operation: Operation::QueryAll,
            object: "Account",
            created_ms: 1_714_557_600_000,
            complete_after,
            fail,
            format: CsvFormat::default(),
            header: vec!["Id".to_owned(), "Name".to_owned()],
            rows: (1..=rows)
                .map(|n| vec![format!("001{n:015}"), format!("Name {n}")])
                .collect(),
        })
    }

    fn read(csv: &[u8]) -> Vec<Vec<String>> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(csv)
            .records()
            .map(|record| {
                record
                    .expect("valid csv")
                    .iter()
                    .map(str::to_owned)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn polls_advance_the_state_machine() {
        let mut slow = job(3, 2, false);
        assert_eq!(slow.state(), JobState::UploadComplete);
        assert_eq!(slow.info()["state"], "UploadComplete");
        assert_eq!(slow.poll(), JobState::InProgress);
        assert_eq!(slow.status()["numberRecordsProcessed"], 0);
        assert!(slow.results(None, None).is_err(), "not complete yet");
        assert_eq!(slow.poll(), JobState::JobComplete);
        assert_eq!(slow.poll(), JobState::JobComplete);
        let status = slow.status();
        assert_eq!(status["numberRecordsProcessed"], 3);
        assert_eq!(status["jobType"], "V2Query");
        assert_eq!(status["apiVersion"], 62.0);
        assert_eq!(status["operation"], "queryAll");
        assert!(status.get("errorMessage").is_none());
        assert!(slow.abort().is_err(), "complete jobs cannot be aborted");

        let mut quick = job(1, 0, false);
        assert_eq!(quick.poll(), JobState::JobComplete);

        let mut failing = job(3, 1, true);
        assert_eq!(failing.poll(), JobState::Failed);
        assert_eq!(failing.poll(), JobState::Failed);
        assert!(failing.status()["errorMessage"].is_string());
        let refused = failing.results(None, None).expect_err("failed job");
        assert_eq!(refused.code, "INVALIDJOB");

        let mut aborted = job(3, 5, false);
        aborted.poll();
        aborted.abort().expect("running job aborts");
        assert_eq!(aborted.poll(), JobState::Aborted);
    }

    #[test]
    fn results_come_in_located_chunks() {
        let mut done = job(5, 0, false);
        done.poll();
        let first = done.results(None, Some("2")).expect("first chunk");
        assert_eq!(first.records, 2);
        assert_eq!(first.next_locator.as_deref(), Some("2"));
        let text = String::from_utf8(first.csv.clone()).expect("utf-8");
        assert!(
            text.starts_with("\"Id\",\"Name\"\n\"001000000000000001\""),
            "{text}"
        );
        let second = done.results(Some("2"), Some("2")).expect("second chunk");
        assert_eq!(read(&second.csv)[1][0], "001000000000000003");
        assert_eq!(second.next_locator.as_deref(), Some("4"));
        let last = done.results(Some("4"), Some("2")).expect("last chunk");
        assert_eq!(last.records, 1);
        assert_eq!(last.next_locator, None);
        // Locators can be fetched again.
        assert_eq!(done.results(Some("2"), Some("2")), Ok(second));

        let whole = done.results(None, None).expect("default chunk");
        assert_eq!(whole.records, 5);
        assert_eq!(whole.next_locator, None);
        assert_eq!(read(&whole.csv).len(), 6, "header plus five rows");

        assert_eq!(
            done.results(Some("9"), None).map_err(|e| e.code),
            Err("INVALIDLOCATOR")
        );
        assert_eq!(
            done.results(Some("x"), None).map_err(|e| e.code),
            Err("INVALIDLOCATOR")
        );
        assert_eq!(
            done.results(None, Some("0")).map_err(|e| e.code),
            Err("INVALIDJOB")
        );

        let mut empty = job(0, 0, false);
        empty.poll();
        let nothing = empty.results(None, None).expect("empty result");
        assert_eq!((nothing.records, nothing.next_locator), (0, None));
        assert_eq!(nothing.csv, b"\"Id\",\"Name\"\n");
    }

    #[test]
    fn csv_quotes_awkward_values_and_honours_the_format() {
        let mut spec = job(0, 0, false).spec;
        spec.format = CsvFormat::parse(Some("TAB"), Some("CRLF")).expect("valid format");
        spec.rows = vec![
            vec!["a\"b".to_owned(), "Smith, Jones\nLine 2".to_owned()],
            vec![String::new(), "x\ty".to_owned()],
        ];
        let mut tabbed = BulkJob::new(spec);
        tabbed.poll();
        assert_eq!(tabbed.info()["columnDelimiter"], "TAB");
        assert_eq!(tabbed.info()["lineEnding"], "CRLF");
        let chunk = tabbed.results(None, None).expect("chunk");
        let text = String::from_utf8(chunk.csv).expect("utf-8");
        assert_eq!(
            text,
            "\"Id\"\t\"Name\"\r\n\"a\"\"b\"\t\"Smith, Jones\nLine 2\"\r\n\"\"\t\"x\ty\"\r\n"
        );
        assert!(CsvFormat::parse(Some("SPACE"), None).is_err());
        assert!(CsvFormat::parse(None, Some("CR")).is_err());
    }

    #[test]
    fn cells_use_bulk_forms() {
        let account = ObjectSchema::new(SObject::Account);
        let def = |name: &str| {
            let index = account.field_index(name).expect("field");
            &account.fields[index]
        };
        let stamp = json!("2024-05-01T10:00:00.000+0000");
        assert_eq!(
            csv_cell(def("SystemModstamp"), Some(&stamp)),
            "2024-05-01T10:00:00.000Z"
        );
        assert_eq!(csv_cell(def("IsDeleted"), Some(&json!(true))), "true");
        assert_eq!(csv_cell(def("NumberOfEmployees"), Some(&json!(42))), "42");
        assert_eq!(
            csv_cell(def("AnnualRevenue"), Some(&json!(1250.5))),
            "1250.5"
        );
        assert_eq!(csv_cell(def("Name"), Some(&Value::Null)), "");
        assert_eq!(csv_cell(def("Name"), None), "");
    }
}

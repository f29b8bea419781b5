//! Bulk API 2.0 query jobs for large full loads (crm-apis.md A6).
//!
//! Create a `queryAll` job, poll it until `JobComplete`, then page through its CSV results by
//! locator, converting each chunk as it arrives (a chunk is bounded by `maxRecords`). A job
//! that fails, is aborted, or cannot be created for a documented reason (compound fields,
//! objects Bulk does not support) makes the caller fall back to REST. The job is deleted
//! whatever happens, so its results do not linger on the server.
//!
//! Bulk results come back in no particular order, so a quota stop during a Bulk read reports
//! no cursor: the rows are still merged, and the next run reads the window again.

use bytes::Bytes;
use csv::ByteRecord;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::SalesforceError;
use crate::Error;

use super::client::{ApiError, Failure};
use super::reader::{Halt, Reader};
use super::records::CsvLayout;
use super::soql;

/// Records per results chunk: bounds the memory one chunk takes.
const MAX_RECORDS: u64 = 50_000;

/// How a Bulk read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BulkOutcome {
    /// Every result was read.
    Done,
    /// The job could not be used; nothing was read, read through REST instead.
    FallBack,
}

/// The job-creation rejections Airbyte answers with a REST fallback (A6).
fn bulk_unsupported(api: &ApiError) -> bool {
    let message = api.message.to_ascii_lowercase();
    api.status == 400
        && (message.contains("not support")
            || message.contains("compound")
            || api.code.eq_ignore_ascii_case("INVALIDENTITY"))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Accepts a results chunk unless it holds fewer rows than `Sforce-NumberOfRecords` announces:
/// a body cut short at a line boundary still parses, so only the count shows it.
fn complete_chunk(headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let Some(announced) =
        header(headers, "Sforce-NumberOfRecords").and_then(|v| v.parse::<u64>().ok())
    else {
        return Ok(());
    };
    let found = count_rows(body);
    if found.is_some_and(|found| found >= announced) {
        if found != Some(announced) {
            tracing::debug!(announced, found = ?found, "bulk chunk holds more rows than announced");
        }
        return Ok(());
    }
    Err(format!(
        "a Bulk results chunk announced {announced} rows but held {}",
        found.map_or("unreadable CSV".to_string(), |n| n.to_string())
    ))
}

/// The number of data rows in a CSV chunk, `None` when it does not parse.
fn count_rows(body: &[u8]) -> Option<u64> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(body);
    let mut row = ByteRecord::new();
    let mut rows = 0u64;
    while reader.read_byte_record(&mut row).ok()? {
        rows += 1;
    }
    Some(rows)
}

impl Reader {
    /// Reads `soql` (no ORDER BY, no compound fields) through a Bulk job.
    pub(super) async fn bulk(&mut self, soql: &str) -> Result<BulkOutcome, Halt> {
        self.ordered = false;
        let body = json!({
            "operation": "queryAll",
            "query": soql,
            "contentType": "CSV",
            "columnDelimiter": "COMMA",
            "lineEnding": "LF",
        });
        let jobs = self.client.data_path("jobs/query");
        let job = match self.client.post_json(&jobs, &body).await {
            Ok(job) => job,
            Err(Failure::Api(api)) if bulk_unsupported(&api) => {
                tracing::warn!(stream = %self.plan.object, code = %api.code, message = %api.message, "Bulk API 2.0 cannot read this object");
                return Ok(BulkOutcome::FallBack);
            }
            Err(other) => return Err(other.into()),
        };
        let id = job
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
            .ok_or_else(|| SalesforceError::NoJobId(self.plan.object.clone()))?
            .to_string();
        let job_path = self.client.data_path(&format!("jobs/query/{id}"));
        tracing::debug!(stream = %self.plan.object, job = %id, "bulk query job created");
        let outcome = self.bulk_job(&id, &job_path).await;
        // Best effort: a job left behind only costs storage until Salesforce expires it, and
        // the budget may already forbid this call.
        if let Err(failure) = self.client.delete(&job_path).await {
            let reason = match failure {
                Failure::Quota(reason) => reason,
                other => Error::from(other).to_string(),
            };
            tracing::debug!(stream = %self.plan.object, job = %id, error = %reason, "could not delete the bulk job");
        }
        outcome
    }

    async fn bulk_job(&mut self, id: &str, job_path: &str) -> Result<BulkOutcome, Halt> {
        loop {
            tokio::time::sleep(self.settings.bulk_poll).await;
            if self.hung_up() {
                return Err(Halt::Hangup);
            }
            let job = self.client.get_json(job_path).await?;
            match job.get("state").and_then(Value::as_str) {
                Some("JobComplete") => break,
                Some(state) if state == "Failed" || state == "Aborted" => {
                    let message = job
                        .get("errorMessage")
                        .and_then(Value::as_str)
                        .unwrap_or("no error message");
                    tracing::warn!(stream = %self.plan.object, job = %id, state, message, "bulk query job did not complete");
                    return Ok(BulkOutcome::FallBack);
                }
                Some(_) => {}
                None => {
                    return Err(Halt::Failed(
                        SalesforceError::NoJobState {
                            job: id.to_string(),
                            object: self.plan.object.clone(),
                        }
                        .into(),
                    ));
                }
            }
        }
        let mut locator: Option<String> = None;
        loop {
            let mut path = format!("{job_path}/results?maxRecords={MAX_RECORDS}");
            if let Some(locator) = &locator {
                path.push_str("&locator=");
                path.push_str(&soql::encode(locator));
            }
            let reply = self.client.get_raw(&path, complete_chunk).await?;
            let next = header(&reply.headers, "Sforce-Locator").map(str::to_string);
            self.push_csv_chunk(reply.body).await?;
            // The last chunk carries the literal string `null` (A6).
            match next {
                Some(next) if !next.is_empty() && next != "null" => locator = Some(next),
                _ => return Ok(BulkOutcome::Done),
            }
        }
    }

    /// Converts one CSV chunk (header row first) into batches and dead letters.
    async fn push_csv_chunk(&mut self, body: Bytes) -> Result<(), Halt> {
        // NUL bytes occur in Bulk data (A9.5) and no warehouse text column takes them.
        let cleaned: Vec<u8>;
        let data: &[u8] = if body.contains(&0) {
            cleaned = body.iter().copied().filter(|b| *b != 0).collect();
            &cleaned
        } else {
            &body
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(data);
        let header = reader
            .byte_headers()
            .map_err(|source| SalesforceError::CsvHeader {
                object: self.plan.object.clone(),
                source,
            })?
            .clone();
        if header.is_empty() {
            return Ok(());
        }
        let layout = CsvLayout::new(&self.plan, &header)?;
        let mut row = ByteRecord::new();
        let mut letters = Vec::new();
        loop {
            match reader.read_byte_record(&mut row) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    return Err(Halt::Failed(
                        SalesforceError::Csv {
                            object: self.plan.object.clone(),
                            source: e,
                        }
                        .into(),
                    ));
                }
            }
            if let Err(letter) = self.builder.push_csv(&layout, &row) {
                self.dead_letter(letter, &mut letters);
            }
            self.after_push().await?;
        }
        self.send_letters(letters).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str, message: &str) -> ApiError {
        ApiError {
            method: "POST".into(),
            endpoint: "/services/data/v62.0/jobs/query".into(),
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    #[test]
    fn documented_rejections_fall_back_to_rest() {
        assert!(bulk_unsupported(&api(
            400,
            "INVALIDJOB",
            "Selecting compound data not supported in Bulk Query"
        )));
        assert!(bulk_unsupported(&api(
            400,
            "INVALIDENTITY",
            "Entity 'Attachment' is not supported by the Bulk API"
        )));
        assert!(bulk_unsupported(&api(
            400,
            "API_ERROR",
            "Entity 'Foo' does not support query"
        )));
        assert!(!bulk_unsupported(&api(
            400,
            "API_ERROR",
            "Implementation restriction"
        )));
        assert!(!bulk_unsupported(&api(404, "NOT_FOUND", "not supported")));
    }

    #[test]
    fn rows_are_counted_across_quoted_newlines() {
        let body = b"Id,Name\n001A,\"two\nlines\"\n001B,plain\n";
        assert_eq!(count_rows(body), Some(2));
        assert_eq!(count_rows(b""), Some(0));
        assert_eq!(count_rows(b"Id,Name\n"), Some(0));
    }
}

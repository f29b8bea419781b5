//! The Salesforce simulator (crm-apis.md parts A and C): an org with seeded Account,
//! Contact, Opportunity, Lead and `Wide__c` records served over the REST and Bulk 2.0 wire
//! shapes a connector meets: the token endpoint (client credentials and JWT bearer),
//! describe, SOQL `query`/`queryAll` with locator paging, Bulk query jobs with CSV results,
//! `limits`, and the failure modes (expired sessions, the daily API limit, 414s, 503s,
//! failed jobs, short pages, late-committing records).
//!
//! [`SalesforceSim`] is the handle tests use to change the org between syncs and to
//! inject faults; `server.rs` holds the HTTP plumbing. Query results and Bulk job results
//! are snapshots taken when the query or job starts, as in Salesforce. The state mutex is
//! never held across an `.await`.

mod bulk;
mod records;
mod schema;
mod server;
mod soql;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::http::StatusCode;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use self::bulk::{BulkError, BulkJob, Chunk, CsvFormat, JOB_PREFIX, JobSpec, Operation, csv_cell};
use self::records::Stamps;
use self::schema::{DATA_PATH, FieldType, ObjectSchema, SObject, USER_PREFIX, record_id};
use self::soql::{Selection, SoqlError};
use super::SimConfig;
use super::data::{BASE_EPOCH_MS, wall_clock_ms};

pub(crate) use self::server::router;

/// Longest request URI (path plus query) served; longer ones answer 414 `URI_TOO_LONG`.
pub const MAX_URI_BYTES: usize = 16_384;
/// `Sforce-Query-Options: batchSize` bounds and default (crm-apis.md A2).
const MIN_BATCH: usize = 200;
const MAX_BATCH: usize = 2_000;
/// Query cursors kept for `nextRecordsUrl`; the oldest are dropped beyond this, and their
/// locators then answer `INVALID_QUERY_LOCATOR` like expired ones.
const MAX_CURSORS: usize = 256;
/// Daily Bulk 2.0 query job allocation reported by `/limits`.
const DAILY_BULK_JOBS: usize = 10_000;
/// Separates the mutation stream from the initial-data streams of the same seed.
const MUTATION_SEED_SALT: u64 = 0x7366_6d75_7461_7465;
/// Prefix and width of query locator ids (`01g` + 15 digits, like real query ids).
const QUERY_ID_PREFIX: &str = "01g";
/// The simulated org and run-as user, for the token response's `id` URL.
const ORG_ID: &str = "00D000000000000001";
/// The login servers a JWT bearer assertion may name as `aud`, besides the simulator itself.
const JWT_AUDIENCES: [&str; 2] = [
    "https://login.salesforce.com",
    "https://test.salesforce.com",
];
/// Clock skew tolerated on a JWT bearer assertion's `exp`, in seconds.
const JWT_LEEWAY_SECONDS: u64 = 5;
/// How far back `sobjects/{O}/deleted` may start (the brief's 30 days; crm-apis.md A5).
const DELETED_WINDOW_MS: i64 = 30 * 86_400_000;

/// One stored record as a test sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SfRecord {
    /// The 18-character Id: key prefix plus the record number padded to 15 digits.
    pub id: String,
    /// Every non-compound field by describe name, valued as REST serves it: datetimes as
    /// `2024-05-01T10:00:00.000+0000`, dates as `2024-01-31`, numbers and booleans as JSON
    /// numbers and booleans, nulls as `Value::Null`.
    pub fields: BTreeMap<String, Value>,
    /// `SystemModstamp` in epoch milliseconds.
    pub system_modstamp_ms: i64,
    /// Soft-deleted: hidden from `query`, served by `queryAll` with `IsDeleted: true`.
    pub is_deleted: bool,
}

/// The describe metadata of one field, as `GET /sobjects/{O}/describe` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfField {
    /// API name, e.g. `BillingCity`.
    pub name: String,
    /// Human label.
    pub label: String,
    /// Describe `type`: `id`, `boolean`, `string`, `picklist`, `currency`, `int`, `double`,
    /// `percent`, `address`, `reference`, `date`, `datetime`, `email` or `phone`.
    pub kind: String,
    /// Describe `soapType`, e.g. `xsd:dateTime`.
    pub soap_type: String,
    /// The compound field this one is a component of (`BillingAddress`).
    pub compound_field_name: Option<String>,
    /// A formula field, recomputed on read.
    pub calculated: bool,
    /// Whether the value may be null.
    pub nillable: bool,
    /// A custom (`__c`) field.
    pub custom: bool,
}

/// A cheap, cloneable handle on one simulated Salesforce org.
///
/// The HTTP server and tests share it: changes made here are visible to the next request.
/// Methods that take an object name accept `Account`, `Contact`, `Opportunity`, `Lead`
/// and `Wide__c` (case-insensitive) and panic on anything else, since only tests call them.
#[derive(Clone)]
pub struct SalesforceSim {
    inner: Arc<Inner>,
}

struct Inner {
    instance_url: String,
    client_id: String,
    client_secret: String,
    /// The only `sub` a JWT bearer assertion may name.
    username: String,
    /// Verifies JWT bearer assertions; `None` when the configured PEM is not an RSA public
    /// key, which refuses every assertion.
    jwt_key: Option<DecodingKey>,
    short_pages: bool,
    bulk_polls: u32,
    /// Indexed by [`SObject::index`]; immutable, so readable without the lock.
    schemas: Vec<ObjectSchema>,
    state: Mutex<SfState>,
}

struct SfState {
    /// Per object (by [`SObject::index`]), sorted by Id: numbers only grow.
    records: Vec<Vec<SfRecord>>,
    /// The number the next inserted record of each object gets.
    next_number: Vec<u64>,
    /// Drives every seeded choice after start-up.
    rng: ChaCha8Rng,
    /// The latest stamp handed out; the clock never goes back below it.
    last_stamp: i64,
    sessions: HashSet<String>,
    /// Data requests still served before every session expires, when scheduled.
    expire_countdown: Option<u64>,
    /// Times every session was invalidated.
    sessions_expired: u64,
    api_used: u64,
    api_max: u64,
    /// Requests still admitted before other integrations use up the rest of the daily
    /// allocation, when scheduled.
    exhaust_countdown: Option<u64>,
    request_count: u64,
    token_requests: u64,
    jwt_logins: u64,
    injected_503: usize,
    fail_next_bulk: bool,
    cursors: BTreeMap<u64, Cursor>,
    next_cursor: u64,
    /// Query pages served so far, which picks the short ones.
    pages_served: u64,
    jobs: BTreeMap<String, BulkJob>,
    jobs_created: usize,
    /// Per object: every delete as (Id, deleted at ms), oldest first, kept after the
    /// record is purged from the Recycle Bin; what `sobjects/{O}/deleted` serves.
    delete_log: Vec<Vec<(String, i64)>>,
    /// Deletes before this (ms) were trimmed from the log: `earliestDateAvailable`.
    delete_log_from: i64,
    /// Soft-deleted records older than this (ms) are purged when a request arrives.
    purge_after_ms: Option<u64>,
    /// More deletes than this in one `deleted/` window is `EXCEEDED_ID_LIMIT`.
    deleted_id_limit: usize,
}

/// A query's result set, rendered when the query ran.
struct Cursor {
    rows: Vec<Value>,
    all: bool,
    batch: usize,
}

/// What the gate decided about one data request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    Proceed,
    Unavailable,
    UriTooLong,
    Unauthorized,
    LimitExceeded,
}

/// A refused data request: answered `status` with `[{"message", "errorCode"}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn not_found() -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "NOT_FOUND",
            message: "The requested resource does not exist".to_owned(),
        }
    }

    fn invalid_locator() -> Self {
        ApiError::bad_request(
            "INVALID_QUERY_LOCATOR",
            "invalid query locator: it is unknown, expired or past the end of the result",
        )
    }
}

impl From<SoqlError> for ApiError {
    fn from(err: SoqlError) -> Self {
        ApiError::bad_request(err.code, err.message)
    }
}

impl From<BulkError> for ApiError {
    fn from(err: BulkError) -> Self {
        ApiError::bad_request(err.code, err.message)
    }
}

impl SfState {
    fn expire_all_sessions(&mut self) {
        self.sessions.clear();
        self.sessions_expired += 1;
    }

    /// The next change stamp: wall-clock time, but always after the previous stamp so
    /// every change call is ordered even within one millisecond.
    fn next_stamp(&mut self) -> i64 {
        let stamp = wall_clock_ms().max(self.last_stamp + 1);
        self.last_stamp = stamp;
        stamp
    }

    /// Edits 1–2 data fields of up to `n` live records and stamps them with `stamp`.
    fn edit(&mut self, schema: &ObjectSchema, n: usize, stamp: i64) -> Vec<String> {
        let SfState {
            records: stores,
            rng,
            ..
        } = self;
        let store = &mut stores[schema.object.index()];
        let mut ids = Vec::new();
        for index in pick_live(store, rng, n) {
            let record = &mut store[index];
            records::mutate(schema, record, rng);
            records::stamp(record, stamp, true);
            ids.push(record.id.clone());
        }
        ids.sort_unstable();
        ids
    }

    /// The size of the next query page: `batch`, or half of it for every third page when
    /// short pages are on, so connectors cannot assume full pages.
    fn page_size(&mut self, batch: usize, short_pages: bool) -> usize {
        self.pages_served += 1;
        if short_pages && self.pages_served % 3 == 0 {
            (batch / 2).max(1)
        } else {
            batch
        }
    }

    /// Serves the first page of a fresh result set, keeping a cursor when more remain.
    fn first_page(&mut self, rows: Vec<Value>, all: bool, batch: usize, short: bool) -> Value {
        let size = self.page_size(batch, short);
        let total = rows.len();
        if size >= total {
            return page_body(total, None, rows);
        }
        let id = self.next_cursor;
        self.next_cursor += 1;
        let records = rows[..size].to_vec();
        self.cursors.insert(id, Cursor { rows, all, batch });
        while self.cursors.len() > MAX_CURSORS {
            self.cursors.pop_first();
        }
        page_body(total, Some(next_records_url(all, id, size)), records)
    }
}

/// Up to `n` distinct live record positions, chosen by the seeded stream.
fn pick_live(store: &[SfRecord], rng: &mut ChaCha8Rng, n: usize) -> Vec<usize> {
    let live: Vec<usize> = store
        .iter()
        .enumerate()
        .filter(|(_, record)| !record.is_deleted)
        .map(|(index, _)| index)
        .collect();
    let amount = n.min(live.len());
    rand::seq::index::sample(rng, live.len(), amount)
        .into_iter()
        .map(|k| live[k])
        .collect()
}

fn expect_object(object: &str) -> SObject {
    SObject::parse(object).unwrap_or_else(|| {
        panic!("unknown sObject {object:?}: the simulator serves Account, Contact, Opportunity, Lead, Wide__c and AggregateResult")
    })
}

/// Objects with records; `AggregateResult` has none.
fn expect_data_object(object: &str) -> SObject {
    let found = expect_object(object);
    assert!(found.queryable(), "{object} holds no records");
    found
}

fn page_body(total: usize, next: Option<String>, records: Vec<Value>) -> Value {
    let mut body = Map::new();
    body.insert("totalSize".to_owned(), json!(total));
    body.insert("done".to_owned(), Value::Bool(next.is_none()));
    if let Some(next) = next {
        body.insert("nextRecordsUrl".to_owned(), Value::String(next));
    }
    body.insert("records".to_owned(), Value::Array(records));
    Value::Object(body)
}

fn next_records_url(all: bool, cursor: u64, offset: usize) -> String {
    let resource = if all { "queryAll" } else { "query" };
    format!("{DATA_PATH}/{resource}/{QUERY_ID_PREFIX}{cursor:015}-{offset}")
}

/// `01g000000000000007-2000` → (7, 2000).
fn parse_locator(locator: &str) -> Option<(u64, usize)> {
    let (query_id, offset) = locator.rsplit_once('-')?;
    let digits = query_id.strip_prefix(QUERY_ID_PREFIX)?;
    if digits.len() != 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, offset.parse().ok()?))
}

/// One record as REST serves it: `attributes`, then the selected fields in SELECT order,
/// compound fields as nested objects built from their components.
fn render_rest(schema: &ObjectSchema, fields: &[usize], record: &SfRecord) -> Value {
    let name = schema.object.name();
    let mut body = Map::new();
    body.insert(
        "attributes".to_owned(),
        json!({"type": name, "url": format!("{DATA_PATH}/sobjects/{name}/{}", record.id)}),
    );
    for &index in fields {
        let def = &schema.fields[index];
        let value = if def.ty == FieldType::Address {
            compound_value(schema, &def.name, record)
        } else {
            record.fields.get(&def.name).cloned().unwrap_or(Value::Null)
        };
        body.insert(def.name.clone(), value);
    }
    Value::Object(body)
}

/// `{street, city, state, postalCode, country, latitude, longitude, geocodeAccuracy}`, or
/// null when every component is null, as Salesforce serves an empty address.
fn compound_value(schema: &ObjectSchema, compound: &str, record: &SfRecord) -> Value {
    let mut parts = Map::new();
    let mut any = false;
    for component in schema.components(compound) {
        let value = record
            .fields
            .get(&component.name)
            .cloned()
            .unwrap_or(Value::Null);
        any |= !value.is_null();
        if let Some(key) = component.component_key {
            parts.insert(key.to_owned(), value);
        }
    }
    if !any {
        return Value::Null;
    }
    parts.insert("geocodeAccuracy".to_owned(), Value::Null);
    Value::Object(parts)
}

/// Clamps a requested `batchSize` to Salesforce's 200..=2000; the default is 2000.
pub(crate) fn clamp_batch(requested: Option<u64>) -> usize {
    requested.map_or(MAX_BATCH, |size| {
        usize::try_from(size)
            .unwrap_or(MAX_BATCH)
            .clamp(MIN_BATCH, MAX_BATCH)
    })
}

impl fmt::Debug for SalesforceSim {
    // Hand-written so the client secret and tokens never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SalesforceSim")
            .field("instance_url", &self.inner.instance_url)
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

impl SalesforceSim {
    /// Builds the org from `config`: seeded records for every object, no sessions, an
    /// unused daily API allocation and no pending faults. `instance_url` is what the token
    /// endpoint tells clients to use, normally the simulator's own base URL. Starts no
    /// server.
    pub fn new(config: &SimConfig, instance_url: &str) -> Self {
        let schemas = ObjectSchema::all();
        let accounts = config.sf_accounts as u64;
        let records: Vec<Vec<SfRecord>> = schemas
            .iter()
            .map(|schema| {
                let count = match schema.object {
                    SObject::Account => config.sf_accounts,
                    SObject::Contact => config.sf_contacts,
                    SObject::Opportunity => config.sf_opportunities,
                    SObject::Lead => config.sf_leads,
                    SObject::Wide => config.sf_wide_records,
                    SObject::AggregateResult => 0,
                };
                records::generate_initial(schema, count, config.seed, accounts)
            })
            .collect();
        let next_number = records.iter().map(|store| store.len() as u64 + 1).collect();
        let jwt_key = match DecodingKey::from_rsa_pem(config.sf_jwt_public_key_pem.as_bytes()) {
            Ok(key) => Some(key),
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    "sf_jwt_public_key_pem is not an RSA public key; JWT bearer logins will be refused"
                );
                None
            }
        };
        let last_stamp = records
            .iter()
            .flatten()
            .map(|record| record.system_modstamp_ms)
            .max()
            .unwrap_or(BASE_EPOCH_MS);
        let state = SfState {
            records,
            next_number,
            rng: ChaCha8Rng::seed_from_u64(config.seed ^ MUTATION_SEED_SALT),
            last_stamp,
            sessions: HashSet::new(),
            expire_countdown: None,
            sessions_expired: 0,
            api_used: 0,
            api_max: config.sf_daily_limit,
            exhaust_countdown: None,
            request_count: 0,
            token_requests: 0,
            jwt_logins: 0,
            injected_503: 0,
            fail_next_bulk: false,
            cursors: BTreeMap::new(),
            next_cursor: 1,
            pages_served: 0,
            jobs: BTreeMap::new(),
            jobs_created: 0,
            delete_log: vec![Vec::new(); schemas.len()],
            delete_log_from: i64::MIN,
            purge_after_ms: config.sf_purge_after_ms,
            deleted_id_limit: config.sf_deleted_id_limit,
        };
        SalesforceSim {
            inner: Arc::new(Inner {
                instance_url: instance_url.trim_end_matches('/').to_owned(),
                client_id: config.sf_client_id.clone(),
                client_secret: config.sf_client_secret.clone(),
                username: config.sf_username.clone(),
                jwt_key,
                short_pages: config.sf_short_pages,
                bulk_polls: config.sf_bulk_polls,
                schemas,
                state: Mutex::new(state),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SfState> {
        // A panicking test must not wedge the server for the tests after it.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn schema(&self, object: SObject) -> &ObjectSchema {
        &self.inner.schemas[object.index()]
    }

    /// The `instance_url` handed out by the token endpoint.
    pub fn instance_url(&self) -> &str {
        &self.inner.instance_url
    }

    /// The connected app's consumer key the token endpoint accepts.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The connected app's consumer secret the token endpoint accepts.
    pub fn client_secret(&self) -> &str {
        &self.inner.client_secret
    }

    /// The user a JWT bearer assertion must name as `sub`.
    pub fn username(&self) -> &str {
        &self.inner.username
    }

    /// Changes 1–2 data fields on up to `n` live records (seeded choice) and sets their
    /// `LastModifiedDate` (where the object has one) and `SystemModstamp` to one new clock
    /// value, later than every earlier stamp. Returns the changed Ids, ascending.
    pub fn update(&self, object: &str, n: usize) -> Vec<String> {
        let object = expect_data_object(object);
        let mut state = self.lock();
        let stamp = state.next_stamp();
        state.edit(self.schema(object), n, stamp)
    }

    /// Like [`update`](Self::update), but every changed record gets exactly `ts_ms`, to
    /// build timestamp ties. The clock keeps its high-water mark if `ts_ms` is older.
    pub fn update_at(&self, object: &str, n: usize, ts_ms: i64) -> Vec<String> {
        let object = expect_data_object(object);
        let mut state = self.lock();
        state.last_stamp = state.last_stamp.max(ts_ms);
        state.edit(self.schema(object), n, ts_ms)
    }

    /// Creates `n` records numbered after every existing one (deleted included), created
    /// and modified at one new clock value. Returns their Ids, ascending.
    pub fn insert(&self, object: &str, n: usize) -> Vec<String> {
        let object = expect_data_object(object);
        let schema = self.schema(object);
        let mut state = self.lock();
        let stamp = state.next_stamp();
        let SfState {
            records: stores,
            next_number,
            rng,
            ..
        } = &mut *state;
        // New references point at any Account created so far, deleted ones included.
        let accounts = next_number[SObject::Account.index()] - 1;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let number = next_number[object.index()];
            next_number[object.index()] += 1;
            let record = records::generate_record(schema, number, Stamps::at(stamp), rng, accounts);
            ids.push(record.id.clone());
            stores[object.index()].push(record);
        }
        ids
    }

    /// Soft-deletes up to `n` live records (seeded choice): `IsDeleted` becomes true and
    /// `SystemModstamp` takes one new clock value; `LastModifiedDate` stays. They remain
    /// visible to `queryAll`. Returns their Ids, ascending.
    pub fn delete(&self, object: &str, n: usize) -> Vec<String> {
        let mut state = self.lock();
        let stamp = state.next_stamp();
        delete_stamped(&mut state, object, n, stamp)
    }

    /// A late delete: like [`delete`](Self::delete), but stamped `ts_ms` (normally older than
    /// [`now_ms`](Self::now_ms)), so it falls inside a window a connector asks `deleted/` for
    /// again (its overlap). The clock is untouched.
    pub fn delete_late(&self, object: &str, n: usize, ts_ms: i64) -> Vec<String> {
        let mut state = self.lock();
        delete_stamped(&mut state, object, n, ts_ms)
    }

    /// Empties the Recycle Bin of `object`: its soft-deleted records leave `queryAll` for
    /// good, but `sobjects/{O}/deleted` still lists them within its window. Returns their
    /// Ids, ascending.
    pub fn purge(&self, object: &str) -> Vec<String> {
        let object = expect_data_object(object);
        let mut state = self.lock();
        let store = &mut state.records[object.index()];
        let purged: Vec<String> = store
            .iter()
            .filter(|record| record.is_deleted)
            .map(|record| record.id.clone())
            .collect();
        store.retain(|record| !record.is_deleted);
        purged
    }

    /// Trims the delete log of every object before `until_ms` (as Salesforce does once the
    /// log grows): `sobjects/{O}/deleted` then reports `earliestDateAvailable` = `until_ms`,
    /// and a client whose last sync is older knows deletes may be lost.
    pub fn trim_delete_log(&self, until_ms: i64) {
        let mut state = self.lock();
        state.delete_log_from = state.delete_log_from.max(until_ms);
        for log in &mut state.delete_log {
            log.retain(|(_, at)| *at >= until_ms);
        }
    }

    /// `GET sobjects/{O}/deleted/?start=..&end=..` (crm-apis.md A5): the deletes in
    /// `[start, end)`, both taken at minute granularity (seconds ignored). `start` must lie
    /// within the last 30 days.
    pub(crate) fn get_deleted(
        &self,
        object: &str,
        start: Option<&str>,
        end: Option<&str>,
    ) -> Result<Value, ApiError> {
        let object = SObject::parse(object)
            .filter(|o| o.queryable())
            .ok_or_else(ApiError::not_found)?;
        let minute = |text: Option<&str>, name: &str| {
            text.and_then(records::parse_datetime)
                .map(|ms| ms - ms.rem_euclid(60_000))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "INVALID_QUERY_FILTER_OPERATOR",
                        format!("{name} is required as an ISO 8601 date time"),
                    )
                })
        };
        let start = minute(start, "start")?;
        let end = minute(end, "end")?;
        if end <= start {
            return Err(ApiError::bad_request(
                "INVALID_REPLICATION_DATE",
                "end must be after start",
            ));
        }
        let now = self.now_ms();
        let window_start = now - DELETED_WINDOW_MS;
        if start < window_start {
            return Err(ApiError::bad_request(
                "INVALID_REPLICATION_DATE",
                "start date cannot be more than 30 days ago",
            ));
        }
        // Served from the log, not the store: purged records are listed too.
        let state = self.lock();
        let covered = end.min(now - now.rem_euclid(60_000));
        let earliest = state.delete_log_from.max(window_start);
        let deleted: Vec<Value> = state.delete_log[object.index()]
            .iter()
            .filter(|(_, at)| *at >= start && *at < end)
            .map(|(id, at)| json!({"id": id, "deletedDate": records::rest_datetime(*at)}))
            .collect();
        if deleted.len() > state.deleted_id_limit {
            return Err(ApiError::bad_request(
                "EXCEEDED_ID_LIMIT",
                "the result set exceeds the ID limit; narrow the date range",
            ));
        }
        Ok(json!({
            "deletedRecords": deleted,
            "earliestDateAvailable": records::rest_datetime(earliest),
            "latestDateCovered": records::rest_datetime(covered.max(start)),
        }))
    }

    /// A late commit: changes up to `n` live records like [`update`](Self::update) but
    /// stamps them with `ts_ms`, normally older than [`now_ms`](Self::now_ms), so they
    /// appear behind a cursor a connector may already have passed. The clock is untouched.
    /// `ts_ms` should not predate the records' `CreatedDate`.
    pub fn touch_late(&self, object: &str, n: usize, ts_ms: i64) -> Vec<String> {
        let object = expect_data_object(object);
        let mut state = self.lock();
        state.edit(self.schema(object), n, ts_ms)
    }

    /// Records not soft-deleted, sorted by Id.
    pub fn live_records(&self, object: &str) -> Vec<SfRecord> {
        let object = expect_data_object(object);
        self.lock().records[object.index()]
            .iter()
            .filter(|record| !record.is_deleted)
            .cloned()
            .collect()
    }

    /// Ids of soft-deleted records, ascending.
    pub fn deleted_ids(&self, object: &str) -> Vec<String> {
        let object = expect_data_object(object);
        self.lock().records[object.index()]
            .iter()
            .filter(|record| record.is_deleted)
            .map(|record| record.id.clone())
            .collect()
    }

    /// The fields the describe call reports for `object` (`AggregateResult` included), in
    /// describe order.
    pub fn describe_fields(&self, object: &str) -> Vec<SfField> {
        self.schema(expect_object(object))
            .fields
            .iter()
            .map(|def| SfField {
                name: def.name.clone(),
                label: def.label.clone(),
                kind: def.ty.as_str().to_owned(),
                soap_type: def.ty.soap_type().to_owned(),
                compound_field_name: def.compound.map(str::to_owned),
                calculated: def.calculated(),
                nillable: def.nillable,
                custom: def.custom,
            })
            .collect()
    }

    /// Invalidates every access token issued so far: their next data request answers 401
    /// `INVALID_SESSION_ID`. New logins work as before.
    pub fn expire_sessions(&self) {
        self.lock().expire_all_sessions();
    }

    /// Schedules [`expire_sessions`](Self::expire_sessions) to happen after the next `n`
    /// data requests (of any outcome): the one after them finds every session issued until
    /// then invalid, as when a session times out in the middle of a sync.
    pub fn expire_sessions_after(&self, n: u64) {
        self.lock().expire_countdown = Some(n);
    }

    /// How many times every session was invalidated, by
    /// [`expire_sessions`](Self::expire_sessions) or a scheduled expiry that came due.
    pub fn sessions_expired(&self) -> u64 {
        self.lock().sessions_expired
    }

    /// Sets the daily API counter: requests are refused with 403 `REQUEST_LIMIT_EXCEEDED`
    /// while `used >= max`.
    pub fn set_api_usage(&self, used: u64, max: u64) {
        let mut state = self.lock();
        state.api_used = used;
        state.api_max = max;
    }

    /// Admits the next `n` data requests as usual, then spends the rest of the daily
    /// allocation as other integrations of the org would: the request after them is refused
    /// with 403 `REQUEST_LIMIT_EXCEEDED` although the last `Sforce-Limit-Info` showed room.
    pub fn exhaust_api_after(&self, n: u64) {
        let mut state = self.lock();
        if n == 0 {
            state.api_used = state.api_max;
        } else {
            state.exhaust_countdown = Some(n);
        }
    }

    /// `(used, max)` of the daily API allocation, as `Sforce-Limit-Info` reports it.
    pub fn api_usage(&self) -> (u64, u64) {
        let state = self.lock();
        (state.api_used, state.api_max)
    }

    /// Makes the next Bulk query job created end in `Failed` (with an `errorMessage`)
    /// instead of `JobComplete`.
    pub fn fail_next_bulk_job(&self) {
        self.lock().fail_next_bulk = true;
    }

    /// Makes the next `n` `/services/data/` requests, whatever the endpoint and token,
    /// answer 503 `SERVER_UNAVAILABLE`. They do not count against the API limit.
    pub fn inject_503(&self, n: usize) {
        self.lock().injected_503 += n;
    }

    /// Bulk query jobs created so far (refused creations excluded).
    pub fn bulk_jobs_created(&self) -> usize {
        self.lock().jobs_created
    }

    /// Requests received under `/services/data/`, including those answered 401, 403,
    /// 414 or 503. Token requests are counted by [`token_requests`](Self::token_requests).
    pub fn request_count(&self) -> u64 {
        self.lock().request_count
    }

    /// Requests received by `/services/oauth2/token`, refused ones included.
    pub fn token_requests(&self) -> u64 {
        self.lock().token_requests
    }

    /// Successful JWT bearer logins (sessions issued for a valid assertion).
    pub fn jwt_logins(&self) -> u64 {
        self.lock().jwt_logins
    }

    /// The simulator clock in epoch ms: wall-clock time, but never before the latest stamp
    /// handed to a change, so `system_modstamp_ms <= now_ms()` holds for every record
    /// (except those [`touch_late`](Self::touch_late) or `update_at` put elsewhere).
    pub fn now_ms(&self) -> i64 {
        wall_clock_ms().max(self.lock().last_stamp)
    }

    /// Decides whether a data request gets through, counting it; returns the decision and
    /// the `(used, max)` to report in `Sforce-Limit-Info`.
    pub(crate) fn admit(&self, token: Option<&str>, uri_bytes: usize) -> (Gate, u64, u64) {
        let mut state = self.lock();
        state.request_count += 1;
        if let Some(after) = state.purge_after_ms {
            // The Recycle Bin empties itself of what was deleted long enough ago.
            let cutoff = wall_clock_ms().saturating_sub(i64::try_from(after).unwrap_or(i64::MAX));
            for store in &mut state.records {
                store.retain(|r| !(r.is_deleted && r.system_modstamp_ms <= cutoff));
            }
        }
        let countdown = state.expire_countdown;
        if let Some(left) = countdown {
            state.expire_countdown = left.checked_sub(1);
            if left == 0 {
                state.expire_all_sessions();
            }
        }
        let gate = if state.injected_503 > 0 {
            state.injected_503 -= 1;
            Gate::Unavailable
        } else if uri_bytes > MAX_URI_BYTES {
            Gate::UriTooLong
        } else if !token.is_some_and(|token| state.sessions.contains(token)) {
            Gate::Unauthorized
        } else if state.api_used >= state.api_max {
            Gate::LimitExceeded
        } else {
            state.api_used += 1;
            Gate::Proceed
        };
        let reported = (gate, state.api_used, state.api_max);
        if reported.0 == Gate::Proceed {
            if let Some(left) = state.exhaust_countdown {
                let left = left.saturating_sub(1);
                state.exhaust_countdown = (left > 0).then_some(left);
                if left == 0 {
                    // Spent by others after this answer was counted and reported.
                    state.api_used = state.api_used.max(state.api_max);
                }
            }
        }
        reported
    }

    pub(crate) fn note_token_request(&self) {
        self.lock().token_requests += 1;
    }

    /// Issues a session for a client-credentials login; `None` for a wrong client.
    pub(crate) fn login(&self, client_id: &str, client_secret: &str) -> Option<Value> {
        if client_id != self.inner.client_id || client_secret != self.inner.client_secret {
            return None;
        }
        Some(self.issue_session())
    }

    /// Issues a session for a JWT bearer login (crm-apis.md A1), or returns why the assertion
    /// is refused, as the `error_description` of a 400 `invalid_grant`. The assertion must be
    /// RS256-signed with the connected app's key, with `iss` = the consumer key, `sub` = the
    /// pre-authorized user, `aud` = the simulator's URL or a Salesforce login server, and an
    /// `exp` not yet past.
    pub(crate) fn jwt_login(&self, assertion: &str) -> Result<Value, &'static str> {
        let Some(key) = &self.inner.jwt_key else {
            return Err("invalid assertion");
        };
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.set_issuer(&[self.inner.client_id.as_str()]);
        let mut audiences = vec![self.inner.instance_url.as_str()];
        audiences.extend(JWT_AUDIENCES);
        validation.set_audience(&audiences[..]);
        validation.sub = Some(self.inner.username.clone());
        validation.leeway = JWT_LEEWAY_SECONDS;
        match jsonwebtoken::decode::<Value>(assertion, key, &validation) {
            Ok(_) => {
                self.lock().jwt_logins += 1;
                Ok(self.issue_session())
            }
            Err(err) => Err(match err.kind() {
                ErrorKind::ExpiredSignature => "expired authorization code",
                ErrorKind::InvalidSubject => "user hasn't approved this consumer",
                ErrorKind::InvalidIssuer => "client identifier invalid",
                ErrorKind::InvalidAudience => "audience is invalid",
                _ => "invalid assertion",
            }),
        }
    }

    /// A new session and the token response that hands it out.
    fn issue_session(&self) -> Value {
        let token = format!("00DSIM!{}", Uuid::new_v4().simple());
        let mut signature_bytes = Vec::with_capacity(32);
        signature_bytes.extend_from_slice(Uuid::new_v4().as_bytes());
        signature_bytes.extend_from_slice(Uuid::new_v4().as_bytes());
        self.lock().sessions.insert(token.clone());
        let instance_url = &self.inner.instance_url;
        let user_id = record_id(USER_PREFIX, 1);
        json!({
            "access_token": token,
            "instance_url": instance_url,
            "id": format!("{instance_url}/id/{ORG_ID}/{user_id}"),
            "token_type": "Bearer",
            "issued_at": wall_clock_ms().to_string(),
            "signature": server::base64_encode(&signature_bytes),
            "scope": "api",
        })
    }

    pub(crate) fn limits(&self) -> Value {
        let state = self.lock();
        json!({
            "DailyApiRequests": {
                "Max": state.api_max,
                "Remaining": state.api_max.saturating_sub(state.api_used),
            },
            "DailyBulkV2QueryJobs": {
                "Max": DAILY_BULK_JOBS,
                "Remaining": DAILY_BULK_JOBS.saturating_sub(state.jobs_created),
            },
        })
    }

    pub(crate) fn global_describe(&self) -> Value {
        schema::global_describe(&self.inner.schemas)
    }

    pub(crate) fn describe(&self, object: &str) -> Result<Value, ApiError> {
        SObject::parse(object)
            .map(|object| self.schema(object).describe())
            .ok_or_else(ApiError::not_found)
    }

    /// Runs a query and serves its first page; the whole result set is kept for the
    /// `nextRecordsUrl` pages, so later changes never shift them.
    pub(crate) fn run_query(&self, soql: &str, all: bool, batch: usize) -> Result<Value, ApiError> {
        let query = soql::parse(soql, &self.inner.schemas)?;
        let schema = self.schema(query.object);
        let mut state = self.lock();
        let rows: Vec<Value> = {
            let hits = query.execute(schema, &state.records[query.object.index()], all);
            if query.selection == Selection::Count {
                return Ok(page_body(hits.len(), None, Vec::new()));
            }
            hits.iter()
                .map(|record| render_rest(schema, query.fields(), record))
                .collect()
        };
        Ok(state.first_page(rows, all, batch, self.inner.short_pages))
    }

    /// Serves the page a `nextRecordsUrl` locator points at, from either `query/` or
    /// `queryAll/`.
    pub(crate) fn query_more(&self, locator: &str) -> Result<Value, ApiError> {
        let (id, offset) = parse_locator(locator).ok_or_else(ApiError::invalid_locator)?;
        let mut state = self.lock();
        let batch = state
            .cursors
            .get(&id)
            .filter(|cursor| offset < cursor.rows.len())
            .map(|cursor| cursor.batch)
            .ok_or_else(ApiError::invalid_locator)?;
        let size = state.page_size(batch, self.inner.short_pages);
        let cursor = state
            .cursors
            .get(&id)
            .ok_or_else(ApiError::invalid_locator)?;
        let total = cursor.rows.len();
        let end = offset.saturating_add(size).min(total);
        let next = (end < total).then(|| next_records_url(cursor.all, id, end));
        Ok(page_body(total, next, cursor.rows[offset..end].to_vec()))
    }

    /// `POST /jobs/query`: validates the request and the SOQL, snapshots the result set as
    /// CSV cells, and returns the job info in `UploadComplete`.
    pub(crate) fn create_job(&self, body: &[u8]) -> Result<Value, ApiError> {
        let request: Value = serde_json::from_slice(body).map_err(|err| {
            ApiError::bad_request("JSON_PARSER_ERROR", format!("Invalid JSON body: {err}"))
        })?;
        let text = |key: &str| request.get(key).and_then(Value::as_str);
        let operation = Operation::parse(text("operation").unwrap_or_default())
            .ok_or_else(|| BulkError::invalid_job("operation must be \"query\" or \"queryAll\""))?;
        let soql =
            text("query").ok_or_else(|| BulkError::invalid_job("The query field is required"))?;
        if let Some(content_type) = text("contentType")
            && content_type != "CSV"
        {
            return Err(
                BulkError::invalid_job(format!("Unsupported contentType: {content_type}")).into(),
            );
        }
        let format = CsvFormat::parse(text("columnDelimiter"), text("lineEnding"))?;
        let query = soql::parse(soql, &self.inner.schemas)?;
        let schema = self.schema(query.object);
        if query.selection == Selection::Count {
            return Err(ApiError::bad_request(
                "API_ERROR",
                "Aggregate queries are not supported in Bulk Query",
            ));
        }
        if query.compound_field(schema).is_some() {
            return Err(ApiError::bad_request(
                "API_ERROR",
                "Selecting compound data not supported in Bulk Query",
            ));
        }
        let header: Vec<String> = query
            .fields()
            .iter()
            .map(|&index| schema.fields[index].name.clone())
            .collect();
        let mut state = self.lock();
        let rows: Vec<Vec<String>> = query
            .execute(
                schema,
                &state.records[query.object.index()],
                operation.include_deleted(),
            )
            .into_iter()
            .map(|record| {
                query
                    .fields()
                    .iter()
                    .map(|&index| {
                        let def = &schema.fields[index];
                        csv_cell(def, record.fields.get(&def.name))
                    })
                    .collect()
            })
            .collect();
        state.jobs_created += 1;
        let id = record_id(JOB_PREFIX, state.jobs_created as u64);
        let fail = std::mem::take(&mut state.fail_next_bulk);
        let created_ms = wall_clock_ms().max(state.last_stamp);
        let job = BulkJob::new(JobSpec {
            id: id.clone(),
            operation,
            object: query.object.name(),
            created_ms,
            complete_after: self.inner.bulk_polls,
            fail,
            format,
            header,
            rows,
        });
        let info = job.info();
        state.jobs.insert(id, job);
        Ok(info)
    }

    /// `GET /jobs/query/{id}`: one poll, which may advance the job.
    pub(crate) fn job_status(&self, id: &str) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let job = state.jobs.get_mut(id).ok_or_else(ApiError::not_found)?;
        job.poll();
        Ok(job.status())
    }

    /// `PATCH /jobs/query/{id}` with `{"state":"Aborted"}`.
    pub(crate) fn abort_job(&self, id: &str, body: &[u8]) -> Result<Value, ApiError> {
        let request: Value = serde_json::from_slice(body).map_err(|err| {
            ApiError::bad_request("JSON_PARSER_ERROR", format!("Invalid JSON body: {err}"))
        })?;
        if request.get("state").and_then(Value::as_str) != Some("Aborted") {
            return Err(BulkError::invalid_job("Only {\"state\":\"Aborted\"} is supported").into());
        }
        let mut state = self.lock();
        let job = state.jobs.get_mut(id).ok_or_else(ApiError::not_found)?;
        job.abort()?;
        Ok(job.info())
    }

    /// `DELETE /jobs/query/{id}`.
    pub(crate) fn delete_job(&self, id: &str) -> Result<(), ApiError> {
        self.lock()
            .jobs
            .remove(id)
            .map(|_| ())
            .ok_or_else(ApiError::not_found)
    }

    /// `GET /jobs/query/{id}/results`.
    pub(crate) fn job_results(
        &self,
        id: &str,
        locator: Option<&str>,
        max_records: Option<&str>,
    ) -> Result<Chunk, ApiError> {
        let state = self.lock();
        let job = state.jobs.get(id).ok_or_else(ApiError::not_found)?;
        Ok(job.results(locator, max_records)?)
    }
}

/// Soft-deletes up to `n` live records of `object` at `stamp` and logs the deletes.
fn delete_stamped(state: &mut SfState, object: &str, n: usize, stamp: i64) -> Vec<String> {
    let object = expect_data_object(object);
    let SfState {
        records: stores,
        rng,
        ..
    } = &mut *state;
    let store = &mut stores[object.index()];
    let mut ids = Vec::new();
    for index in pick_live(store, rng, n) {
        let record = &mut store[index];
        records::mark_deleted(record, stamp);
        ids.push(record.id.clone());
    }
    ids.sort_unstable();
    let log = &mut state.delete_log[object.index()];
    log.extend(ids.iter().map(|id| (id.clone(), stamp)));
    log.sort_by_key(|(_, at)| *at);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> SalesforceSim {
        SalesforceSim::new(
            &SimConfig {
                seed,
                sf_accounts: 30,
                sf_contacts: 600,
                sf_opportunities: 10,
                sf_leads: 10,
                sf_wide_records: 3,
                ..SimConfig::default()
            },
            "http://127.0.0.1:1/",
        )
    }

    fn record(sim: &SalesforceSim, object: SObject, id: &str) -> SfRecord {
        sim.lock().records[object.index()]
            .iter()
            .find(|record| record.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} exists"))
    }

    fn page_ids(page: &Value) -> Vec<String> {
        page["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|record| record["Id"].as_str().expect("Id").to_owned())
            .collect()
    }

    /// Follows `nextRecordsUrl` to the end; returns every Id and the page sizes.
    fn drain(sim: &SalesforceSim, first: Value) -> (Vec<String>, Vec<usize>) {
        let mut ids = page_ids(&first);
        let mut sizes = vec![ids.len()];
        let mut page = first;
        while page["done"] == false {
            let url = page["nextRecordsUrl"]
                .as_str()
                .expect("next url")
                .to_owned();
            let locator = url.rsplit('/').next().expect("locator");
            page = sim.query_more(locator).expect("next page");
            let more = page_ids(&page);
            sizes.push(more.len());
            ids.extend(more);
        }
        (ids, sizes)
    }

    #[test]
    fn same_seed_gives_same_data_and_same_change_sequence() {
        let (a, b) = (small(9), small(9));
        assert_eq!(a.live_records("Contact"), b.live_records("Contact"));
        assert_eq!(a.update("contact", 4), b.update("contact", 4));
        assert_eq!(a.delete("Lead", 2), b.delete("Lead", 2));
        assert_ne!(
            small(9).live_records("Account"),
            small(10).live_records("Account")
        );
        let first = &a.live_records("Account")[0];
        assert_eq!(first.id, "001000000000000001");
        assert_eq!(a.instance_url(), "http://127.0.0.1:1");
    }

    #[test]
    fn change_calls_stamp_strictly_increasing_times() {
        let sim = small(1);
        let floor = sim.now_ms();
        let updated = sim.update("Account", 3);
        assert_eq!(updated.len(), 3);
        let first = record(&sim, SObject::Account, &updated[0]);
        let stamp = first.system_modstamp_ms;
        assert!(stamp >= floor);
        for id in &updated {
            let after = record(&sim, SObject::Account, id);
            assert_eq!(after.system_modstamp_ms, stamp);
            assert_eq!(
                after.fields["LastModifiedDate"],
                after.fields["SystemModstamp"]
            );
            assert_eq!(
                after.fields["SystemModstamp"],
                records::rest_datetime(stamp).as_str()
            );
        }
        let inserted = sim.insert("Account", 2);
        assert_eq!(inserted, ["001000000000000031", "001000000000000032"]);
        let new = record(&sim, SObject::Account, &inserted[0]);
        assert!(new.system_modstamp_ms > stamp);
        assert_eq!(new.fields["CreatedDate"], new.fields["SystemModstamp"]);
        let deleted = sim.delete("Account", 2);
        assert_eq!(sim.deleted_ids("Account"), deleted);
        assert_eq!(sim.live_records("Account").len(), 30);
        let gone = record(&sim, SObject::Account, &deleted[0]);
        assert!(gone.is_deleted && gone.system_modstamp_ms > new.system_modstamp_ms);
        assert_eq!(gone.fields["IsDeleted"], true);
        assert!(sim.now_ms() >= gone.system_modstamp_ms);
        // Numbers keep growing past deleted records.
        assert_eq!(sim.insert("Account", 1), ["001000000000000033"]);
    }

    #[test]
    fn get_deleted_lists_purged_records_within_its_window() {
        let iso = records::rest_datetime;
        let minute = |ms: i64| ms - ms.rem_euclid(60_000);
        let sim = small(3);
        let before = minute(sim.now_ms()) - 60_000;
        let deleted = sim.delete("Account", 2);
        assert_eq!(sim.purge("Account"), deleted);
        assert!(sim.deleted_ids("Account").is_empty(), "gone from queryAll");
        let end = minute(sim.now_ms()) + 120_000;
        let listed = sim
            .get_deleted("Account", Some(&iso(before)), Some(&iso(end)))
            .unwrap();
        let ids: Vec<&str> = listed["deletedRecords"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, deleted);
        assert!(listed["deletedRecords"][0]["deletedDate"].is_string());
        // Other objects' deletes are not listed; a start past 30 days is refused.
        let contacts = sim.get_deleted("Contact", Some(&iso(before)), Some(&iso(end)));
        assert_eq!(contacts.unwrap()["deletedRecords"], json!([]));
        let old = sim.now_ms() - 31 * 86_400_000;
        let refused = sim.get_deleted("Account", Some(&iso(old)), Some(&iso(end)));
        assert_eq!(refused.unwrap_err().code, "INVALID_REPLICATION_DATE");
        // A trimmed log no longer lists them and says from when it is complete.
        sim.trim_delete_log(sim.now_ms() + 1);
        let trimmed = sim
            .get_deleted("Account", Some(&iso(before)), Some(&iso(end)))
            .unwrap();
        assert_eq!(trimmed["deletedRecords"], json!([]));
        let earliest = records::parse_datetime(trimmed["earliestDateAvailable"].as_str().unwrap());
        assert!(earliest.unwrap() > before);
    }

    #[test]
    fn the_recycle_bin_empties_itself_after_the_configured_time() {
        let sim = SalesforceSim::new(
            &SimConfig {
                sf_accounts: 5,
                sf_purge_after_ms: Some(0),
                ..SimConfig::default()
            },
            "http://127.0.0.1:1/",
        );
        let deleted = sim.delete("Account", 1);
        assert_eq!(sim.deleted_ids("Account"), deleted);
        std::thread::sleep(std::time::Duration::from_millis(2));
        sim.admit(None, 10);
        assert!(sim.deleted_ids("Account").is_empty());
        assert_eq!(sim.live_records("Account").len(), 4);
    }

    #[test]
    fn ties_and_late_commits_use_the_given_stamp() {
        let sim = small(2);
        let clock = sim.now_ms();
        let tie = 1_717_000_000_000;
        let tied = sim.update_at("Opportunity", 3, tie);
        for id in &tied {
            let row = record(&sim, SObject::Opportunity, id);
            assert_eq!(row.system_modstamp_ms, tie);
            assert_eq!(row.fields["SystemModstamp"], "2024-05-29T16:26:40.000+0000");
        }
        let late = clock - 60_000;
        let touched = sim.touch_late("Lead", 2, late);
        assert_eq!(touched.len(), 2);
        assert_eq!(
            record(&sim, SObject::Lead, &touched[0]).system_modstamp_ms,
            late
        );
        assert!(
            sim.now_ms() >= clock,
            "late commits do not move the clock back"
        );
        let fresh = sim.update("Lead", 1);
        assert!(record(&sim, SObject::Lead, &fresh[0]).system_modstamp_ms >= clock);
    }

    #[test]
    fn describe_fields_expose_compound_and_calculated_flags() {
        let sim = small(1);
        let fields = sim.describe_fields("Account");
        let city = fields
            .iter()
            .find(|f| f.name == "BillingCity")
            .expect("city");
        assert_eq!(city.compound_field_name.as_deref(), Some("BillingAddress"));
        let score = fields
            .iter()
            .find(|f| f.name == "Rating_Score__c")
            .expect("score");
        assert!(score.calculated && score.custom);
        assert_eq!(score.kind, "double");
        assert_eq!(sim.describe_fields("AggregateResult").len(), 1);
        assert_eq!(sim.describe_fields("Wide__c").len(), 705);
    }

    #[test]
    fn query_pages_are_a_snapshot_taken_when_the_query_ran() {
        let sim = small(3);
        let first = sim
            .run_query("SELECT Id, LastName FROM Contact ORDER BY Id", false, 250)
            .expect("valid query");
        assert_eq!(first["totalSize"], 600);
        assert_eq!(first["done"], false);
        let url = first["nextRecordsUrl"].as_str().expect("next url");
        assert!(url.starts_with("/services/data/v62.0/query/01g"), "{url}");
        assert!(url.ends_with("-250"), "{url}");
        assert_eq!(first["records"][0]["attributes"]["type"], "Contact");
        assert_eq!(
            first["records"][0]["attributes"]["url"],
            "/services/data/v62.0/sobjects/Contact/003000000000000001"
        );
        let before: Vec<String> = sim
            .live_records("Contact")
            .into_iter()
            .map(|record| record.id)
            .collect();
        // Changes after the query ran do not move its pages.
        sim.delete("Contact", 50);
        sim.insert("Contact", 10);
        let (ids, sizes) = drain(&sim, first);
        assert_eq!(ids, before);
        assert_eq!(sizes, [250, 250, 100]);

        let after = sim
            .run_query("SELECT Id FROM Contact", false, 2_000)
            .expect("valid query");
        assert_eq!(after["totalSize"], 560);
        assert_eq!(after["done"], true);
        assert!(after.get("nextRecordsUrl").is_none());
        let all = sim
            .run_query(
                "SELECT Id, IsDeleted FROM Contact WHERE IsDeleted = true",
                true,
                200,
            )
            .expect("valid query");
        assert_eq!(all["totalSize"], 50);
        assert_eq!(all["records"][0]["IsDeleted"], true);
        let count = sim
            .run_query("SELECT COUNT() FROM Contact", true, 2_000)
            .expect("count");
        assert_eq!(
            count,
            json!({"totalSize": 610, "done": true, "records": []})
        );
    }

    #[test]
    fn query_all_locators_and_bad_locators() {
        let sim = small(4);
        let first = sim
            .run_query("SELECT Id FROM Contact", true, 200)
            .expect("valid query");
        let url = first["nextRecordsUrl"].as_str().expect("next url");
        assert!(
            url.starts_with("/services/data/v62.0/queryAll/01g"),
            "{url}"
        );
        assert_eq!(parse_locator("01g000000000000007-2000"), Some((7, 2_000)));
        assert_eq!(parse_locator("01g7-2000"), None);
        assert_eq!(parse_locator("xyz000000000000007-2000"), None);
        let unknown = sim
            .query_more("01g000000000000999-200")
            .expect_err("unknown");
        assert_eq!(unknown.code, "INVALID_QUERY_LOCATOR");
        let past_end = sim
            .query_more("01g000000000000001-600")
            .expect_err("past end");
        assert_eq!(past_end.code, "INVALID_QUERY_LOCATOR");
    }

    #[test]
    fn short_pages_serve_every_third_page_half_full() {
        let sim = SalesforceSim::new(
            &SimConfig {
                sf_contacts: 1_000,
                sf_short_pages: true,
                ..SimConfig::default()
            },
            "http://sim",
        );
        let first = sim
            .run_query("SELECT Id FROM Contact", false, 200)
            .expect("valid query");
        let (ids, sizes) = drain(&sim, first);
        assert_eq!(ids.len(), 1_000);
        assert_eq!(&sizes[..6], [200, 200, 100, 200, 200, 100]);
        assert_eq!(clamp_batch(Some(50)), 200);
        assert_eq!(clamp_batch(Some(5_000)), 2_000);
        assert_eq!(clamp_batch(None), 2_000);
    }

    #[test]
    fn compound_addresses_render_as_nested_objects() {
        let sim = small(5);
        let page = sim
            .run_query(
                "SELECT Id, BillingAddress, BillingCity FROM Account WHERE BillingCity != null LIMIT 1",
                false,
                200,
            )
            .expect("valid query");
        let row = &page["records"][0];
        let address = row["BillingAddress"].as_object().expect("nested address");
        assert_eq!(address["city"], row["BillingCity"]);
        let keys: Vec<&str> = address.keys().map(String::as_str).collect();
        let expected = [
            "street",
            "city",
            "state",
            "postalCode",
            "country",
            "latitude",
            "longitude",
            "geocodeAccuracy",
        ];
        for key in expected {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
    }

    #[test]
    fn bulk_jobs_snapshot_results_and_refuse_compound_fields() {
        let sim = small(6);
        let body = br#"{"operation":"queryAll","query":"SELECT Id, Name, SystemModstamp FROM Account ORDER BY Id","contentType":"CSV","columnDelimiter":"COMMA","lineEnding":"LF"}"#;
        let info = sim.create_job(body).expect("job created");
        let id = info["id"].as_str().expect("job id").to_owned();
        assert_eq!(id, "750000000000000001");
        assert_eq!(info["state"], "UploadComplete");
        assert_eq!(info["object"], "Account");
        assert_eq!(sim.bulk_jobs_created(), 1);
        sim.delete("Account", 5);
        assert!(sim.job_results(&id, None, None).is_err(), "not complete");
        assert_eq!(sim.job_status(&id).expect("poll")["state"], "InProgress");
        let done = sim.job_status(&id).expect("poll");
        assert_eq!(done["state"], "JobComplete");
        assert_eq!(done["numberRecordsProcessed"], 30);
        let chunk = sim.job_results(&id, None, Some("20")).expect("chunk");
        assert_eq!(chunk.records, 20);
        assert_eq!(chunk.next_locator.as_deref(), Some("20"));
        let text = String::from_utf8(chunk.csv).expect("utf-8");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("\"Id\",\"Name\",\"SystemModstamp\""));
        assert!(
            lines.next().is_some_and(|line| line.ends_with("Z\"")),
            "{text}"
        );
        let rest = sim
            .job_results(&id, Some("20"), Some("20"))
            .expect("last chunk");
        assert_eq!((rest.records, rest.next_locator), (10, None));
        sim.delete_job(&id).expect("deleted");
        assert_eq!(
            sim.job_status(&id).expect_err("gone").status,
            StatusCode::NOT_FOUND
        );

        let compound = br#"{"operation":"query","query":"SELECT Id, BillingAddress FROM Account"}"#;
        let refused = sim.create_job(compound).expect_err("compound refused");
        assert_eq!(refused.code, "API_ERROR");
        assert_eq!(
            refused.message,
            "Selecting compound data not supported in Bulk Query"
        );
        let bad = sim
            .create_job(br#"{"operation":"query","query":"SELECT Nope FROM Account"}"#)
            .expect_err("unknown field");
        assert_eq!(bad.code, "INVALID_FIELD");
        assert_eq!(sim.bulk_jobs_created(), 1, "refused jobs are not created");

        sim.fail_next_bulk_job();
        let failing = sim
            .create_job(br#"{"operation":"query","query":"SELECT Id FROM Lead"}"#)
            .expect("created");
        let failing_id = failing["id"].as_str().expect("id").to_owned();
        sim.job_status(&failing_id).expect("poll");
        let failed = sim.job_status(&failing_id).expect("poll");
        assert_eq!(failed["state"], "Failed");
        assert!(failed["errorMessage"].is_string());
        let next = sim
            .create_job(br#"{"operation":"query","query":"SELECT Id FROM Lead"}"#)
            .expect("created");
        let next_id = next["id"].as_str().expect("id").to_owned();
        sim.job_status(&next_id).expect("poll");
        assert_eq!(
            sim.job_status(&next_id).expect("poll")["state"],
            "JobComplete"
        );
    }

    #[test]
    fn gate_counts_requests_and_enforces_sessions_and_limits() {
        let sim = small(7);
        let (gate, used, max) = sim.admit(None, 10);
        assert_eq!((gate, used, max), (Gate::Unauthorized, 0, 1_000_000));
        let login = sim.login("sim-client", "sim-secret").expect("valid client");
        assert!(sim.login("sim-client", "wrong").is_none());
        let token = login["access_token"].as_str().expect("token").to_owned();
        assert!(token.starts_with("00DSIM!"));
        assert_eq!(login["instance_url"], "http://127.0.0.1:1");
        assert_eq!(sim.admit(Some(&token), 10).0, Gate::Proceed);
        assert_eq!(
            sim.admit(Some(&token), MAX_URI_BYTES + 1).0,
            Gate::UriTooLong
        );
        sim.inject_503(1);
        assert_eq!(sim.admit(Some(&token), 10).0, Gate::Unavailable);
        sim.set_api_usage(9, 10);
        assert_eq!(sim.admit(Some(&token), 10), (Gate::Proceed, 10, 10));
        assert_eq!(sim.admit(Some(&token), 10), (Gate::LimitExceeded, 10, 10));
        assert_eq!(sim.api_usage(), (10, 10));
        sim.set_api_usage(0, 10);
        sim.expire_sessions();
        assert_eq!(sim.admit(Some(&token), 10).0, Gate::Unauthorized);
        assert_eq!(sim.request_count(), 7);
        assert_eq!(sim.sessions_expired(), 1);

        let renewed = sim.login("sim-client", "sim-secret").expect("valid client");
        let renewed = renewed["access_token"].as_str().expect("token").to_owned();
        sim.expire_sessions_after(2);
        assert_eq!(sim.admit(Some(&renewed), 10).0, Gate::Proceed);
        assert_eq!(sim.admit(Some(&renewed), 10).0, Gate::Proceed);
        assert_eq!(sim.admit(Some(&renewed), 10).0, Gate::Unauthorized);
        assert_eq!(sim.sessions_expired(), 2);
        let after = sim.login("sim-client", "sim-secret").expect("valid client");
        let after = after["access_token"].as_str().expect("token").to_owned();
        assert_eq!(
            sim.admit(Some(&after), 10).0,
            Gate::Proceed,
            "fires only once"
        );
    }
}

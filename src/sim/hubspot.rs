//! The HubSpot CRM v3 simulator: the in-memory object store, the [`HubspotSim`] handle that
//! tests use to change it, and the axum routes that serve list, search and properties the
//! way api.hubapi.com does (crm-apis.md B0–B4).
//!
//! Every `/crm/` request first passes the gate middleware, which in order counts it, serves
//! an injected 429, enforces the URI length limit, checks the bearer token and applies the
//! rate limiter. The store mutex is never held across an `.await`.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::SimConfig;
use super::data::{self, ObjectKind};
pub use super::data::{ModificationMetadata, PropertyDef, PropertyOption, SimRecord};
use super::ratelimit::{BURST_INTERVAL_MS, Budget, Limiter, Policy, Verdict};
use super::search::{self, SearchError};
use super::webhooks::{self, Change, ChangeKind, Emitter, Outbox, StatsHandle, WebhookStats};

/// Longest request URI (path plus query) served; HubSpot answers 414 beyond about this.
pub const MAX_URI_CHARS: usize = 16_300;
const LIST_DEFAULT_LIMIT: usize = 10;
const LIST_MAX_LIMIT: u64 = 100;
/// Separates the mutation stream from the initial-data streams of the same seed.
const MUTATION_SEED_SALT: u64 = 0x6d75_7461_7469_6f6e;
const UNAUTHENTICATED_MESSAGE: &str = "Authentication credentials not found. This API supports \
     OAuth 2.0 authentication and you can find more details at \
     https://developers.hubspot.com/docs/methods/auth/oauth-overview";

/// A cheap, cloneable handle on one simulated HubSpot account.
///
/// The HTTP server and tests share it: changes made here are visible to the next request.
/// Methods that take an object type accept `"contacts"`, `"companies"` and `"deals"` and
/// panic on anything else, since only tests call them.
#[derive(Clone)]
pub struct HubspotSim {
    inner: Arc<Inner>,
}

struct Inner {
    token: String,
    search_lag_ms: u64,
    state: Mutex<SimState>,
    /// The webhook emitter until [`Simulator::start`](super::Simulator::start) runs it.
    emitter: Mutex<Option<Emitter>>,
    webhook_stats: StatsHandle,
}

struct SimState {
    /// Indexed by [`ObjectKind::index`].
    stores: Vec<ObjectStore>,
    /// Drives every seeded choice after start-up, so a test's sequence of changes is
    /// reproducible for a given seed.
    rng: ChaCha8Rng,
    /// The latest stamp handed out; the clock never goes back below it.
    last_stamp: i64,
    injected_429: usize,
    request_count: u64,
    limiter: Option<Limiter>,
    /// Changes waiting for a page to be served (see [`HubspotSim::after_search_pages`]).
    page_hooks: Vec<PageHook>,
    /// Where every change goes as a webhook event, when webhooks are on.
    outbox: Option<Outbox>,
}

/// A change to one record that a test schedules for the middle of a paged read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimChange {
    /// Change 1–2 data properties and stamp a new modified date, as [`HubspotSim::update`].
    Modify(i64),
    /// Soft-delete the record, as [`HubspotSim::archive`].
    Archive(i64),
}

/// The paged endpoints a change can be scheduled after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paged {
    List,
    Search,
}

/// Changes applied right after the `pages`-th `endpoint` page for `kind` is computed.
struct PageHook {
    kind: ObjectKind,
    endpoint: Paged,
    /// Pages for `kind` still to serve before the changes apply.
    pages: u64,
    changes: Vec<SimChange>,
}

struct ObjectStore {
    defs: Vec<PropertyDef>,
    /// Sorted by id: ids only grow, so appends keep the order.
    records: Vec<SimRecord>,
}

impl ObjectStore {
    fn max_id(&self) -> i64 {
        self.records.last().map_or(0, |record| record.id)
    }

    fn find_mut(&mut self, id: i64) -> Option<&mut SimRecord> {
        let index = self
            .records
            .binary_search_by_key(&id, |record| record.id)
            .ok()?;
        self.records.get_mut(index)
    }
}

impl SimState {
    /// The next change stamp: wall-clock time, but always after the previous stamp so
    /// every change call is ordered even within one millisecond.
    fn next_stamp(&mut self) -> i64 {
        let stamp = data::wall_clock_ms().max(self.last_stamp + 1);
        self.last_stamp = stamp;
        stamp
    }

    /// Counts one served `endpoint` page for `kind` and applies the changes whose page it was.
    fn page_served(&mut self, kind: ObjectKind, endpoint: Paged) {
        let mut due = Vec::new();
        self.page_hooks.retain_mut(|hook| {
            if hook.kind != kind || hook.endpoint != endpoint {
                return true;
            }
            hook.pages = hook.pages.saturating_sub(1);
            if hook.pages > 0 {
                return true;
            }
            due.append(&mut hook.changes);
            false
        });
        if due.is_empty() {
            return;
        }
        let stamp = self.next_stamp();
        let SimState {
            stores,
            rng,
            outbox,
            ..
        } = self;
        let store = &mut stores[kind.index()];
        for change in due {
            let (SimChange::Modify(id) | SimChange::Archive(id)) = change;
            let Some(record) = store.find_mut(id) else {
                panic!("no {} record with id {id} to change", kind.as_str());
            };
            if let SimChange::Archive(_) = change {
                record.archived = true;
                record.archived_ms = Some(stamp);
                notify(outbox, kind, record, stamp, ChangeKind::Deletion);
            } else {
                let changed = data::mutate(kind, record, rng);
                notify_properties(outbox, kind, record, stamp, &changed);
            }
            stamp_modified(kind, record, stamp);
        }
    }

    fn update_records(&mut self, kind: ObjectKind, n: usize, stamp: i64) -> Vec<i64> {
        let SimState {
            stores,
            rng,
            outbox,
            ..
        } = self;
        let store = &mut stores[kind.index()];
        let mut ids = Vec::new();
        for index in pick_live(store, rng, n) {
            let record = &mut store.records[index];
            let changed = data::mutate(kind, record, rng);
            stamp_modified(kind, record, stamp);
            notify_properties(outbox, kind, record, stamp, &changed);
            ids.push(record.id);
        }
        ids.sort_unstable();
        ids
    }
}

/// Hands one change of `record` to the webhook emitter, when webhooks are on.
fn notify(
    outbox: &Option<Outbox>,
    kind: ObjectKind,
    record: &SimRecord,
    stamp: i64,
    what: ChangeKind,
) {
    if let Some(outbox) = outbox {
        outbox.push(Change {
            kind,
            object_id: record.id,
            occurred_at: stamp,
            what,
        });
    }
}

/// One `propertyChange` event per changed property, as HubSpot sends them.
fn notify_properties(
    outbox: &Option<Outbox>,
    kind: ObjectKind,
    record: &SimRecord,
    stamp: i64,
    changed: &[&str],
) {
    for name in changed {
        let value = record.properties.get(*name).cloned().flatten();
        let what = ChangeKind::PropertyChange {
            name: (*name).to_owned(),
            value,
        };
        notify(outbox, kind, record, stamp, what);
    }
}

/// Up to `n` distinct live record positions, chosen by the seeded stream.
fn pick_live(store: &ObjectStore, rng: &mut ChaCha8Rng, n: usize) -> Vec<usize> {
    let live: Vec<usize> = store
        .records
        .iter()
        .enumerate()
        .filter(|(_, record)| !record.archived)
        .map(|(index, _)| index)
        .collect();
    let amount = n.min(live.len());
    rand::seq::index::sample(rng, live.len(), amount)
        .into_iter()
        .map(|k| live[k])
        .collect()
}

/// Keeps `updatedAt` and the modified-date property equal, as HubSpot does.
fn stamp_modified(kind: ObjectKind, record: &mut SimRecord, stamp: i64) {
    record.updated_ms = stamp;
    record.properties.insert(
        kind.modified_property().to_owned(),
        Some(data::iso_millis(stamp)),
    );
}

fn expect_kind(object: &str) -> ObjectKind {
    ObjectKind::parse(object).unwrap_or_else(|| {
        panic!("unknown HubSpot object type {object:?}: the simulator serves contacts, companies and deals")
    })
}

impl fmt::Debug for HubspotSim {
    // Hand-written so the token never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubspotSim")
            .field("search_lag_ms", &self.inner.search_lag_ms)
            .finish_non_exhaustive()
    }
}

impl HubspotSim {
    /// Builds the account from `config`: seeded records for every object type, an idle
    /// rate limiter and no pending faults. Starts no server.
    pub fn new(config: &SimConfig) -> Self {
        let stores: Vec<ObjectStore> = ObjectKind::ALL
            .iter()
            .map(|&kind| {
                let count = match kind {
                    ObjectKind::Contacts => config.contacts,
                    ObjectKind::Companies => config.companies,
                    ObjectKind::Deals => config.deals,
                };
                ObjectStore {
                    defs: data::property_defs(kind),
                    records: data::generate_initial(kind, count, config.seed),
                }
            })
            .collect();
        let last_stamp = stores
            .iter()
            .flat_map(|store| store.records.iter().map(|record| record.updated_ms))
            .max()
            .unwrap_or(data::BASE_EPOCH_MS);
        let webhook_stats = StatsHandle::default();
        let (outbox, emitter) = match &config.webhooks {
            Some(settings) => {
                let (outbox, emitter, counters) = webhooks::channel(settings.clone(), config.seed);
                webhook_stats.set(counters);
                (Some(outbox), Some(emitter))
            }
            None => (None, None),
        };
        let state = SimState {
            stores,
            rng: ChaCha8Rng::seed_from_u64(config.seed ^ MUTATION_SEED_SALT),
            last_stamp,
            injected_429: 0,
            request_count: 0,
            limiter: config.rate_limit.map(Limiter::new),
            page_hooks: Vec::new(),
            outbox,
        };
        HubspotSim {
            inner: Arc::new(Inner {
                token: config.token.clone(),
                search_lag_ms: config.search_lag_ms,
                state: Mutex::new(state),
                emitter: Mutex::new(emitter),
                webhook_stats,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panicking test must not wedge the server for the tests after it.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes 1–2 data properties on up to `n` live records (seeded choice) and stamps
    /// them all with one new clock value. Returns the changed ids, ascending.
    pub fn update(&self, object: &str, n: usize) -> Vec<i64> {
        let kind = expect_kind(object);
        let mut state = self.lock();
        let stamp = state.next_stamp();
        state.update_records(kind, n, stamp)
    }

    /// Like [`update`](Self::update), but every changed record gets exactly `ts_ms`, to
    /// build timestamp ties. The clock keeps its high-water mark if `ts_ms` is older.
    pub fn update_at(&self, object: &str, n: usize, ts_ms: i64) -> Vec<i64> {
        let kind = expect_kind(object);
        let mut state = self.lock();
        state.last_stamp = state.last_stamp.max(ts_ms);
        state.update_records(kind, n, ts_ms)
    }

    /// Creates `n` records with ids above the current maximum (archived ones included),
    /// created and modified at one new clock value. Returns their ids, ascending.
    pub fn insert(&self, object: &str, n: usize) -> Vec<i64> {
        let kind = expect_kind(object);
        let mut state = self.lock();
        let stamp = state.next_stamp();
        let SimState {
            stores,
            rng,
            outbox,
            ..
        } = &mut *state;
        let store = &mut stores[kind.index()];
        let first = store.max_id() + 1;
        let mut ids = Vec::with_capacity(n);
        for offset in 0..n {
            let id = first + i64::try_from(offset).unwrap_or(i64::MAX - first);
            let record = data::generate_record(kind, id, stamp, stamp, rng);
            notify(outbox, kind, &record, stamp, ChangeKind::Creation);
            store.records.push(record);
            ids.push(id);
        }
        ids
    }

    /// Soft-deletes up to `n` live records (seeded choice): `archived`, `archivedAt` and
    /// `updatedAt` all take one new clock value. Returns their ids, ascending.
    pub fn archive(&self, object: &str, n: usize) -> Vec<i64> {
        let kind = expect_kind(object);
        let mut state = self.lock();
        let stamp = state.next_stamp();
        let SimState {
            stores,
            rng,
            outbox,
            ..
        } = &mut *state;
        let store = &mut stores[kind.index()];
        let mut ids = Vec::new();
        for index in pick_live(store, rng, n) {
            let record = &mut store.records[index];
            record.archived = true;
            record.archived_ms = Some(stamp);
            stamp_modified(kind, record, stamp);
            notify(outbox, kind, record, stamp, ChangeKind::Deletion);
            ids.push(record.id);
        }
        ids.sort_unstable();
        ids
    }

    /// Purges every archived record, as HubSpot does once they pass its retention: they are no
    /// longer listed, archived or not. Returns their ids, ascending.
    pub fn purge_archived(&self, object: &str) -> Vec<i64> {
        let kind = expect_kind(object);
        let mut state = self.lock();
        let store = &mut state.stores[kind.index()];
        let mut ids: Vec<i64> = store
            .records
            .iter()
            .filter(|record| record.archived)
            .map(|record| record.id)
            .collect();
        store.records.retain(|record| !record.archived);
        ids.sort_unstable();
        ids
    }

    /// Writes a raw value (or null) into one property of record `id`, bypassing type rules
    /// (for example `"not-a-number"` in a number property), and bumps its modified date.
    /// A write to the modified-date property itself wins over the bump.
    ///
    /// # Panics
    /// If the object type is unknown or no record (live or archived) has `id`.
    pub fn set_raw_property(&self, object: &str, id: i64, name: &str, value: Option<&str>) {
        let kind = expect_kind(object);
        let mut state = self.lock();
        let stamp = state.next_stamp();
        let SimState { stores, outbox, .. } = &mut *state;
        let Some(record) = stores[kind.index()].find_mut(id) else {
            panic!("no {object} record with id {id}");
        };
        stamp_modified(kind, record, stamp);
        record
            .properties
            .insert(name.to_owned(), value.map(str::to_owned));
        let what = ChangeKind::PropertyChange {
            name: name.to_owned(),
            value: value.map(str::to_owned),
        };
        notify(outbox, kind, record, stamp, what);
    }

    /// Applies `changes` to `object` records right after the `pages`-th search page for
    /// `object` from now on is computed, before it is sent: the next page's request already
    /// sees them. Real search computes its results per request (B2), so a record modified or
    /// archived mid-read leaves the result set between two pages; this puts that at an exact
    /// page boundary. All changes share one new clock value. `pages` of 0 counts as 1.
    ///
    /// # Panics
    /// If the object type is unknown; when applied, if no record has one of the ids.
    pub fn after_search_pages(&self, object: &str, pages: u64, changes: Vec<SimChange>) {
        let kind = expect_kind(object);
        self.lock().page_hooks.push(PageHook {
            kind,
            endpoint: Paged::Search,
            pages: pages.max(1),
            changes,
        });
    }

    /// Like [`after_search_pages`](Self::after_search_pages), for pages of the list endpoint
    /// (live and archived listings alike).
    pub fn after_list_pages(&self, object: &str, pages: u64, changes: Vec<SimChange>) {
        let kind = expect_kind(object);
        self.lock().page_hooks.push(PageHook {
            kind,
            endpoint: Paged::List,
            pages: pages.max(1),
            changes,
        });
    }

    /// Makes the next `n` API requests, whatever the endpoint, answer 429 with the
    /// TEN_SECONDLY_ROLLING body and no `Retry-After`, whether or not rate limiting is on.
    pub fn inject_429(&self, n: usize) {
        self.lock().injected_429 += n;
    }

    /// Sets the daily request limit of the rate limiter (from now, counting what was already
    /// used today), as a plan change or a new day would; no-op without rate limiting.
    pub fn set_daily_limit(&self, daily: u32) {
        if let Some(limiter) = self.lock().limiter.as_mut() {
            limiter.set_daily(daily);
        }
    }

    /// Non-archived records, sorted by id.
    pub fn live_records(&self, object: &str) -> Vec<SimRecord> {
        let kind = expect_kind(object);
        self.lock().stores[kind.index()]
            .records
            .iter()
            .filter(|record| !record.archived)
            .cloned()
            .collect()
    }

    /// Ids of archived records, ascending.
    pub fn archived_ids(&self, object: &str) -> Vec<i64> {
        let kind = expect_kind(object);
        self.lock().stores[kind.index()]
            .records
            .iter()
            .filter(|record| record.archived)
            .map(|record| record.id)
            .collect()
    }

    /// The property definitions served for `object`.
    pub fn properties(&self, object: &str) -> Vec<PropertyDef> {
        let kind = expect_kind(object);
        self.lock().stores[kind.index()].defs.clone()
    }

    /// What the webhook emitter has done so far; `None` when webhooks are off.
    pub fn webhook_stats(&self) -> Option<WebhookStats> {
        self.inner.webhook_stats.get()
    }

    /// The emitter, once: the server's start runs it.
    pub(crate) fn take_emitter(&self) -> Option<Emitter> {
        self.inner
            .emitter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// API requests received under `/crm/`, including those answered 401, 414 or 429.
    pub fn request_count(&self) -> u64 {
        self.lock().request_count
    }

    /// The simulator clock in epoch ms: wall-clock time, but never before the latest stamp
    /// handed to a change, so `updated_ms <= now_ms()` holds for every record.
    pub fn now_ms(&self) -> i64 {
        data::wall_clock_ms().max(self.lock().last_stamp)
    }

    fn admit(&self, search: bool, uri_chars: usize, authorized: bool) -> Admission {
        let mut state = self.lock();
        state.request_count += 1;
        if state.injected_429 > 0 {
            state.injected_429 -= 1;
            return Admission::Refuse(rate_limited(Policy::TenSecondlyRolling, None, false));
        }
        if uri_chars > MAX_URI_CHARS {
            return Admission::Refuse(error_response(
                StatusCode::URI_TOO_LONG,
                "VALIDATION_ERROR",
                format!(
                    "Request URI of {uri_chars} characters exceeds the {MAX_URI_CHARS}-character limit"
                ),
            ));
        }
        if !authorized {
            return Admission::Refuse(error_response(
                StatusCode::UNAUTHORIZED,
                "INVALID_AUTHENTICATION",
                UNAUTHENTICATED_MESSAGE,
            ));
        }
        let Some(limiter) = state.limiter.as_mut() else {
            return Admission::Proceed(None);
        };
        let day = data::wall_clock_ms().div_euclid(data::DAY_MS);
        match limiter.check(Instant::now(), day, search) {
            Verdict::Allowed { budget } => Admission::Proceed(budget),
            Verdict::Limited {
                policy,
                budget,
                retry_after,
            } => Admission::Refuse(rate_limited(policy, budget, retry_after)),
        }
    }

    fn list_page(&self, kind: ObjectKind, params: &ListParams) -> (Vec<Value>, Option<i64>) {
        let mut state = self.lock();
        let page = Self::list_records(&state, kind, params);
        state.page_served(kind, Paged::List);
        page
    }

    fn list_records(
        state: &SimState,
        kind: ObjectKind,
        params: &ListParams,
    ) -> (Vec<Value>, Option<i64>) {
        let store = &state.stores[kind.index()];
        let names = selected_names(kind, &params.properties);
        let start = store
            .records
            .partition_point(|record| record.id < params.after);
        let mut results = Vec::new();
        let mut last_id = None;
        let mut more = false;
        for record in store.records[start..]
            .iter()
            .filter(|record| record.archived == params.archived)
        {
            if results.len() == params.limit {
                more = true;
                break;
            }
            results.push(render_record(record, &names, &store.defs));
            last_id = Some(record.id);
        }
        // The cursor is the next id to read, as in HubSpot's own `after` values.
        let next = if more { last_id.map(|id| id + 1) } else { None };
        (results, next)
    }

    fn search(&self, kind: ObjectKind, body: &[u8]) -> Result<Value, SearchError> {
        let mut state = self.lock();
        let page = Self::search_page(&state, kind, body, self.inner.search_lag_ms)?;
        state.page_served(kind, Paged::Search);
        Ok(page)
    }

    fn search_page(
        state: &SimState,
        kind: ObjectKind,
        body: &[u8],
        search_lag_ms: u64,
    ) -> Result<Value, SearchError> {
        let store = &state.stores[kind.index()];
        let query = search::parse(body, &store.defs)?;
        let lag = i64::try_from(search_lag_ms).unwrap_or(i64::MAX);
        let visible_until = (lag > 0).then(|| data::wall_clock_ms().saturating_sub(lag));
        let hits: Vec<&SimRecord> = store
            .records
            .iter()
            .filter(|record| !record.archived)
            .filter(|record| visible_until.is_none_or(|until| record.updated_ms <= until))
            .filter(|record| query.matches(record))
            .collect();
        let total = hits.len();
        let names = selected_names(kind, &query.properties);
        let page: Vec<Value> = query
            .sorted(hits)
            .into_iter()
            .skip(query.offset)
            .take(query.limit)
            .map(|record| render_record(record, &names, &store.defs))
            .collect();
        let end = query.offset + page.len();
        let mut body = Map::new();
        body.insert("total".to_owned(), json!(total));
        if !page.is_empty() && end < total {
            // Offered even when following it would cross the 10,000 window, as HubSpot does.
            body.insert(
                "paging".to_owned(),
                json!({"next": {"after": end.to_string()}}),
            );
        }
        body.insert("results".to_owned(), Value::Array(page));
        Ok(Value::Object(body))
    }
}

enum Admission {
    Proceed(Option<Budget>),
    Refuse(Response),
}

/// Requested property names, deduplicated in request order; the defaults when none.
fn selected_names<'a>(kind: ObjectKind, requested: &'a [String]) -> Vec<&'a str> {
    if requested.is_empty() {
        return kind.default_properties().to_vec();
    }
    let mut names: Vec<&'a str> = Vec::with_capacity(requested.len());
    for name in requested {
        if !names.contains(&name.as_str()) {
            names.push(name.as_str());
        }
    }
    names
}

/// The wire shape of one record. Requested properties without a value come back as null;
/// names that are neither defined nor set on the record are left out, as HubSpot ignores them.
fn render_record(record: &SimRecord, names: &[&str], defs: &[PropertyDef]) -> Value {
    let mut properties = Map::new();
    for &name in names {
        match record.properties.get(name) {
            Some(value) => {
                properties.insert(
                    name.to_owned(),
                    value.clone().map_or(Value::Null, Value::String),
                );
            }
            None if defs.iter().any(|def| def.name == name) => {
                properties.insert(name.to_owned(), Value::Null);
            }
            None => {}
        }
    }
    let mut object = Map::new();
    object.insert("id".to_owned(), Value::String(record.id.to_string()));
    object.insert("properties".to_owned(), Value::Object(properties));
    object.insert(
        "createdAt".to_owned(),
        Value::String(data::iso_millis(record.created_ms)),
    );
    object.insert(
        "updatedAt".to_owned(),
        Value::String(data::iso_millis(record.updated_ms)),
    );
    object.insert("archived".to_owned(), Value::Bool(record.archived));
    if let Some(archived_ms) = record.archived_ms.filter(|_| record.archived) {
        object.insert(
            "archivedAt".to_owned(),
            Value::String(data::iso_millis(archived_ms)),
        );
    }
    Value::Object(object)
}

/// The routes of the simulated `api.hubapi.com`, with the gate middleware in front.
pub(crate) fn router(sim: HubspotSim) -> Router {
    Router::new()
        .route("/crm/v3/objects/{object_type}", get(list_objects))
        .route("/crm/v3/objects/{object_type}/search", post(search_objects))
        .route(
            "/crm/v3/objects/{object_type}/batch/read",
            post(batch_read_objects),
        )
        .route("/crm/v3/properties/{object_type}", get(list_properties))
        .route("/_sim/hubspot/{object_type}/{action}", post(change_objects))
        .route("/_sim/webhooks", get(webhook_stats))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(sim.clone(), gate))
        .with_state(sim)
}

async fn gate(State(sim): State<HubspotSim>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/crm/") {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let search = method == Method::POST && path.ends_with("/search");
    let uri_chars = request
        .uri()
        .path_and_query()
        .map_or(path.len(), |pq| pq.as_str().len());
    let authorized = bearer_token(request.headers()).is_some_and(|token| token == sim.inner.token);
    let response = match sim.admit(search, uri_chars, authorized) {
        Admission::Refuse(response) => response,
        Admission::Proceed(budget) => {
            let mut response = next.run(request).await;
            if let Some(budget) = budget {
                apply_budget(response.headers_mut(), budget);
            }
            response
        }
    };
    tracing::debug!(%method, %path, status = response.status().as_u16(), "hubspot sim request");
    response
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn list_objects(
    State(sim): State<HubspotSim>,
    Path(object_type): Path<String>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(kind) = ObjectKind::parse(&object_type) else {
        return unknown_object_type(&object_type);
    };
    let raw_query = raw_query.unwrap_or_default();
    let params = match parse_list_params(&raw_query) {
        Ok(params) => params,
        Err(message) => return validation_error(message),
    };
    let (results, next) = sim.list_page(kind, &params);
    let mut body = Map::new();
    body.insert("results".to_owned(), Value::Array(results));
    if let Some(after) = next {
        let link = next_link(&headers, kind, &raw_query, after);
        body.insert(
            "paging".to_owned(),
            json!({"next": {"after": after.to_string(), "link": link}}),
        );
    }
    Json(Value::Object(body)).into_response()
}

async fn search_objects(
    State(sim): State<HubspotSim>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> Response {
    let Some(kind) = ObjectKind::parse(&object_type) else {
        return unknown_object_type(&object_type);
    };
    match sim.search(kind, &body) {
        Ok(value) => Json(value).into_response(),
        Err(SearchError(message)) => validation_error(message),
    }
}

/// Batch read (crm-apis.md B5): up to 100 ids; ids not found (or archived, unless
/// `?archived=true`) are left out of `results` and named in `errors` with status 207.
async fn batch_read_objects(
    State(sim): State<HubspotSim>,
    Path(object_type): Path<String>,
    RawQuery(raw_query): RawQuery,
    body: Bytes,
) -> Response {
    let Some(kind) = ObjectKind::parse(&object_type) else {
        return unknown_object_type(&object_type);
    };
    let archived = raw_query.is_some_and(|q| q.split('&').any(|p| p == "archived=true"));
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return validation_error("Invalid input JSON on line 1");
    };
    let Some(inputs) = request.get("inputs").and_then(Value::as_array) else {
        return validation_error("inputs is required");
    };
    if inputs.len() > 100 {
        return validation_error("Batch input limit is 100");
    }
    let properties: Vec<String> = request
        .get("properties")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let state = sim.lock();
    let store = &state.stores[kind.index()];
    let names = selected_names(kind, &properties);
    let mut results = Vec::new();
    let mut not_found = Vec::new();
    for input in inputs {
        let id = input.get("id").and_then(|v| match v {
            Value::String(s) => s.parse::<i64>().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        });
        let found = id.and_then(|id| {
            store
                .records
                .binary_search_by_key(&id, |record| record.id)
                .ok()
                .map(|at| &store.records[at])
                .filter(|record| record.archived == archived)
        });
        match found {
            Some(record) => results.push(render_record(record, &names, &store.defs)),
            None => not_found.push(input.get("id").cloned().unwrap_or(Value::Null)),
        }
    }
    let now = data::iso_millis(data::wall_clock_ms());
    let mut body = json!({
        "status": "COMPLETE",
        "results": results,
        "requestedAt": now,
        "startedAt": now,
        "completedAt": now,
    });
    if not_found.is_empty() {
        return Json(body).into_response();
    }
    body["numErrors"] = json!(1);
    body["errors"] = json!([{
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": "Could not get some objects, they may be deleted or not exist.",
        "context": {"ids": not_found},
    }]);
    (StatusCode::MULTI_STATUS, Json(body)).into_response()
}

/// Most records one `/_sim/` change request touches.
const MAX_CHANGES_PER_REQUEST: usize = 10_000;

/// The simulator's own control API (not HubSpot's, no token): `POST
/// /_sim/hubspot/{object}/{update|insert|archive}?n=N` makes the same change as the test API
/// of the same name in a simulator running as its own process (`syncline sim`), webhooks
/// included, and answers `{"ids":[…]}`.
async fn change_objects(
    State(sim): State<HubspotSim>,
    Path((object_type, action)): Path<(String, String)>,
    RawQuery(raw_query): RawQuery,
) -> Response {
    let Some(kind) = ObjectKind::parse(&object_type) else {
        return unknown_object_type(&object_type);
    };
    let n = parse_query(raw_query.as_deref().unwrap_or_default())
        .iter()
        .find(|(key, _)| key == "n")
        .map_or(Ok(1), |(_, value)| value.parse::<usize>());
    let n = match n {
        Ok(n) if n <= MAX_CHANGES_PER_REQUEST => n,
        _ => {
            return validation_error(format!(
                "n must be a count from 0 to {MAX_CHANGES_PER_REQUEST}"
            ));
        }
    };
    let object = kind.as_str();
    let ids = match action.as_str() {
        "update" => sim.update(object, n),
        "insert" => sim.insert(object, n),
        "archive" => sim.archive(object, n),
        _ => {
            return error_response(
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                format!("unknown simulator action {action:?}: update, insert or archive"),
            );
        }
    };
    Json(json!({ "ids": ids })).into_response()
}

/// `GET /_sim/webhooks`: the webhook emitter's counters (404 when webhooks are off), so a
/// test can wait until every event was delivered (`pending` 0).
async fn webhook_stats(State(sim): State<HubspotSim>) -> Response {
    match sim.webhook_stats() {
        Some(stats) => Json(stats).into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "webhooks are off: start the simulator with --webhook-url",
        ),
    }
}

async fn list_properties(
    State(sim): State<HubspotSim>,
    Path(object_type): Path<String>,
    RawQuery(raw_query): RawQuery,
) -> Response {
    let Some(kind) = ObjectKind::parse(&object_type) else {
        return unknown_object_type(&object_type);
    };
    let archived = parse_query(raw_query.as_deref().unwrap_or_default())
        .iter()
        .any(|(key, value)| key == "archived" && value.eq_ignore_ascii_case("true"));
    // No property definition is ever deleted here, so the archived listing is empty.
    let results = if archived {
        Vec::new()
    } else {
        sim.properties(kind.as_str())
    };
    Json(json!({ "results": results })).into_response()
}

async fn not_found(uri: Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        format!("No resource at {}", uri.path()),
    )
}

struct ListParams {
    limit: usize,
    after: i64,
    archived: bool,
    properties: Vec<String>,
}

fn parse_list_params(raw_query: &str) -> Result<ListParams, String> {
    let mut params = ListParams {
        limit: LIST_DEFAULT_LIMIT,
        after: 0,
        archived: false,
        properties: Vec::new(),
    };
    for (key, value) in parse_query(raw_query) {
        match key.as_str() {
            "limit" => {
                let limit: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("limit must be a positive integer, got \"{value}\""))?;
                // HubSpot clamps rather than refuses an oversized page.
                params.limit =
                    usize::try_from(limit.clamp(1, LIST_MAX_LIMIT)).unwrap_or(LIST_DEFAULT_LIMIT);
            }
            "after" if !value.trim().is_empty() => {
                params.after = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("after \"{value}\" is not a valid paging cursor"))?;
            }
            "archived" => params.archived = value.trim().eq_ignore_ascii_case("true"),
            "properties" => params.properties.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }
    Ok(params)
}

/// The next-page link: the request's own query with `after` replaced.
fn next_link(headers: &HeaderMap, kind: ObjectKind, raw_query: &str, after: i64) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("localhost");
    let after_pair = format!("after={after}");
    let mut pairs: Vec<&str> = raw_query
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some("after"))
        .collect();
    pairs.push(&after_pair);
    format!(
        "http://{host}/crm/v3/objects/{}?{}",
        kind.as_str(),
        pairs.join("&")
    )
}

/// Decodes `application/x-www-form-urlencoded` pairs, keeping repeated keys.
fn parse_query(raw_query: &str) -> Vec<(String, String)> {
    raw_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    fn hex(byte: u8) -> Option<u8> {
        match byte {
            b'0'..=b'9' => Some(byte - b'0'),
            b'a'..=b'f' => Some(byte - b'a' + 10),
            b'A'..=b'F' => Some(byte - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error_response(status: StatusCode, category: &str, message: impl Into<String>) -> Response {
    let message: String = message.into();
    let body = json!({
        "status": "error",
        "message": message,
        "correlationId": Uuid::new_v4().to_string(),
        "category": category,
    });
    (status, Json(body)).into_response()
}

fn validation_error(message: impl Into<String>) -> Response {
    error_response(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
}

fn unknown_object_type(name: &str) -> Response {
    validation_error(format!("Unable to infer object type from: {name}"))
}

fn rate_limited(policy: Policy, budget: Option<Budget>, retry_after: bool) -> Response {
    let body = json!({
        "status": "error",
        "message": policy.message(),
        "errorType": "RATE_LIMIT",
        "correlationId": Uuid::new_v4().to_string(),
        "policyName": policy.name(),
        "requestId": Uuid::new_v4().to_string(),
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    if let Some(budget) = budget {
        apply_budget(response.headers_mut(), budget);
    }
    if retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn apply_budget(headers: &mut HeaderMap, budget: Budget) {
    let values = [
        ("x-hubspot-ratelimit-max", budget.max),
        ("x-hubspot-ratelimit-remaining", budget.remaining),
        (
            "x-hubspot-ratelimit-interval-milliseconds",
            BURST_INTERVAL_MS,
        ),
        ("x-hubspot-ratelimit-daily", budget.daily),
        (
            "x-hubspot-ratelimit-daily-remaining",
            budget.daily_remaining,
        ),
    ];
    for (name, value) in values {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{RateLimit, Simulator};

    fn small(seed: u64) -> HubspotSim {
        HubspotSim::new(&SimConfig {
            seed,
            contacts: 30,
            companies: 5,
            deals: 5,
            ..SimConfig::default()
        })
    }

    fn record(sim: &HubspotSim, object: &str, id: i64) -> SimRecord {
        let kind = expect_kind(object);
        sim.lock().stores[kind.index()]
            .records
            .iter()
            .find(|record| record.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("{object} {id} exists"))
    }

    #[test]
    fn scheduled_changes_apply_right_after_their_search_page() {
        let sim = small(7);
        let body = br#"{"sorts":["hs_object_id"],"limit":10}"#;
        let before = record(&sim, "contacts", 3).updated_ms;
        sim.after_search_pages(
            "contacts",
            2,
            vec![SimChange::Modify(3), SimChange::Archive(5)],
        );
        // Pages of another object do not count.
        sim.search(ObjectKind::Deals, body).unwrap();
        let first = sim.search(ObjectKind::Contacts, body).unwrap();
        assert_eq!(first["total"], 30);
        assert_eq!(record(&sim, "contacts", 3).updated_ms, before);
        // The page that triggers the changes was computed before them.
        let second = sim.search(ObjectKind::Contacts, body).unwrap();
        assert_eq!(second["total"], 30);
        let modified = record(&sim, "contacts", 3);
        assert!(modified.updated_ms > before);
        assert!(record(&sim, "contacts", 5).archived);
        assert_eq!(sim.archived_ids("contacts"), vec![5]);
        // The next request sees them: the archived record left the result set.
        let third = sim.search(ObjectKind::Contacts, body).unwrap();
        assert_eq!(third["total"], 29);
        assert!(sim.lock().page_hooks.is_empty());
    }

    #[test]
    fn same_seed_gives_same_data_and_same_change_sequence() {
        let (a, b) = (small(9), small(9));
        assert_eq!(a.live_records("contacts"), b.live_records("contacts"));
        assert_eq!(a.update("contacts", 4), b.update("contacts", 4));
        assert_eq!(a.archive("deals", 2), b.archive("deals", 2));
        let props = |sim: &HubspotSim| -> Vec<_> {
            sim.live_records("contacts")
                .into_iter()
                .map(|mut record| {
                    record.properties.remove("lastmodifieddate");
                    (record.id, record.properties)
                })
                .collect()
        };
        assert_eq!(props(&a), props(&b));
        assert_ne!(
            small(9).live_records("contacts"),
            small(10).live_records("contacts")
        );
    }

    #[test]
    fn change_calls_stamp_strictly_increasing_times() {
        let sim = small(1);
        let before_update = sim.live_records("contacts");
        let floor = sim.now_ms();
        let updated = sim.update("contacts", 3);
        assert_eq!(updated.len(), 3);
        let first_stamp = record(&sim, "contacts", updated[0]).updated_ms;
        assert!(first_stamp >= floor);
        for &id in &updated {
            let after = record(&sim, "contacts", id);
            assert_eq!(after.updated_ms, first_stamp);
            assert_eq!(
                after.properties["lastmodifieddate"].as_deref(),
                Some(data::iso_millis(first_stamp).as_str())
            );
            let before = before_update.iter().find(|r| r.id == id).expect("was live");
            let changed = after
                .properties
                .iter()
                .filter(|(name, value)| {
                    name.as_str() != "lastmodifieddate"
                        && before.properties.get(*name) != Some(*value)
                })
                .count();
            assert!(
                (1..=2).contains(&changed),
                "{changed} data properties changed"
            );
        }

        assert_eq!(sim.insert("contacts", 2), vec![31, 32]);
        let inserted = record(&sim, "contacts", 31);
        assert!(inserted.updated_ms > first_stamp);
        assert_eq!(inserted.created_ms, inserted.updated_ms);
        assert_eq!(inserted.properties["hs_object_id"].as_deref(), Some("31"));
        assert!(sim.now_ms() >= inserted.updated_ms);

        sim.set_raw_property("contacts", 5, "num_employees", Some("not-a-number"));
        let raw = record(&sim, "contacts", 5);
        assert_eq!(
            raw.properties["num_employees"].as_deref(),
            Some("not-a-number")
        );
        assert!(raw.updated_ms > inserted.updated_ms);
    }

    #[test]
    fn update_at_builds_ties_and_archive_hides_records() {
        let sim = small(2);
        let tie = 1_717_000_000_000;
        let ids = sim.update_at("deals", 3, tie);
        assert_eq!(ids.len(), 3);
        for id in ids {
            let tied = record(&sim, "deals", id);
            assert_eq!(tied.updated_ms, tie);
            assert_eq!(
                tied.properties["hs_lastmodifieddate"].as_deref(),
                Some("2024-05-29T16:26:40.000Z")
            );
        }

        let archived = sim.archive("companies", 2);
        assert_eq!(sim.archived_ids("companies"), archived);
        assert_eq!(sim.live_records("companies").len(), 3);
        let gone = record(&sim, "companies", archived[0]);
        assert!(gone.archived && gone.archived_ms == Some(gone.updated_ms));
        // Ids keep growing past archived records.
        assert_eq!(sim.insert("companies", 1), vec![6]);
    }

    #[test]
    fn search_hides_archived_and_not_yet_indexed_records() {
        let sim = HubspotSim::new(&SimConfig {
            contacts: 10,
            companies: 1,
            deals: 1,
            search_lag_ms: 60_000,
            ..SimConfig::default()
        });
        let archived = sim.archive("contacts", 1);
        let inserted = sim.insert("contacts", 1);
        let page = sim
            .search(ObjectKind::Contacts, br#"{"limit":100}"#)
            .expect("valid search");
        let ids: Vec<&str> = page["results"]
            .as_array()
            .expect("results")
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        assert_eq!(page["total"], 9);
        assert!(!ids.contains(&archived[0].to_string().as_str()));
        assert!(!ids.contains(&inserted[0].to_string().as_str()));
        // The list endpoint is not subject to the index lag.
        let params = ListParams {
            limit: 100,
            after: 0,
            archived: false,
            properties: Vec::new(),
        };
        assert_eq!(sim.list_page(ObjectKind::Contacts, &params).0.len(), 10);
    }

    #[test]
    fn list_params_clamp_limit_and_collect_repeated_properties() {
        let params = parse_list_params(
            "limit=500&after=42&properties=email,%20score&properties=phone&archived=TRUE",
        )
        .expect("valid params");
        assert_eq!(params.limit, 100);
        assert_eq!(params.after, 42);
        assert!(params.archived);
        assert_eq!(params.properties, ["email", "score", "phone"]);
        assert!(parse_list_params("after=abc").is_err());
        assert_eq!(percent_decode("a%2Cb+c%zz"), "a,b c%zz");
    }

    /// One HTTP/1.1 exchange over a fresh connection; returns status, lowercased head, JSON body.
    async fn call(
        base_url: &str,
        method: &str,
        target: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, String, Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = base_url.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to simulator");
        let auth = token
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read response");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, payload) = text.split_once("\r\n\r\n").expect("response head");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("status code");
        (
            status,
            head.to_ascii_lowercase(),
            serde_json::from_str(payload).unwrap_or(Value::Null),
        )
    }

    fn property_names(record: &Value) -> Vec<String> {
        let mut names: Vec<String> = record["properties"]
            .as_object()
            .expect("properties object")
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn serves_the_documented_wire_shapes() {
        let config = SimConfig {
            contacts: 25,
            companies: 3,
            deals: 3,
            ..SimConfig::default()
        };
        let handle = Simulator::start(config, "127.0.0.1:0".parse().expect("socket address"))
            .await
            .expect("simulator starts");
        let base = handle.base_url.clone();
        let token = Some(handle.token());

        let (status, _, body) = call(&base, "GET", "/crm/v3/objects/contacts", None, "").await;
        assert_eq!(status, 401);
        assert_eq!(body["category"], "INVALID_AUTHENTICATION");
        let (status, _, _) =
            call(&base, "GET", "/crm/v3/objects/contacts", Some("wrong"), "").await;
        assert_eq!(status, 401);

        let (status, head, body) =
            call(&base, "GET", "/crm/v3/objects/contacts?limit=10", token, "").await;
        assert_eq!(status, 200);
        assert!(
            !head.contains("x-hubspot-ratelimit"),
            "no limiter configured"
        );
        let results = body["results"].as_array().expect("results");
        assert_eq!(results.len(), 10);
        assert_eq!(results[0]["id"], "1");
        assert_eq!(results[0]["archived"], false);
        assert_eq!(
            property_names(&results[0]),
            [
                "createdate",
                "email",
                "firstname",
                "hs_object_id",
                "lastmodifieddate",
                "lastname"
            ]
        );
        assert_eq!(
            results[0]["properties"]["lastmodifieddate"],
            results[0]["updatedAt"]
        );
        let after = body["paging"]["next"]["after"]
            .as_str()
            .expect("next cursor")
            .to_owned();
        assert!(
            body["paging"]["next"]["link"]
                .as_str()
                .expect("link")
                .contains(&format!("after={after}"))
        );

        let target = format!(
            "/crm/v3/objects/contacts?limit=100&after={after}&properties=score,no_such_property"
        );
        let (_, _, last) = call(&base, "GET", &target, token, "").await;
        let results = last["results"].as_array().expect("results");
        assert_eq!(results.len(), 15);
        assert!(last.get("paging").is_none(), "no paging on the last page");
        assert!(
            results
                .iter()
                .all(|record| property_names(record) == ["score"])
        );

        let search = json!({
            "filterGroups": [{"filters": [{"propertyName": "hs_object_id", "operator": "GT", "value": "20"}]}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "limit": 2,
        });
        let (status, head, found) = call(
            &base,
            "POST",
            "/crm/v3/objects/contacts/search",
            token,
            &search.to_string(),
        )
        .await;
        assert_eq!(status, 200);
        assert!(!head.contains("x-hubspot-ratelimit"));
        assert_eq!(found["total"], 5);
        assert_eq!(found["results"][0]["id"], "21");
        assert_eq!(found["paging"]["next"]["after"], "2");

        let too_far = json!({"limit": 200, "after": "9900"}).to_string();
        let (status, _, refused) = call(
            &base,
            "POST",
            "/crm/v3/objects/contacts/search",
            token,
            &too_far,
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(refused["category"], "VALIDATION_ERROR");

        let archived = handle.hubspot.archive("contacts", 1);
        let (_, _, gone) = call(
            &base,
            "GET",
            "/crm/v3/objects/contacts?archived=true",
            token,
            "",
        )
        .await;
        assert_eq!(gone["results"][0]["id"], archived[0].to_string());
        assert_eq!(gone["results"][0]["archived"], true);
        assert!(gone["results"][0]["archivedAt"].is_string());

        handle.hubspot.inject_429(1);
        let (status, head, limited) =
            call(&base, "GET", "/crm/v3/properties/deals", token, "").await;
        assert_eq!(status, 429);
        assert_eq!(limited["policyName"], "TEN_SECONDLY_ROLLING");
        assert_eq!(limited["errorType"], "RATE_LIMIT");
        assert!(!head.contains("retry-after"));
        let (status, _, props) = call(&base, "GET", "/crm/v3/properties/deals", token, "").await;
        assert_eq!(status, 200);
        assert_eq!(props["results"].as_array().expect("definitions").len(), 8);
        assert_eq!(props["results"][0]["type"], "datetime");

        let wide = format!("/crm/v3/objects/contacts?properties={}", "p,".repeat(8_200));
        let (status, _, _) = call(&base, "GET", &wide, token, "").await;
        assert_eq!(status, 414);

        let (status, _, unknown) = call(&base, "GET", "/crm/v3/objects/widgets", token, "").await;
        assert_eq!(status, 400);
        assert_eq!(unknown["status"], "error");

        assert_eq!(handle.hubspot.request_count(), 11);
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn rate_limits_bursts_and_search_separately() {
        let config = SimConfig {
            contacts: 5,
            companies: 1,
            deals: 1,
            rate_limit: Some(RateLimit {
                per_ten_seconds: 2,
                search_per_second: 1,
                daily: 1_000,
            }),
            ..SimConfig::default()
        };
        let handle = Simulator::start(config, "127.0.0.1:0".parse().expect("socket address"))
            .await
            .expect("simulator starts");
        let base = handle.base_url.clone();
        let token = Some(handle.token());

        let (status, head, _) = call(&base, "GET", "/crm/v3/objects/deals", token, "").await;
        assert_eq!(status, 200);
        assert!(head.contains("x-hubspot-ratelimit-remaining: 1"), "{head}");
        assert!(head.contains("x-hubspot-ratelimit-interval-milliseconds: 10000"));
        assert!(head.contains("x-hubspot-ratelimit-daily-remaining: 999"));
        let (status, _, _) = call(&base, "GET", "/crm/v3/objects/deals", token, "").await;
        assert_eq!(status, 200);
        let (status, head, body) = call(&base, "GET", "/crm/v3/objects/deals", token, "").await;
        assert_eq!(status, 429);
        assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
        assert!(head.contains("retry-after: 1"));
        let (status, head, _) = call(&base, "GET", "/crm/v3/objects/deals", token, "").await;
        assert_eq!(status, 429);
        assert!(
            !head.contains("retry-after"),
            "Retry-After only on every other 429"
        );

        let (status, head, _) =
            call(&base, "POST", "/crm/v3/objects/deals/search", token, "{}").await;
        assert_eq!(status, 200);
        assert!(
            !head.contains("x-hubspot-ratelimit"),
            "search carries no rate headers"
        );
        let (status, _, body) =
            call(&base, "POST", "/crm/v3/objects/deals/search", token, "{}").await;
        assert_eq!(status, 429);
        assert_eq!(body["policyName"], "SECONDLY");
        assert_eq!(body["message"], "You have reached your secondly limit.");
        handle.shutdown().await;
    }
}

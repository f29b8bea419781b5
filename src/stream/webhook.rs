//! The HubSpot webhook receiver of `syncline stream`: `POST /webhooks/hubspot`.
//!
//! A webhook is a hint, not data (crm-apis.md B7): each event names a record that changed, and
//! the stream engine re-reads those records by batch read and merges them as an ordinary load.
//! The receiver's job is to turn signed deliveries into [`Hint`]s exactly once:
//!
//! - **Signature v3** as HubSpot documents it: `base64(HMAC-SHA256(app secret, METHOD + URI +
//!   RAW_BODY + TIMESTAMP))` in `X-HubSpot-Signature-v3`, the timestamp (epoch ms) in
//!   `X-HubSpot-Request-Timestamp`. The URI is the one HubSpot called (the app's target URL),
//!   which behind a proxy is not the one this process sees: [`WebhookReceiver::with_public_url`]
//!   names it. Bad, missing or stale (older than five minutes) → 401, nothing sent.
//! - **Never waits on a load**: hints go into a bounded channel with `try_send`; when it is full
//!   the delivery is answered 503 with `Retry-After`, so HubSpot delivers it again. Nothing is
//!   dropped: an event is remembered as delivered only once its hint is in the channel.
//! - **Exactly once**: a bounded set of recent `eventId`s; a repeated event (HubSpot's
//!   at-least-once delivery, retries with a higher `attemptNumber`) is answered 200 and sends
//!   no second hint. Order does not matter: a hint only says "read this record again".
//! - Events for object types no stream is mapped to are counted and answered 200 (HubSpot
//!   would retry anything else for a day).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc::{self, error::TrySendError};

/// Where the receiver listens, on whatever listener mounts it.
pub const PATH: &str = "/webhooks/hubspot";
/// HubSpot: reject a request whose timestamp is older than five minutes.
pub const MAX_AGE_MS: i64 = 300_000;
/// Event ids remembered for de-duplication. HubSpot retries a failed delivery for about a day
/// but its duplicates arrive within minutes; at 100 events a delivery this covers the last
/// thousand deliveries, about 8 MB at most.
pub const RECENT_EVENT_IDS: usize = 100_000;
/// What a 503 asks HubSpot to wait before delivering again (seconds).
const RETRY_AFTER_SECONDS: &str = "1";

/// One changed record: read `key` of `stream` again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// The pipeline stream the event's object type maps to (`contacts`).
    pub stream: String,
    /// The record's id (HubSpot's `objectId`), as text.
    pub key: String,
    /// HubSpot's `occurredAt`: when the change happened, epoch ms (for latency metrics).
    pub occurred_at_ms: i64,
}

/// The receiver with HubSpot's app secret, the object-type → stream map and the hint channel.
///
/// `object_streams` keys are HubSpot object type names as they start a legacy
/// `subscriptionType` (`contact` in `contact.propertyChange`) or the `objectTypeId` of a
/// generic `object.*` subscription (`0-1`); the ids of contacts, companies, deals and tickets
/// also find their names' entries.
pub struct WebhookReceiver {
    secret: String,
    public_url: Option<String>,
    object_streams: HashMap<String, String>,
    hints: mpsc::Sender<Hint>,
    recent_ids: usize,
    counters: Arc<WebhookCounters>,
}

/// `POST /webhooks/hubspot` with the signed URI taken from the request's `Host` header
/// (`http://HOST/webhooks/hubspot`); see [`WebhookReceiver`] to name the public URL.
pub fn router(
    secret: String,
    object_streams: HashMap<String, String>,
    hints: mpsc::Sender<Hint>,
) -> Router {
    WebhookReceiver::new(secret, object_streams, hints).router()
}

impl WebhookReceiver {
    pub fn new(
        secret: String,
        object_streams: HashMap<String, String>,
        hints: mpsc::Sender<Hint>,
    ) -> Self {
        WebhookReceiver {
            secret,
            public_url: None,
            object_streams,
            hints,
            recent_ids: RECENT_EVENT_IDS,
            counters: Arc::new(WebhookCounters::default()),
        }
    }

    /// The target URL exactly as set in the HubSpot app (`https://hooks.example.com/webhooks/hubspot`):
    /// HubSpot signs the URL it called, which a proxy in front of this process rewrites. The
    /// request's query string, if any, is appended. Without it, `http://` + `Host` + path.
    pub fn with_public_url(mut self, public_url: Option<String>) -> Self {
        self.public_url = public_url.map(|url| url.trim_end_matches('/').to_owned());
        self
    }

    /// How many recent event ids de-duplication remembers (default [`RECENT_EVENT_IDS`]).
    pub fn with_recent_ids(mut self, recent_ids: usize) -> Self {
        self.recent_ids = recent_ids.max(1);
        self
    }

    /// The receiver's counters, shared with the router (for `/metrics`).
    pub fn counters(&self) -> Arc<WebhookCounters> {
        Arc::clone(&self.counters)
    }

    /// The route `POST /webhooks/hubspot`, ready to merge into a listener's router.
    pub fn router(self) -> Router {
        let shared = Arc::new(Shared {
            secret: self.secret,
            public_url: self.public_url,
            object_streams: self.object_streams,
            hints: self.hints,
            recent: Mutex::new(RecentIds::new(self.recent_ids)),
            counters: self.counters,
        });
        Router::new().route(PATH, post(receive)).with_state(shared)
    }
}

/// What the receiver has seen since it started; monotonic counts.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    deliveries: AtomicU64,
    hints: AtomicU64,
    duplicates: AtomicU64,
    unknown_objects: AtomicU64,
    unauthorized: AtomicU64,
    busy: AtomicU64,
    malformed: AtomicU64,
}

/// A copy of [`WebhookCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WebhookStats {
    /// Deliveries (requests) whose signature held.
    pub deliveries: u64,
    /// Hints handed to the stream engine.
    pub hints: u64,
    /// Events already seen (same `eventId`), answered 200 without a hint.
    pub duplicates: u64,
    /// Events for object types no stream is mapped to, answered 200 without a hint.
    pub unknown_objects: u64,
    /// Requests answered 401: signature or timestamp bad, missing or stale.
    pub unauthorized: u64,
    /// Deliveries answered 503 because the hint queue was full (HubSpot delivers again).
    pub busy: u64,
    /// Signed deliveries whose body was not a JSON array of events, answered 400.
    pub malformed: u64,
}

impl WebhookCounters {
    pub fn snapshot(&self) -> WebhookStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WebhookStats {
            deliveries: read(&self.deliveries),
            hints: read(&self.hints),
            duplicates: read(&self.duplicates),
            unknown_objects: read(&self.unknown_objects),
            unauthorized: read(&self.unauthorized),
            busy: read(&self.busy),
            malformed: read(&self.malformed),
        }
    }
}

impl WebhookCounters {
    /// The counters in the Prometheus text format, for `/metrics`.
    pub fn render(&self) -> String {
        let stats = self.snapshot();
        let mut out = String::new();
        let families: [(&str, &str, &[(&str, u64)]); 2] = [
            (
                "syncline_webhook_requests_total",
                "Webhook deliveries by answer: accepted (signature held), unauthorized (401), busy (503, hint queue full), malformed (400; also an event without objectId).",
                &[
                    ("accepted", stats.deliveries),
                    ("unauthorized", stats.unauthorized),
                    ("busy", stats.busy),
                    ("malformed", stats.malformed),
                ],
            ),
            (
                "syncline_webhook_events_total",
                "Webhook events by outcome: hint (handed to its stream), duplicate (eventId already seen), unknown_object (no stream for its object type).",
                &[
                    ("hint", stats.hints),
                    ("duplicate", stats.duplicates),
                    ("unknown_object", stats.unknown_objects),
                ],
            ),
        ];
        for (name, help, values) in families {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            let label = if name.contains("requests") {
                "answer"
            } else {
                "outcome"
            };
            for (value_label, value) in values {
                out.push_str(&format!("{name}{{{label}=\"{value_label}\"}} {value}\n"));
            }
        }
        out
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

struct Shared {
    secret: String,
    public_url: Option<String>,
    object_streams: HashMap<String, String>,
    hints: mpsc::Sender<Hint>,
    recent: Mutex<RecentIds>,
    counters: Arc<WebhookCounters>,
}

/// The last `capacity` event ids, forgotten oldest first.
struct RecentIds {
    capacity: usize,
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        RecentIds {
            capacity,
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: String) {
        if !self.set.insert(id.clone()) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
    }
}

/// Why a request was answered 401; logged, never sent back in detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    MissingSignature,
    MissingTimestamp,
    BadTimestamp,
    StaleTimestamp,
    MissingHost,
    BadSignature,
}

impl Rejection {
    fn reason(self) -> &'static str {
        match self {
            Rejection::MissingSignature => "no X-HubSpot-Signature-v3 header",
            Rejection::MissingTimestamp => "no X-HubSpot-Request-Timestamp header",
            Rejection::BadTimestamp => "X-HubSpot-Request-Timestamp is not epoch milliseconds",
            Rejection::StaleTimestamp => "X-HubSpot-Request-Timestamp is more than 5 minutes off",
            Rejection::MissingHost => "no Host header and no public_url to sign with",
            Rejection::BadSignature => "X-HubSpot-Signature-v3 does not match",
        }
    }
}

/// Checks a v3 signature: `signature` (the header, standard base64) against HMAC-SHA256 with
/// `secret` over `method + uri + body + timestamp`, compared in constant time. `uri` is the
/// full URL HubSpot called, with the escapes HubSpot decodes already decoded
/// ([`signed_uri`]).
pub fn verify_v3(
    secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp: &str,
    signature: &str,
) -> bool {
    // A header that is not base64 cannot match; anything else goes to the constant-time check.
    let Ok(given) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    let message = signed_message(method, uri, body, timestamp);
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
    // jsonwebtoken's HS256 verification is aws-lc-rs's `hmac::verify`, which compares in
    // constant time; it takes the signature as unpadded base64url.
    jsonwebtoken::crypto::verify(
        &URL_SAFE_NO_PAD.encode(given),
        &message,
        &key,
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap_or(false)
}

/// The v3 signature of a request, standard base64 with padding, as HubSpot sends it.
pub fn sign_v3(secret: &str, method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    let message = signed_message(method, uri, body, timestamp);
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::crypto::sign(&message, &key, jsonwebtoken::Algorithm::HS256)
        .ok()
        .and_then(|unpadded| URL_SAFE_NO_PAD.decode(unpadded).ok())
        .map(|mac| STANDARD.encode(mac))
        .unwrap_or_default()
}

fn signed_message(method: &str, uri: &str, body: &[u8], timestamp: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(method.len() + uri.len() + body.len() + timestamp.len());
    message.extend_from_slice(method.as_bytes());
    message.extend_from_slice(uri.as_bytes());
    message.extend_from_slice(body);
    message.extend_from_slice(timestamp.as_bytes());
    message
}

/// The URI as HubSpot signs it: the escapes of `: / ? @ ! $ ' ( ) * , ;` decoded (HubSpot's
/// request-validation steps), every other byte as is.
pub fn signed_uri(uri: &str) -> String {
    const DECODED: [(&str, char); 12] = [
        ("3A", ':'),
        ("2F", '/'),
        ("3F", '?'),
        ("40", '@'),
        ("21", '!'),
        ("24", '$'),
        ("27", '\''),
        ("28", '('),
        ("29", ')'),
        ("2A", '*'),
        ("2C", ','),
        ("3B", ';'),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at + 1..at + 3);
        match escape.and_then(|hex| {
            DECODED
                .iter()
                .find(|(code, _)| code.eq_ignore_ascii_case(hex))
        }) {
            Some((_, decoded)) => {
                out.push(*decoded);
                rest = &rest[at + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Checks a request's headers and body; `Ok` when HubSpot signed it within five minutes of
/// `now_ms`.
fn authenticate(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now_ms: i64,
) -> Result<(), Rejection> {
    let signature =
        header_text(headers, "x-hubspot-signature-v3").ok_or(Rejection::MissingSignature)?;
    let timestamp =
        header_text(headers, "x-hubspot-request-timestamp").ok_or(Rejection::MissingTimestamp)?;
    let sent_ms: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Rejection::BadTimestamp)?;
    // HubSpot rejects only old timestamps; one far in the future is as suspect, and a signed
    // request is never more than a few seconds ahead of a synchronised clock.
    if now_ms.saturating_sub(sent_ms) > MAX_AGE_MS || sent_ms.saturating_sub(now_ms) > MAX_AGE_MS {
        return Err(Rejection::StaleTimestamp);
    }
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let called = match &shared.public_url {
        Some(public) if public.contains('?') => public.clone(),
        Some(public) => format!("{public}{query}"),
        None => {
            let host = header_text(headers, header::HOST.as_str()).ok_or(Rejection::MissingHost)?;
            format!("http://{host}{}{query}", uri.path())
        }
    };
    if verify_v3(
        &shared.secret,
        method.as_str(),
        &signed_uri(&called),
        body,
        timestamp,
        signature,
    ) {
        Ok(())
    } else {
        Err(Rejection::BadSignature)
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// One event of a delivery; only what a hint needs. Ids arrive as numbers (strings accepted).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(default)]
    event_id: Option<Value>,
    subscription_type: String,
    #[serde(default)]
    object_id: Option<Value>,
    #[serde(default)]
    object_type_id: Option<String>,
    #[serde(default)]
    occurred_at: Option<i64>,
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(number) => Some(number.to_string()),
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        _ => None,
    }
}

/// HubSpot's ids of its standard object types, for generic `object.*` subscriptions.
fn object_type_name(type_id: &str) -> Option<&'static str> {
    match type_id {
        "0-1" => Some("contact"),
        "0-2" => Some("company"),
        "0-3" => Some("deal"),
        "0-5" => Some("ticket"),
        _ => None,
    }
}

impl Shared {
    /// The stream an event's object type maps to, if any.
    fn stream_of(&self, event: &Event) -> Option<&String> {
        let prefix = event
            .subscription_type
            .split('.')
            .next()
            .unwrap_or_default();
        let object = match (prefix, event.object_type_id.as_deref()) {
            ("object", Some(type_id)) => type_id,
            _ => prefix,
        };
        self.object_streams
            .get(object)
            .or_else(|| object_type_name(object).and_then(|name| self.object_streams.get(name)))
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now_ms = chrono::Utc::now().timestamp_millis();
    if let Err(rejection) = authenticate(&shared, &method, &uri, &headers, &body, now_ms) {
        bump(&shared.counters.unauthorized, 1);
        tracing::warn!(reason = rejection.reason(), "hubspot webhook rejected");
        return (StatusCode::UNAUTHORIZED, "invalid HubSpot signature\n").into_response();
    }
    bump(&shared.counters.deliveries, 1);
    let events: Vec<Event> = match serde_json::from_slice(&body) {
        Ok(events) => events,
        Err(err) => {
            bump(&shared.counters.malformed, 1);
            tracing::warn!(error = %err, "hubspot webhook body is not an array of events");
            return (StatusCode::BAD_REQUEST, "expected a JSON array of events\n").into_response();
        }
    };
    match deliver(&shared, events) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(()) => {
            bump(&shared.counters.busy, 1);
            tracing::debug!("hubspot webhook hint queue full; asked HubSpot to retry");
            let mut response =
                (StatusCode::SERVICE_UNAVAILABLE, "busy, deliver again\n").into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
            response
        }
    }
}

/// Hands the events' hints to the channel, skipping seen event ids. `Err` when the channel
/// is full (or closed) before every new event is in: the events already in are remembered,
/// so HubSpot's next attempt sends only the rest.
fn deliver(shared: &Shared, events: Vec<Event>) -> Result<(), ()> {
    // One lock for check, send and record, so two deliveries of one event racing each other
    // send one hint.
    let mut recent = shared.recent.lock().unwrap_or_else(PoisonError::into_inner);
    for event in events {
        let Some(stream) = shared.stream_of(&event) else {
            bump(&shared.counters.unknown_objects, 1);
            continue;
        };
        let Some(key) = event.object_id.as_ref().and_then(id_text) else {
            bump(&shared.counters.malformed, 1);
            continue;
        };
        let event_id = event.event_id.as_ref().and_then(id_text);
        if event_id.as_deref().is_some_and(|id| recent.contains(id)) {
            bump(&shared.counters.duplicates, 1);
            continue;
        }
        let hint = Hint {
            stream: stream.clone(),
            key,
            occurred_at_ms: event.occurred_at.unwrap_or_default(),
        };
        match shared.hints.try_send(hint) {
            Ok(()) => {
                bump(&shared.counters.hints, 1);
                if let Some(id) = event_id {
                    recent.insert(id);
                }
            }
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => return Err(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const BODY: &str = r#"[{"eventId":1,"subscriptionId":2,"portalId":3,"occurredAt":1700000000000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"CREATED"}]"#;

    /// The vector of crm-apis.md B7 (computed there with Python's `hmac`): HubSpot's page
    /// publishes worked examples for v1 and v2 only.
    #[test]
    fn signs_and_verifies_the_reference_vector() {
        let expected = "RfUTM/cwjsrm9DtHU5HPap3mZo5GQ2Yo2oDQCYCn1oI=";
        let uri = "https://example.com/webhook";
        let ts = "1700000000123";
        assert_eq!(sign_v3(SECRET, "POST", uri, BODY.as_bytes(), ts), expected);
        assert!(verify_v3(
            SECRET,
            "POST",
            uri,
            BODY.as_bytes(),
            ts,
            expected
        ));
        assert!(!verify_v3(
            SECRET,
            "POST",
            uri,
            BODY.as_bytes(),
            "1700000000124",
            expected
        ));
        assert!(!verify_v3(
            SECRET,
            "GET",
            uri,
            BODY.as_bytes(),
            ts,
            expected
        ));
        assert!(!verify_v3(
            "other",
            "POST",
            uri,
            BODY.as_bytes(),
            ts,
            expected
        ));
        assert!(!verify_v3(
            SECRET,
            "POST",
            uri,
            BODY.as_bytes(),
            ts,
            "not base64!"
        ));
        assert!(!verify_v3(SECRET, "POST", uri, BODY.as_bytes(), ts, ""));
    }

    #[test]
    fn decodes_only_the_escapes_hubspot_decodes() {
        assert_eq!(
            signed_uri("https://h.example/x%3Fa%3Db%2Cc%20d%2fe%zz%"),
            "https://h.example/x?a%3Db,c%20d/e%zz%"
        );
        assert_eq!(
            signed_uri("https://h.example/plain"),
            "https://h.example/plain"
        );
    }

    #[test]
    fn recent_ids_forget_the_oldest_first() {
        let mut recent = RecentIds::new(2);
        for id in ["a", "b", "a", "c"] {
            recent.insert(id.to_owned());
        }
        assert!(!recent.contains("a"));
        assert!(recent.contains("b") && recent.contains("c"));
    }

    proptest::proptest! {
        /// Any change to the body, the timestamp or the URI breaks the signature; the
        /// untouched request verifies.
        #[test]
        fn a_signature_covers_every_part(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            flip in 0usize..200,
            ts in 0i64..4_000_000_000_000,
            path in "[a-z/]{0,20}",
        ) {
            let uri = format!("https://h.example/{path}");
            let ts = ts.to_string();
            let signature = sign_v3(SECRET, "POST", &uri, &body, &ts);
            proptest::prop_assert!(verify_v3(SECRET, "POST", &uri, &body, &ts, &signature));
            if !body.is_empty() {
                let mut changed = body.clone();
                let at = flip % changed.len();
                changed[at] ^= 0x01;
                proptest::prop_assert!(!verify_v3(SECRET, "POST", &uri, &changed, &ts, &signature));
            }
            let other_uri = format!("{uri}x");
            proptest::prop_assert!(!verify_v3(SECRET, "POST", &other_uri, &body, &ts, &signature));
        }
    }
}

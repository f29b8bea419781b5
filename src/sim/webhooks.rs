//! The simulator's HubSpot webhook emitter (crm-apis.md B7 and part C): every change the
//! simulated account makes (records created, updated or archived, by a test or over HTTP) is
//! POSTed to a configured URL as HubSpot does it, signed with signature v3, in batches of up
//! to 100 events, with HubSpot's delivery faults on purpose:
//!
//! - **duplicates**: a share of the batches is delivered twice, with the same event ids;
//! - **out of order**: a share of the batches has its events shuffled, and a share is held
//!   back and delivered after the batch that follows it;
//! - **retries**: a delivery answered anything but 2xx (or not at all) is attempted again with
//!   `attemptNumber` one higher, up to `max_attempts`; a share of the 2xx answers is treated
//!   as lost, as when HubSpot's request times out after the receiver took it, so a delivery
//!   the receiver already applied arrives again with a higher `attemptNumber`.
//!
//! Every choice comes from a generator seeded by the simulator's seed, so a run's sequence of
//! faults is reproducible (batch boundaries follow how fast changes arrive).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::data::{self, ObjectKind};

/// HubSpot batches up to 100 events per request.
const MAX_BATCH: usize = 100;
/// How long a held-back batch waits for a later one before it is sent anyway.
const HOLD_BACK: Duration = Duration::from_millis(200);
/// Separates the emitter's choices from the data's and the mutations' streams of one seed.
const WEBHOOK_SEED_SALT: u64 = 0x7765_6268_6f6f_6b73;
/// What HubSpot tells the receiver it waits for an answer.
const TIMEOUT_MS: u64 = 10_000;
/// The simulated account and app, as a real delivery names them.
const PORTAL_ID: i64 = 62_515;
const APP_ID: i64 = 54_321;

/// Where and how the simulator sends webhooks.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The target URL, e.g. `http://127.0.0.1:9000/webhooks/hubspot`; it is also the URI
    /// the signature covers.
    pub url: String,
    /// The app's client secret that signs deliveries.
    pub secret: String,
    /// Share of batches delivered twice. Default 0.1.
    pub duplicate_rate: f64,
    /// Share of batches shuffled, and (separately) of batches held back until the next one
    /// is sent. Default 0.1.
    pub reorder_rate: f64,
    /// Share of 2xx answers treated as lost, so the delivery is attempted again. Default 0.05.
    pub lost_answer_rate: f64,
    /// Attempts per delivery before giving up, as HubSpot's 10. Default 10.
    pub max_attempts: u32,
    /// First wait before a new attempt, doubled per attempt up to 2 s (HubSpot waits
    /// minutes; the simulator is in a hurry). Default 50 ms.
    pub retry_base_ms: u64,
}

impl WebhookSettings {
    /// HubSpot's behaviour with the default fault rates.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        WebhookSettings {
            url: url.into(),
            secret: secret.into(),
            duplicate_rate: 0.1,
            reorder_rate: 0.1,
            lost_answer_rate: 0.05,
            max_attempts: 10,
            retry_base_ms: 50,
        }
    }
}

/// What the emitter has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WebhookStats {
    /// Events made from changes (each one distinct `eventId`).
    pub events: u64,
    /// Events not yet delivered with a 2xx answer (duplicate included) nor given up on.
    pub pending: u64,
    /// POST requests sent, every attempt and duplicate included.
    pub requests: u64,
    /// Batches delivered a second time on purpose.
    pub duplicated_batches: u64,
    /// Batches held back behind the next one.
    pub held_back_batches: u64,
    /// Batches whose events were shuffled.
    pub shuffled_batches: u64,
    /// Attempts after the first (non-2xx, no answer, or a 2xx treated as lost).
    pub retries: u64,
    /// Events of deliveries given up after `max_attempts`.
    pub gave_up: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    events: AtomicU64,
    pending: AtomicU64,
    requests: AtomicU64,
    duplicated_batches: AtomicU64,
    held_back_batches: AtomicU64,
    shuffled_batches: AtomicU64,
    retries: AtomicU64,
    gave_up: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> WebhookStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        WebhookStats {
            events: read(&self.events),
            pending: read(&self.pending),
            requests: read(&self.requests),
            duplicated_batches: read(&self.duplicated_batches),
            held_back_batches: read(&self.held_back_batches),
            shuffled_batches: read(&self.shuffled_batches),
            retries: read(&self.retries),
            gave_up: read(&self.gave_up),
        }
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::SeqCst);
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Creation,
    PropertyChange { name: String, value: Option<String> },
    Deletion,
}

/// One webhook event to be: a record of `kind` changed at `occurred_at`.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub kind: ObjectKind,
    pub object_id: i64,
    pub occurred_at: i64,
    pub what: ChangeKind,
}

/// The mutation side's end of the emitter: the store pushes changes here under its lock
/// (never blocking), the emitter task takes them.
#[derive(Clone)]
pub(crate) struct Outbox {
    sender: mpsc::UnboundedSender<Change>,
    counters: Arc<Counters>,
}

impl Outbox {
    pub(crate) fn push(&self, change: Change) {
        bump(&self.counters.events, 1);
        bump(&self.counters.pending, 1);
        if self.sender.send(change).is_err() {
            // The emitter is gone (the server stopped): nothing will deliver it.
            self.counters.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The emitter before it runs: [`Simulator::start`](super::Simulator::start) spawns it on
/// its runtime.
pub(crate) struct Emitter {
    settings: WebhookSettings,
    receiver: mpsc::UnboundedReceiver<Change>,
    counters: Arc<Counters>,
    rng: ChaCha8Rng,
    next_event_id: i64,
}

/// A new outbox and the emitter that drains it.
pub(crate) fn channel(settings: WebhookSettings, seed: u64) -> (Outbox, Emitter, Arc<Counters>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let counters = Arc::new(Counters::default());
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ WEBHOOK_SEED_SALT);
    // Real event ids are large and not from 1; tests must not depend on their origin.
    let next_event_id = rng.random_range(1_000_000..2_000_000) * 1_000;
    let outbox = Outbox {
        sender,
        counters: Arc::clone(&counters),
    };
    let emitter = Emitter {
        settings,
        receiver,
        counters: Arc::clone(&counters),
        rng,
        next_event_id,
    };
    (outbox, emitter, counters)
}

/// A batch ready to send.
type Batch = Vec<Map<String, Value>>;

impl Emitter {
    /// Delivers every change until the outbox closes; runs on the simulator's runtime.
    pub(crate) async fn run(mut self) {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_millis(TIMEOUT_MS))
            .build()
        {
            Ok(client) => client,
            Err(err) => {
                tracing::warn!(error = %err, "simulator webhooks: no HTTP client");
                return;
            }
        };
        let mut held: Option<Batch> = None;
        loop {
            let first = if held.is_some() {
                match tokio::time::timeout(HOLD_BACK, self.receiver.recv()).await {
                    Ok(change) => change,
                    Err(_) => {
                        // Nothing followed the held batch in time: it goes now.
                        if let Some(batch) = held.take() {
                            self.deliver(&client, batch).await;
                        }
                        continue;
                    }
                }
            } else {
                self.receiver.recv().await
            };
            let Some(first) = first else {
                if let Some(batch) = held.take() {
                    self.deliver(&client, batch).await;
                }
                return;
            };
            let mut changes = vec![first];
            while changes.len() < MAX_BATCH {
                match self.receiver.try_recv() {
                    Ok(change) => changes.push(change),
                    Err(_) => break,
                }
            }
            let mut batch: Batch = changes.into_iter().map(|c| self.event(c)).collect();
            if batch.len() > 1 && self.rng.random_bool(self.settings.reorder_rate) {
                batch.shuffle(&mut self.rng);
                bump(&self.counters.shuffled_batches, 1);
            }
            if held.is_none() && self.rng.random_bool(self.settings.reorder_rate) {
                bump(&self.counters.held_back_batches, 1);
                held = Some(batch);
                continue;
            }
            self.deliver(&client, batch).await;
            if let Some(batch) = held.take() {
                self.deliver(&client, batch).await;
            }
        }
    }

    /// The wire shape of one event (crm-apis.md B7), `attemptNumber` set per attempt.
    fn event(&mut self, change: Change) -> Map<String, Value> {
        let event_id = self.next_event_id;
        self.next_event_id += 1 + self.rng.random_range(0..3);
        let object = change.kind.webhook_name();
        let (verb, subscription_offset) = match &change.what {
            ChangeKind::Creation => ("creation", 1),
            ChangeKind::PropertyChange { .. } => ("propertyChange", 2),
            ChangeKind::Deletion => ("deletion", 3),
        };
        let subscription_id = 234_560 + 10 * change.kind.index() as i64 + subscription_offset;
        let mut event = json!({
            "eventId": event_id,
            "subscriptionId": subscription_id,
            "portalId": PORTAL_ID,
            "appId": APP_ID,
            "occurredAt": change.occurred_at,
            "subscriptionType": format!("{object}.{verb}"),
            "attemptNumber": 0,
            "objectId": change.object_id,
            "changeSource": "CRM_UI",
            "sourceId": "userId:45678",
        });
        match change.what {
            ChangeKind::Creation => event["changeFlag"] = json!("CREATED"),
            ChangeKind::Deletion => event["changeFlag"] = json!("DELETED"),
            ChangeKind::PropertyChange { name, value } => {
                event["propertyName"] = json!(name);
                event["propertyValue"] = json!(value.unwrap_or_default());
            }
        }
        match event {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    /// Sends a batch (twice when the dice say so); the batch stops being pending once both
    /// are done.
    async fn deliver(&mut self, client: &reqwest::Client, batch: Batch) {
        let events = batch.len() as u64;
        let delivered = self.send_with_retries(client, batch.clone()).await;
        if !delivered {
            bump(&self.counters.gave_up, events);
        } else if self.rng.random_bool(self.settings.duplicate_rate) {
            bump(&self.counters.duplicated_batches, 1);
            self.send_with_retries(client, batch).await;
        }
        // Only now: whoever waits for `pending` to reach 0 sees the duplicate's effect too.
        self.counters.pending.fetch_sub(events, Ordering::SeqCst);
    }

    /// One delivery: attempts until a 2xx that is not treated as lost. True when delivered.
    async fn send_with_retries(&mut self, client: &reqwest::Client, mut batch: Batch) -> bool {
        let attempts = self.settings.max_attempts.max(1);
        for attempt in 0..attempts {
            if attempt > 0 {
                bump(&self.counters.retries, 1);
                let wait = self
                    .settings
                    .retry_base_ms
                    .saturating_mul(1 << attempt.min(10))
                    .min(2_000);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            for event in &mut batch {
                event.insert("attemptNumber".to_owned(), json!(attempt));
            }
            let body = serde_json::to_vec(&batch).unwrap_or_default();
            let timestamp = data::wall_clock_ms().to_string();
            let signature = sign_v3(
                &self.settings.secret,
                "POST",
                &signed_uri(&self.settings.url),
                &body,
                &timestamp,
            );
            bump(&self.counters.requests, 1);
            let answer = client
                .post(&self.settings.url)
                .header("Content-Type", "application/json")
                .header("X-HubSpot-Signature-v3", signature)
                .header("X-HubSpot-Request-Timestamp", &timestamp)
                .header("X-HubSpot-Timeout-Millis", TIMEOUT_MS.to_string())
                .body(body)
                .send()
                .await;
            let ok = match answer {
                Ok(response) => response.status().is_success(),
                Err(err) => {
                    tracing::debug!(error = %err, "simulator webhook delivery failed");
                    false
                }
            };
            let last = attempt + 1 == attempts;
            if ok && (last || !self.rng.random_bool(self.settings.lost_answer_rate)) {
                return true;
            }
        }
        tracing::warn!(
            events = batch.len(),
            "simulator gave up a webhook delivery after every attempt"
        );
        false
    }
}

/// HubSpot's v3 signature: base64(HMAC-SHA256(secret, method + uri + body + timestamp)).
/// The simulator's own copy (the receiver has its own), so a test sees two implementations
/// agree rather than one agree with itself.
pub fn sign_v3(secret: &str, method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    let mut message = Vec::with_capacity(method.len() + uri.len() + body.len() + timestamp.len());
    message.extend_from_slice(method.as_bytes());
    message.extend_from_slice(uri.as_bytes());
    message.extend_from_slice(body);
    message.extend_from_slice(timestamp.as_bytes());
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    // jsonwebtoken's HS256 is aws-lc-rs's HMAC-SHA256, returned as unpadded base64url.
    jsonwebtoken::crypto::sign(&message, &key, jsonwebtoken::Algorithm::HS256)
        .ok()
        .and_then(|mac| URL_SAFE_NO_PAD.decode(mac).ok())
        .map(|mac| STANDARD.encode(mac))
        .unwrap_or_default()
}

/// The URI as signed: HubSpot decodes `%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B`.
fn signed_uri(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let decoded = rest
            .get(at + 1..at + 3)
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .map(char::from)
            .filter(|c| ":/?@!$'()*,;".contains(*c));
        match decoded {
            Some(c) => {
                out.push(c);
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

/// The emitter's counters behind a lock-free handle, for [`HubspotSim`](super::HubspotSim).
#[derive(Clone, Default)]
pub(crate) struct StatsHandle(Arc<Mutex<Option<Arc<Counters>>>>);

impl StatsHandle {
    pub(crate) fn set(&self, counters: Arc<Counters>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(counters);
    }

    pub(crate) fn get(&self) -> Option<WebhookStats> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|counters| counters.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// crm-apis.md B7's vector, as the receiver's tests also check.
    #[test]
    fn signs_the_reference_vector() {
        let body = r#"[{"eventId":1,"subscriptionId":2,"portalId":3,"occurredAt":1700000000000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"CREATED"}]"#;
        assert_eq!(
            sign_v3(
                "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
                "POST",
                "https://example.com/webhook",
                body.as_bytes(),
                "1700000000123"
            ),
            "RfUTM/cwjsrm9DtHU5HPap3mZo5GQ2Yo2oDQCYCn1oI="
        );
    }

    #[test]
    fn signed_uri_decodes_hubspots_escapes_only() {
        assert_eq!(
            signed_uri("https://h.example/a%3Fb%2Cc%20d%2f%zz%"),
            "https://h.example/a?b,c%20d/%zz%"
        );
    }

    #[test]
    fn events_have_hubspots_shape() {
        let (_outbox, mut emitter, _) = channel(WebhookSettings::new("http://x", "s"), 7);
        let event = emitter.event(Change {
            kind: ObjectKind::Contacts,
            object_id: 17,
            occurred_at: 1_700_000_000_000,
            what: ChangeKind::PropertyChange {
                name: "email".into(),
                value: Some("a@b.c".into()),
            },
        });
        assert_eq!(event["subscriptionType"], "contact.propertyChange");
        assert_eq!(event["objectId"], 17);
        assert_eq!(event["propertyName"], "email");
        assert_eq!(event["propertyValue"], "a@b.c");
        assert_eq!(event["attemptNumber"], 0);
        let deletion = emitter.event(Change {
            kind: ObjectKind::Deals,
            object_id: 3,
            occurred_at: 1,
            what: ChangeKind::Deletion,
        });
        assert_eq!(deletion["subscriptionType"], "deal.deletion");
        assert_eq!(deletion["changeFlag"], "DELETED");
        assert!(deletion["eventId"].as_i64() > event["eventId"].as_i64());
    }
}

//! PLACEHOLDER, replaced at merge by the HubSpot webhook receiver (branch `hook`): an axum
//! router for `POST /webhooks/hubspot` that verifies signature v3, rejects stale timestamps,
//! de-duplicates by `eventId` and sends a [`Hint`] per changed record. This placeholder only
//! fixes the interface `syncline stream` mounts; it serves nothing.

use std::collections::HashMap;

use tokio::sync::mpsc;

/// A record the source says changed: fetch it by key and merge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub stream: String,
    pub key: String,
    /// When the change happened at the source (epoch ms), for the latency measure.
    pub occurred_at_ms: i64,
}

/// The receiver's routes; `object_streams` maps a webhook's `objectType` (`contact`) to
/// the stream it hints (`contacts`).
pub fn router(
    _secret: String,
    _object_streams: HashMap<String, String>,
    _hints: mpsc::Sender<Hint>,
) -> axum::Router {
    axum::Router::new()
}

//! `[stream.webhook]`: the keys of the HubSpot webhook receiver, their defaults and their
//! validation.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use crate::config::{KeyError, Secret};

/// `[stream.webhook]`: receive HubSpot webhooks on the stream's HTTP listener at
/// `/webhooks/hubspot` and read the records they name at once (polling stays on as the
/// safety net). Needs a `hubspot` source.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The HubSpot app's client secret, which signs every delivery (signature v3). Use
    /// `${VAR}`.
    pub secret: Secret,
    /// The target URL exactly as set in the HubSpot app's webhook settings, e.g.
    /// `https://hooks.example.com/webhooks/hubspot`: HubSpot signs the URL it called, which
    /// a proxy or load balancer in front of syncline rewrites. Absent: `http://` plus the
    /// request's `Host` header and path, right only when HubSpot reaches syncline directly.
    #[serde(default)]
    pub public_url: Option<String>,
    /// HubSpot object type (as it starts the subscription type: `contact` in
    /// `contact.propertyChange`) → stream. Default: `contact` → `contacts`, `company` →
    /// `companies`, `deal` → `deals`, `ticket` → `tickets`, for the streams the source syncs.
    #[serde(default)]
    pub objects: BTreeMap<String, String>,
    /// Hints (changed records) held for the stream engine before deliveries are answered 503
    /// so HubSpot retries them. Default 10,000.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_queue() -> usize {
    10_000
}

/// HubSpot's object type names and the stream names syncline gives them.
const DEFAULT_OBJECTS: [(&str, &str); 4] = [
    ("contact", "contacts"),
    ("company", "companies"),
    ("deal", "deals"),
    ("ticket", "tickets"),
];

impl WebhookConfig {
    /// Checks what parsing cannot; errors name the key under `stream.webhook`. `streams` are
    /// the source's streams: a mapping must name one of them.
    pub fn validate(&self, streams: &[String]) -> Result<(), KeyError> {
        if self.secret.expose().is_empty() {
            return Err(KeyError::new(&["stream", "webhook", "secret"], "is empty"));
        }
        if let Some(url) = &self.public_url {
            match url::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                _ => {
                    return Err(KeyError::new(
                        &["stream", "webhook", "public_url"],
                        "is not an http(s) URL; set it to the target URL of the HubSpot app",
                    ));
                }
            }
        }
        for (object, stream) in &self.objects {
            if !streams.contains(stream) {
                return Err(KeyError::new(
                    &["stream", "webhook", "objects", object],
                    "names a stream the source does not sync",
                ));
            }
        }
        if self.queue == 0 {
            return Err(KeyError::new(
                &["stream", "webhook", "queue"],
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The object type → stream map the receiver uses: `objects` when set, otherwise the
    /// defaults for the streams the source syncs.
    pub fn object_streams(&self, streams: &[String]) -> HashMap<String, String> {
        if !self.objects.is_empty() {
            return self
                .objects
                .iter()
                .map(|(object, stream)| (object.clone(), stream.clone()))
                .collect();
        }
        DEFAULT_OBJECTS
            .iter()
            .filter(|(_, stream)| streams.iter().any(|s| s == stream))
            .map(|(object, stream)| ((*object).to_owned(), (*stream).to_owned()))
            .collect()
    }
}

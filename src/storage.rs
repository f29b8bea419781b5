//! Object storage: the one place that turns a URL plus `[*.s3]` settings into an
//! `object_store` client. Staging (and the state and locks in it), the file source and the
//! lake destination all open their stores here, so an S3 setting means the same thing to each.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;
use serde::Deserialize;

use crate::Result;
use crate::config::Secret;
use crate::error::{Classified, ErrorKind};

/// `[staging.s3]` and `[source.s3]`: how to reach an S3-compatible server.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible server, e.g. `http://127.0.0.1:9000` for MinIO.
    pub endpoint: Option<String>,
    /// Region; default `us-east-1`.
    pub region: Option<String>,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// Allow plain `http://` endpoints (local MinIO). Default false.
    #[serde(default)]
    pub allow_http: bool,
}

impl S3Config {
    /// The settings as `object_store` (and deltalake's storage options) name them.
    pub fn options(&self) -> Vec<(String, String)> {
        let mut options = Vec::new();
        if let Some(endpoint) = &self.endpoint {
            options.push(("aws_endpoint".into(), endpoint.clone()));
        }
        options.push((
            "aws_region".into(),
            self.region.clone().unwrap_or_else(|| "us-east-1".into()),
        ));
        if let Some(key) = &self.access_key_id {
            options.push(("aws_access_key_id".into(), key.expose().into()));
        }
        if let Some(key) = &self.secret_access_key {
            options.push(("aws_secret_access_key".into(), key.expose().into()));
        }
        if self.allow_http {
            options.push(("aws_allow_http".into(), "true".into()));
        }
        // MinIO and most S3-compatible servers want path-style requests.
        options.push(("aws_virtual_hosted_style_request".into(), "false".into()));
        options
    }
}

/// A store that cannot be opened. The object store's own error is not kept as the source:
/// its message can carry a signed URL; `reason` is the redacted text.
#[derive(Debug, thiserror::Error)]
#[error("{key} {scheme}: {reason}")]
pub enum StorageError {
    Open {
        key: String,
        scheme: String,
        reason: String,
    },
}

impl Classified for StorageError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Config
    }
}

/// Opens the store a URL names, with the S3 settings for `s3://` URLs; returns the store
/// and the path prefix inside it. `key` names the config key in errors, which never quote
/// the URL's query or a credential.
pub fn open_store(
    key: &str,
    url: &url::Url,
    s3: Option<&S3Config>,
) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let options = s3.map(S3Config::options).unwrap_or_default();
    let (store, root) =
        object_store::parse_url_opts(url, options).map_err(|e| StorageError::Open {
            key: key.to_string(),
            scheme: url.scheme().to_string(),
            reason: redact_store_error(&e),
        })?;
    Ok((Arc::from(store), root))
}

/// An object store error without what could carry credentials: a builder error names only
/// the store, and other messages stop before a URL's query string.
pub fn redact_store_error(err: &object_store::Error) -> String {
    match err {
        object_store::Error::Generic { store, .. } => {
            format!("{store} store could not be configured")
        }
        other => other
            .to_string()
            .split(['?', '\n'])
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

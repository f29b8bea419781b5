//! Object storage: the one place that turns a URL plus `[*.s3]` settings into an
//! `object_store` client. Staging (and the state and locks in it), the file source and the
//! lake destination all open their stores here, so an S3 setting means the same thing to each.
//!
//! Cloud stores start from their builder's `from_env()`, so credentials that are not in the
//! config come from the standard environment (`AWS_ACCESS_KEY_ID`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`, web identity and container/instance credentials; `GOOGLE_*`; `AZURE_*`), and
//! what the config says wins over the environment.

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
    /// Region; when absent, `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Credentials; when absent, the standard AWS environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), web identity, or container and
    /// instance credentials. `~/.aws` profiles are not read.
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// Allow plain `http://` endpoints (local MinIO). Default false.
    #[serde(default)]
    pub allow_http: bool,
    /// Address buckets as `https://bucket.endpoint/key` (AWS's virtual-hosted style) instead
    /// of `https://endpoint/bucket/key` (path style, what MinIO and most S3-compatible servers
    /// want). Default false.
    #[serde(default)]
    pub virtual_hosted_style: bool,
}

impl S3Config {
    /// The settings as `object_store` (and deltalake's storage options) name them.
    pub fn options(&self) -> Vec<(String, String)> {
        let mut options = Vec::new();
        if let Some(endpoint) = &self.endpoint {
            options.push(("aws_endpoint".into(), endpoint.clone()));
        }
        // Absent, the environment's region (or object_store's us-east-1) applies.
        if let Some(region) = &self.region {
            options.push(("aws_region".into(), region.clone()));
        }
        if let Some(key) = &self.access_key_id {
            options.push(("aws_access_key_id".into(), key.expose().into()));
        }
        if let Some(key) = &self.secret_access_key {
            options.push(("aws_secret_access_key".into(), key.expose().into()));
        }
        if self.allow_http {
            options.push(("aws_allow_http".into(), "true".into()));
        }
        options.push((
            "aws_virtual_hosted_style_request".into(),
            self.virtual_hosted_style.to_string(),
        ));
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
    let (store, root) = build_store(url, options).map_err(|e| StorageError::Open {
        key: key.to_string(),
        scheme: url.scheme().to_string(),
        reason: redact_store_error(&e),
    })?;
    Ok((Arc::from(store), root))
}

/// Builds the store a URL names from `object_store` option keys (`aws_endpoint`,
/// `google_service_account`, `azure_storage_account_key`, ...; unknown keys are ignored).
/// `s3://`, `gs://` and `az://` (and their https forms) start from the environment's
/// settings; anything else goes to `object_store::parse_url_opts`. The lake's delta-rs
/// factory builds its stores here too.
pub fn build_store(
    url: &url::Url,
    options: impl IntoIterator<Item = (String, String)>,
) -> object_store::Result<(Box<dyn ObjectStore>, Path)> {
    use object_store::ObjectStoreScheme;
    use object_store::aws::AmazonS3Builder;
    use object_store::azure::MicrosoftAzureBuilder;
    use object_store::gcp::GoogleCloudStorageBuilder;

    let (scheme, root) = ObjectStoreScheme::parse(url)?;
    let options: Vec<(String, String)> = options.into_iter().collect();
    // Keys are matched the way object_store's own URL parser matches them.
    let keys = options
        .iter()
        .map(|(key, value)| (key.to_ascii_lowercase(), value.clone()));
    let store: Box<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::AmazonS3 => Box::new(
            keys.fold(
                AmazonS3Builder::from_env().with_url(url.as_str()),
                |builder, (key, value)| match key.parse() {
                    Ok(key) => builder.with_config(key, value),
                    Err(_) => builder,
                },
            )
            .build()?,
        ),
        ObjectStoreScheme::GoogleCloudStorage => Box::new(
            keys.fold(
                GoogleCloudStorageBuilder::from_env().with_url(url.as_str()),
                |builder, (key, value)| match key.parse() {
                    Ok(key) => builder.with_config(key, value),
                    Err(_) => builder,
                },
            )
            .build()?,
        ),
        ObjectStoreScheme::MicrosoftAzure => Box::new(
            keys.fold(
                MicrosoftAzureBuilder::from_env().with_url(url.as_str()),
                |builder, (key, value)| match key.parse() {
                    Ok(key) => builder.with_config(key, value),
                    Err(_) => builder,
                },
            )
            .build()?,
        ),
        _ => return object_store::parse_url_opts(url, options),
    };
    Ok((store, root))
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

//! Object storage: the one place that turns a URL plus `[*.s3]` settings into an
//! `object_store` client. Staging (and the state and locks in it), the file source and the
//! lake destination all open their stores here, so an S3 setting means the same thing to each.
//!
//! Cloud stores start from their builder's `from_env()`, so credentials that are not in the
//! config come from the standard environment (`AWS_ACCESS_KEY_ID`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`, web identity and container/instance credentials; `GOOGLE_*`; `AZURE_*`), and
//! what the config says wins over the environment.
//!
//! S3 follows the AWS chain's order: keys in the config, then the `AWS_*` key variables, then
//! the shared profile files (`~/.aws/credentials`, `~/.aws/config`, `AWS_PROFILE`,
//! `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`), which `object_store` does not read
//! (`aws_profile` below reads their static keys), then web identity, container and instance
//! credentials.

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
    /// Credentials; when absent, the standard AWS chain: the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), then the static
    /// keys of the profile `AWS_PROFILE` names (else `default`) in `~/.aws/credentials` and
    /// `~/.aws/config`, then web identity, container or instance credentials.
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
pub enum StorageError {
    #[error("{key} {scheme}: {reason}")]
    Open {
        key: String,
        scheme: String,
        reason: String,
    },
    /// The shared AWS profile files gave no usable credentials. `reason` names files,
    /// profiles and keys, never a value.
    #[error(
        "S3 credentials from AWS profile `{profile}` ({files}): {reason}; fix the profile, choose another with AWS_PROFILE, or set `access_key_id`/`secret_access_key` in the `[*.s3]` table"
    )]
    Profile {
        profile: String,
        files: String,
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
        ObjectStoreScheme::AmazonS3 => {
            let keys: Vec<(String, String)> = keys.collect();
            let has_keys = keys.iter().any(|(key, _)| key == "aws_access_key_id");
            let builder = keys.into_iter().fold(
                AmazonS3Builder::from_env().with_url(url.as_str()),
                |builder, (key, value)| match key.parse() {
                    Ok(key) => builder.with_config(key, value),
                    Err(_) => builder,
                },
            );
            let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
            // The config's keys, then the environment's, win over any profile.
            let profile = if has_keys || from_env("AWS_ACCESS_KEY_ID").is_some() {
                None
            } else {
                aws_profile::keys(from_env("AWS_PROFILE"), &aws_profile::Files::from_env())
                    .map_err(|err| object_store::Error::Generic {
                        store: "S3",
                        source: Box::new(err),
                    })?
            };
            match profile {
                None => Box::new(builder.build()?),
                Some(keys) => {
                    let builder = builder
                        .with_access_key_id(keys.access_key_id)
                        .with_secret_access_key(keys.secret_access_key);
                    Box::new(
                        match keys.session_token {
                            Some(token) => builder.with_token(token),
                            None => builder,
                        }
                        .build()?,
                    )
                }
            }
        }
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
        // syncline's own account (an AWS profile), which never holds a key.
        object_store::Error::Generic { source, .. }
            if source.downcast_ref::<StorageError>().is_some() =>
        {
            source.to_string()
        }
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

/// The static keys of a profile in the shared AWS files, read the way the AWS CLI reads them.
///
/// What is read: the profile `AWS_PROFILE` names, else `default`; its section `[NAME]` in the
/// credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`), else its
/// section `[profile NAME]` (or `[default]`) in the config file (`AWS_CONFIG_FILE`, else
/// `~/.aws/config`); its `aws_access_key_id`, `aws_secret_access_key` and
/// `aws_session_token`, the credentials file winning. The files are INI as AWS writes them
/// (parsed by `rust-ini`, values taken literally, indented sub-settings such as `s3 =` kept
/// out of the way).
///
/// What is not: a profile whose credentials come from elsewhere (`role_arn`,
/// `source_profile`, `credential_process`, `sso_*`, `web_identity_token_file`,
/// `credential_source`) is refused with its key named, never silently skipped; following
/// those needs calls to AWS (STS, SSO) that the AWS SDK's `aws-config` makes, and its
/// crates change the features of `num-integer`, under Arrow, which rebuilds the whole
/// Arrow/DataFusion stack. The profile's `region` is not read.
mod aws_profile {
    use std::path::PathBuf;

    use super::StorageError;

    /// Keys a profile holds.
    pub(super) struct Keys {
        pub access_key_id: String,
        pub secret_access_key: String,
        pub session_token: Option<String>,
    }

    /// Where the shared files are.
    pub(super) struct Files {
        pub credentials: Option<PathBuf>,
        pub config: Option<PathBuf>,
    }

    impl Files {
        pub fn from_env() -> Files {
            let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
            let home = env("HOME").map(PathBuf::from);
            let file = |variable: &str, default: &str| {
                env(variable)
                    .map(PathBuf::from)
                    .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
            };
            Files {
                credentials: file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
                config: file("AWS_CONFIG_FILE", "config"),
            }
        }

        fn describe(&self) -> String {
            [&self.credentials, &self.config]
                .into_iter()
                .flatten()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// Keys from elsewhere than the profile itself: refused by name.
    const UNSUPPORTED: &[&str] = &[
        "role_arn",
        "source_profile",
        "credential_process",
        "credential_source",
        "web_identity_token_file",
        "sso_session",
        "sso_start_url",
        "sso_account_id",
        "sso_role_name",
    ];

    /// The keys of the profile `named` (`AWS_PROFILE`) or `default`. `Ok(None)`: no profile
    /// was named and the default one holds no keys (or there are no files), so the rest of
    /// the chain (web identity, container, instance credentials) is asked.
    pub(super) fn keys(named: Option<String>, files: &Files) -> Result<Option<Keys>, StorageError> {
        let profile = named.clone().unwrap_or_else(|| "default".to_string());
        let fail = |reason: String| StorageError::Profile {
            profile: profile.clone(),
            files: files.describe(),
            reason,
        };
        let options = || ini::ParseOption {
            enabled_quote: false,
            enabled_escape: false,
            enabled_indented_mutiline_value: true,
            enabled_preserve_key_leading_whitespace: false,
        };
        let load = |path: &Option<PathBuf>| -> Result<Option<ini::Ini>, StorageError> {
            let Some(path) = path.as_ref().filter(|p| p.is_file()) else {
                return Ok(None);
            };
            ini::Ini::load_from_file_opt(path, options())
                .map(Some)
                .map_err(|err| {
                    // rust-ini's message is a line, a column and what it expected: no value.
                    fail(format!("{} cannot be read: {err}", path.display()))
                })
        };
        let credentials = load(&files.credentials)?;
        let config = load(&files.config)?;
        let in_credentials = credentials
            .as_ref()
            .and_then(|f| f.section(Some(profile.as_str())));
        let config_section = if profile == "default" {
            "default".to_string()
        } else {
            format!("profile {profile}")
        };
        let in_config = config.as_ref().and_then(|f| {
            f.section(Some(config_section.as_str()))
                .or_else(|| f.section(Some(format!("profile {profile}").as_str())))
        });
        if in_credentials.is_none() && in_config.is_none() {
            return match named {
                Some(_) => Err(fail(format!(
                    "no section [{profile}] in the credentials file nor [{config_section}] in the config file"
                ))),
                None => Ok(None),
            };
        }
        let get = |key: &str| {
            in_credentials
                .and_then(|s| s.get(key))
                .or_else(|| in_config.and_then(|s| s.get(key)))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        match (get("aws_access_key_id"), get("aws_secret_access_key")) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Keys {
                access_key_id,
                secret_access_key,
                session_token: get("aws_session_token"),
            })),
            (id, secret) => {
                if let Some(key) = UNSUPPORTED.iter().find(|key| get(key).is_some()) {
                    return Err(fail(format!(
                        "the profile gets its credentials through `{key}`, which syncline does not follow; give it `aws_access_key_id` and `aws_secret_access_key`, or export its keys (`aws configure export-credentials --profile {profile} --format env`)"
                    )));
                }
                match (named, id, secret) {
                    (None, None, None) => Ok(None),
                    (_, None, _) => Err(fail("`aws_access_key_id` is missing".to_string())),
                    _ => Err(fail("`aws_secret_access_key` is missing".to_string())),
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn files(credentials: &str, config: &str) -> (tempfile::TempDir, Files) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("credentials"), credentials).unwrap();
            std::fs::write(dir.path().join("config"), config).unwrap();
            let files = Files {
                credentials: Some(dir.path().join("credentials")),
                config: Some(dir.path().join("config")),
            };
            (dir, files)
        }

        #[test]
        fn a_profile_is_read_as_the_aws_cli_reads_it() {
            let (_dir, files) = files(
                "# comment\n[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = se/cr+et\\x\n\n[ci]\naws_access_key_id=AKIACI\naws_secret_access_key=ci-secret\naws_session_token = tok\n",
                "[default]\nregion = eu-west-1\ns3 =\n  addressing_style = path\n[profile cfg]\naws_access_key_id = AKIACFG\naws_secret_access_key = cfg-secret\n[profile ci]\naws_access_key_id = AKIAIGNORED\n[profile sso]\nsso_session = corp\nsso_account_id = 1\n[profile half]\naws_access_key_id = AKIAHALF\n",
            );
            let default = keys(None, &files).unwrap().unwrap();
            assert_eq!(default.access_key_id, "AKIADEFAULT");
            // Taken literally: no escapes, no quotes.
            assert_eq!(default.secret_access_key, "se/cr+et\\x");
            assert_eq!(default.session_token, None);
            let ci = keys(Some("ci".into()), &files).unwrap().unwrap();
            assert_eq!(ci.access_key_id, "AKIACI", "the credentials file wins");
            assert_eq!(ci.session_token.as_deref(), Some("tok"));
            let cfg = keys(Some("cfg".into()), &files).unwrap().unwrap();
            assert_eq!(cfg.access_key_id, "AKIACFG");

            for (profile, wanted) in [
                (
                    "nope",
                    "no section [nope] in the credentials file nor [profile nope]",
                ),
                (
                    "sso",
                    "through `sso_session`, which syncline does not follow",
                ),
                ("half", "`aws_secret_access_key` is missing"),
            ] {
                let err = keys(Some(profile.into()), &files)
                    .err()
                    .unwrap()
                    .to_string();
                assert!(
                    err.contains(&format!("AWS profile `{profile}`")) && err.contains(wanted),
                    "{err}"
                );
                for value in ["ci-secret", "cfg-secret", "se/cr+et", "AKIA"] {
                    assert!(!err.contains(value), "{err}");
                }
            }
        }

        #[test]
        fn without_a_named_profile_or_default_keys_the_chain_goes_on() {
            let (_dir, files) = files("", "[default]\nregion = eu-west-1\n");
            assert!(keys(None, &files).unwrap().is_none());
            let none = Files {
                credentials: None,
                config: None,
            };
            assert!(keys(None, &none).unwrap().is_none());
            assert!(keys(Some("ci".into()), &none).is_err());
        }
    }
}

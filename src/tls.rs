//! Connecting to PostgreSQL (the source and the destination alike) with TLS as libpq reads it
//! from the URL: `sslmode`, `sslrootcert`, `sslcert`, `sslkey`.
//!
//! | `sslmode` | TLS | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `allow`, `prefer` (default) | when the server offers it | not verified |
//! | `require` | always | not verified; verified as `verify-ca` when `sslrootcert` is given (as libpq does) |
//! | `verify-ca` | always | signed by a trusted CA |
//! | `verify-full` | always | signed by a trusted CA and issued for the host name in the URL |
//!
//! Trusted CAs are the PEM certificates of `sslrootcert`, else the system's roots. `sslcert` and
//! `sslkey` (PEM files) present a client certificate. The TLS itself is rustls; replication
//! connections (CDC) read the same URL keys in `pg_walstream`.
//!
//! Errors never show the URL: it may carry a password.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as DriverSslMode;
use tracing::warn;

use crate::error::{Classified, ErrorKind};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            // tokio-postgres cannot try plain first and TLS second; TLS when offered is safer.
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// A PostgreSQL URL with its TLS keys taken out and understood.
#[derive(Debug, Clone)]
pub struct Target {
    /// Everything but the TLS keys, for the driver.
    pub config: tokio_postgres::Config,
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
    /// `sslcert` and `sslkey`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Why a PostgreSQL connection could not be set up or made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{key} is not a valid PostgreSQL URL (it is not shown: it may contain a password)")]
    BadUrl { key: &'static str },
    #[error(
        "{key}: sslmode={value:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
    )]
    BadSslMode { key: &'static str, value: String },
    #[error("{key}: {what} needs sslcert and sslkey together")]
    HalfClientCert {
        key: &'static str,
        what: &'static str,
    },
    #[error("{key}: cannot read the {what} file {}", path.display())]
    ReadPem {
        key: &'static str,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{key}: the {what} file {} holds no PEM certificate", path.display())]
    NoCertificate {
        key: &'static str,
        what: &'static str,
        path: PathBuf,
    },
    #[error("{key}: the TLS settings are not usable")]
    Rustls {
        key: &'static str,
        #[source]
        source: rustls::Error,
    },
    /// The handshake failed: the server refused TLS, or its certificate is not trusted or
    /// not issued for the host. The user's to fix in the URL.
    #[error(
        "{key}: TLS with the server failed (sslmode={mode}); check that the server has ssl = on, \
         that sslrootcert names the CA that signed its certificate, and that the host in the URL is \
         one the certificate names (or use sslmode=verify-ca)"
    )]
    Handshake {
        key: &'static str,
        mode: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server refused the user or password.
    #[error("{key}: the server refused the credentials")]
    Credentials {
        key: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server answered but refused what the URL asks for: a database that does not
    /// exist, a parameter in `options` it does not know or does not accept, a database the
    /// user may not connect to. Only the server's message and SQLSTATE are kept (never a
    /// DETAIL).
    #[error(
        "{key}: the server refused the connection: {message} (SQLSTATE {code}); check the \
         database name and the parameters in the URL's options"
    )]
    Refused {
        key: &'static str,
        message: String,
        code: String,
    },
    #[error("{key}: cannot connect to the server")]
    Connect {
        key: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl Classified for ConnectError {
    fn kind(&self) -> ErrorKind {
        match self {
            ConnectError::Connect { .. } => ErrorKind::Transient,
            _ => ErrorKind::Config,
        }
    }
}

impl Target {
    /// Reads the URL of config key `key` (named in errors), taking the TLS keys out of its
    /// query. Pure: no file is read and nothing is contacted.
    pub fn parse(url: &str, key: &'static str) -> Result<Target, ConnectError> {
        let mut parsed = url::Url::parse(url).map_err(|_| ConnectError::BadUrl { key })?;
        let mut mode = SslMode::Prefer;
        let (mut root_cert, mut cert, mut client_key) = (None, None, None);
        let mut kept: Vec<(String, String)> = Vec::new();
        for (name, value) in parsed.query_pairs() {
            match name.as_ref() {
                "sslmode" => {
                    mode = SslMode::parse(&value).ok_or_else(|| ConnectError::BadSslMode {
                        key,
                        value: value.to_string(),
                    })?;
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(value.as_ref())),
                "sslcert" => cert = Some(PathBuf::from(value.as_ref())),
                "sslkey" => client_key = Some(PathBuf::from(value.as_ref())),
                _ => kept.push((name.into_owned(), value.into_owned())),
            }
        }
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            // Written back percent-encoded, a space as `%20`: the driver decodes escapes but
            // not form encoding's `+`, which would reach the server (`options=-c%20...`).
            let escape = |text: &str| {
                url::form_urlencoded::byte_serialize(text.as_bytes())
                    .collect::<String>()
                    .replace('+', "%20")
            };
            let query: Vec<String> = kept
                .iter()
                .map(|(name, value)| format!("{}={}", escape(name), escape(value)))
                .collect();
            parsed.set_query(Some(&query.join("&")));
        }
        let config: tokio_postgres::Config = parsed
            .as_str()
            .parse()
            .map_err(|_| ConnectError::BadUrl { key })?;
        let client_cert = match (cert, client_key) {
            (Some(cert), Some(client_key)) => Some((cert, client_key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConnectError::HalfClientCert {
                    key,
                    what: "sslcert",
                });
            }
            (None, Some(_)) => {
                return Err(ConnectError::HalfClientCert {
                    key,
                    what: "sslkey",
                });
            }
        };
        Ok(Target {
            config,
            mode,
            root_cert,
            client_cert,
        })
    }

    /// Connects; the connection runs on its own task until the client is dropped.
    pub async fn connect(&self, key: &'static str) -> Result<tokio_postgres::Client, ConnectError> {
        let mut config = self.config.clone();
        let outcome = if self.mode == SslMode::Disable {
            config.ssl_mode(DriverSslMode::Disable);
            config.connect(tokio_postgres::NoTls).await.map(spawn)
        } else {
            config.ssl_mode(match self.mode {
                SslMode::Prefer => DriverSslMode::Prefer,
                _ => DriverSslMode::Require,
            });
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(self.rustls_config(key)?);
            config.connect(tls).await.map(spawn)
        };
        outcome.map_err(|source| classify(key, self.mode, source))
    }

    fn rustls_config(&self, key: &'static str) -> Result<rustls::ClientConfig, ConnectError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let rustls_error = |source| ConnectError::Rustls { key, source };
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(rustls_error)?;
        // libpq: `require` with a root certificate verifies the chain like `verify-ca`.
        let mode = match (self.mode, &self.root_cert) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (mode, _) => mode,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => {
                Arc::new(NoVerification(provider))
            }
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = Arc::new(self.roots(key)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| rustls_error(rustls::Error::General(e.to_string())))?;
                if mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(AnyHostName(webpki))
                }
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match &self.client_cert {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, client_key)) => {
                let chain = read_certs(key, "sslcert", cert)?;
                let private = PrivateKeyDer::from_pem_file(client_key).map_err(|source| {
                    ConnectError::ReadPem {
                        key,
                        what: "sslkey",
                        path: client_key.clone(),
                        source,
                    }
                })?;
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(rustls_error)
            }
        }
    }

    /// `sslrootcert`'s certificates, else the system's roots.
    fn roots(&self, key: &'static str) -> Result<RootCertStore, ConnectError> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                for cert in read_certs(key, "sslrootcert", path)? {
                    roots
                        .add(cert)
                        .map_err(|source| ConnectError::Rustls { key, source })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for err in &found.errors {
                    warn!(error = %err, "a system root certificate could not be loaded");
                }
                roots.add_parsable_certificates(found.certs);
            }
        }
        Ok(roots)
    }
}

/// Connects to the PostgreSQL URL of config key `key` with the TLS its `sslmode` asks for.
pub async fn connect(url: &str, key: &'static str) -> crate::Result<tokio_postgres::Client> {
    Ok(Target::parse(url, key)?.connect(key).await?)
}

fn spawn<S, T>(
    (client, connection): (tokio_postgres::Client, tokio_postgres::Connection<S, T>),
) -> tokio_postgres::Client
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            warn!(error = %err, "postgres connection ended with an error");
        }
    });
    client
}

fn read_certs(
    key: &'static str,
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConnectError> {
    let read_error = |source| ConnectError::ReadPem {
        key,
        what,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if certs.is_empty() {
        return Err(ConnectError::NoCertificate {
            key,
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// What a failed connect means for the user: a handshake problem and refused credentials
/// are theirs to fix in the URL; anything else may pass.
fn classify(key: &'static str, mode: SslMode, source: tokio_postgres::Error) -> ConnectError {
    let refused_credentials = source
        .as_db_error()
        .is_some_and(|db| matches!(db.code().code(), "28P01" | "28000"));
    if refused_credentials {
        return ConnectError::Credentials { key, source };
    }
    // Class 3D: no such database; 42: an unknown parameter, or no right to connect; 22: a
    // parameter value the server does not accept. Retrying the same URL cannot cure them.
    if let Some(db) = source.as_db_error()
        && ["3D", "42", "22"]
            .iter()
            .any(|class| db.code().code().starts_with(class))
    {
        return ConnectError::Refused {
            key,
            message: db.message().to_owned(),
            code: db.code().code().to_owned(),
        };
    }
    if mode != SslMode::Disable && is_tls_failure(&source) {
        let mode = match mode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        };
        return ConnectError::Handshake { key, mode, source };
    }
    ConnectError::Connect { key, source }
}

/// Whether the driver's error came from the TLS layer: a rustls error in its causes, or the
/// server refusing TLS.
fn is_tls_failure(err: &tokio_postgres::Error) -> bool {
    if err.to_string().contains("TLS") {
        return true;
    }
    let mut cause = std::error::Error::source(err);
    while let Some(err) = cause {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return true;
            }
        }
        cause = err.source();
    }
    false
}

/// `require` and `prefer` without a root certificate: encrypted, not authenticated, as
/// libpq does. Handshake signatures are still checked.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not compared.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_keys_leave_the_url_and_the_rest_stays() {
        let target = Target::parse(
            "postgres://u:pw@db.example.com:6543/crm?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=syncline",
            "destination.url",
        )
        .unwrap();
        assert_eq!(target.mode, SslMode::VerifyFull);
        assert_eq!(target.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(target.config.get_ports(), [6543]);
        assert_eq!(target.config.get_dbname(), Some("crm"));
        assert_eq!(target.config.get_application_name(), Some("syncline"));
        assert_eq!(
            Target::parse("postgres://u@h/db", "source.url")
                .unwrap()
                .mode,
            SslMode::Prefer
        );
    }

    /// libpq's way to set session parameters, `options=-c%20name%3Dvalue`, reaches the
    /// server as written: a space stays a space (not the `+` of form encoding, which the
    /// driver passes on as is).
    #[test]
    fn percent_escapes_of_kept_keys_survive() {
        let target = Target::parse(
            "postgres://u@h/db?sslmode=disable&options=-c%20lock_timeout%3D300%20-c%20x%3Da%2Bb",
            "destination.url",
        )
        .unwrap();
        assert_eq!(
            target.config.get_options(),
            Some("-c lock_timeout=300 -c x=a+b")
        );
    }

    #[test]
    fn mistakes_name_the_key_and_never_the_url() {
        let err = Target::parse("postgres://u:hunter2@h/db?sslmode=maybe", "source.url")
            .unwrap_err()
            .to_string();
        assert!(err.contains("source.url") && err.contains("maybe"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err =
            Target::parse("postgres://u:hunter2@h/db?sslcert=/c.pem", "source.url").unwrap_err();
        assert!(matches!(err, ConnectError::HalfClientCert { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::Config);
    }
}

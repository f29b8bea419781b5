//! The OAuth 2.0 JWT bearer assertion (crm-apis.md A1): an RS256 JWT whose `iss` is the
//! connected app's consumer key, `sub` the username to act as, `aud` the login server and
//! `exp` a few minutes ahead, signed with the private key whose certificate the connected
//! app holds.
//!
//! The key is read and proven able to sign when the client is built, so a wrong key is a
//! configuration error before any request is sent. Every login signs a fresh assertion.
//! Neither the key nor an assertion ever reaches a log line or an error.

use std::borrow::Cow;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::SalesforceError;
use crate::config::{JwtKey, Secret};
use crate::{Error, Result};

/// The `grant_type` of the JWT bearer flow.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How far ahead an assertion expires. Salesforce wants "a few minutes"; the assertion is
/// used at once, so this only has to cover clock skew and a slow token request.
const LIFETIME_SECONDS: i64 = 180;

/// Signs assertions for one connected app and user.
pub struct JwtBearer {
    issuer: String,
    subject: String,
    audience: String,
    key: EncodingKey,
    /// `source.private_key` or `source.private_key_path`, to name in errors.
    key_name: &'static str,
}

/// The claims Salesforce reads (A1).
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
}

impl JwtBearer {
    /// Loads the key (reading `private_key_path` when that is where it is) and signs one
    /// throwaway assertion to prove it works. Fails with a configuration error naming the key
    /// when the file cannot be read or holds no usable RSA private key.
    pub fn new(
        client_id: &str,
        username: &str,
        key: JwtKey<'_>,
        audience: &str,
    ) -> Result<JwtBearer> {
        let (pem, key_name): (Vec<u8>, &'static str) = match key {
            JwtKey::Pem(text) => (
                unescape_newlines(text.expose()).into_owned().into_bytes(),
                "source.private_key",
            ),
            JwtKey::Path(path) => {
                let bytes = std::fs::read(path).map_err(|source| SalesforceError::KeyFile {
                    path: path.to_string(),
                    source,
                })?;
                (bytes, "source.private_key_path")
            }
        };
        if contains(&pem, b"PUBLIC KEY-----") || contains(&pem, b"CERTIFICATE-----") {
            return Err(SalesforceError::PublicKey { key_name }.into());
        }
        let key = EncodingKey::from_rsa_pem(&pem).map_err(|e| key_error(key_name, &e))?;
        let signer = JwtBearer {
            issuer: client_id.to_string(),
            subject: username.to_string(),
            audience: audience.trim_end_matches('/').to_string(),
            key,
            key_name,
        };
        // Parsing accepts some keys that cannot sign (a truncated RSA key, one under 2048
        // bits); find out now rather than at the first login.
        signer.assertion_at(0)?;
        Ok(signer)
    }

    /// A fresh assertion expiring [`LIFETIME_SECONDS`] from now.
    pub fn assertion(&self) -> Result<Secret> {
        self.assertion_at(chrono::Utc::now().timestamp() + LIFETIME_SECONDS)
    }

    fn assertion_at(&self, exp: i64) -> Result<Secret> {
        let claims = Claims {
            iss: &self.issuer,
            sub: &self.subject,
            aud: &self.audience,
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map(Secret::new)
            .map_err(|e| key_error(self.key_name, &e))
    }
}

/// A configuration error naming the key, saying what kind of failure it was but never
/// quoting the library's message (PEM decoding errors can cite bytes of the input).
fn key_error(key_name: &'static str, err: &jsonwebtoken::errors::Error) -> Error {
    let reason = match err.kind() {
        ErrorKind::InvalidKeyFormat => "is not an unencrypted RSA private key",
        ErrorKind::InvalidRsaKey(_) | ErrorKind::RsaFailedSigning | ErrorKind::Signing(_) => {
            "holds a key that cannot sign RS256 (it must be an RSA private key of at least 2048 bits)"
        }
        _ => "is not a readable PEM key",
    };
    SalesforceError::UnusableKey { key_name, reason }.into()
}

/// PEM text from an environment variable often arrives on one line with literal `\n`s.
fn unescape_newlines(text: &str) -> Cow<'_, str> {
    if !text.contains('\n') && text.contains("\\n") {
        Cow::Owned(text.replace("\\n", "\n"))
    } else {
        Cow::Borrowed(text)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    const PRIVATE: &str = include_str!("../../../tests/fixtures/jwt-test-private.pem");
    const PUBLIC: &str = include_str!("../../../tests/fixtures/jwt-test-public.pem");

    #[derive(serde::Deserialize)]
    struct Decoded {
        iss: String,
        sub: String,
        aud: String,
        exp: i64,
    }

    #[test]
    fn assertions_carry_the_salesforce_claims_and_verify_with_the_public_key() {
        let secret = Secret::new(PRIVATE);
        let signer = JwtBearer::new(
            "sim-client",
            "sim-user@example.com",
            JwtKey::Pem(&secret),
            "https://login.salesforce.com/",
        )
        .expect("the fixture key signs");
        let assertion = signer.assertion().expect("signs");
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&["https://login.salesforce.com"]);
        validation.set_issuer(&["sim-client"]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let key = DecodingKey::from_rsa_pem(PUBLIC.as_bytes()).expect("public key");
        let decoded = jsonwebtoken::decode::<Decoded>(assertion.expose(), &key, &validation)
            .expect("verifies");
        assert_eq!(decoded.claims.iss, "sim-client");
        assert_eq!(decoded.claims.sub, "sim-user@example.com");
        assert_eq!(decoded.claims.aud, "https://login.salesforce.com");
        let ahead = decoded.claims.exp - chrono::Utc::now().timestamp();
        assert!((170..=181).contains(&ahead), "{ahead}");
    }

    #[test]
    fn one_line_pem_with_escaped_newlines_is_accepted() {
        let secret = Secret::new(PRIVATE.trim_end().replace('\n', "\\n"));
        assert!(JwtBearer::new("c", "u", JwtKey::Pem(&secret), "https://x.test").is_ok());
    }

    #[test]
    fn bad_keys_are_config_errors_that_never_echo_the_key() {
        let public = Secret::new(PUBLIC);
        let garbage =
            Secret::new("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n");
        let truncated = Secret::new(format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            &PRIVATE.lines().nth(1).expect("a body line")
        ));
        for secret in [&public, &garbage, &truncated] {
            let Err(err) = JwtBearer::new("c", "u", JwtKey::Pem(secret), "https://x.test") else {
                panic!("a bad key was accepted");
            };
            assert_eq!(err.kind(), crate::error::ErrorKind::Config, "{err}");
            let text = err.to_string();
            assert!(text.contains("source.private_key "), "{text}");
            assert!(!text.contains("bm90IGEga2V5"), "{text}");
            assert!(!text.contains("-----"), "{text}");
            for line in PRIVATE.lines().chain(PUBLIC.lines()).skip(1).take(3) {
                assert!(!text.contains(line), "{text}");
            }
        }
        let missing = JwtKey::Path("/nonexistent/syncline-test-key.pem");
        let Err(err) = JwtBearer::new("c", "u", missing, "https://x.test") else {
            panic!("a missing key file was accepted");
        };
        assert!(err.to_string().contains("source.private_key_path"), "{err}");
    }
}

//! HTTP access to Salesforce: the OAuth login (client credentials or JWT bearer), the session it
//! yields, and the API-usage accounting every response carries (crm-apis.md A1, A7).
//!
//! Retries, `Retry-After` and keeping URLs out of errors are the shared
//! [`crate::sources::http`] behaviour; this client adds Salesforce's own rules to each answer:
//! - a 401 logs in again once per failing call and sends it again (sessions expire mid-run); a
//!   JWT bearer login signs a fresh assertion each time;
//! - 5xx, 406, 420, 429 and bodies cut short are retried with back-off;
//! - the daily quota ends the run cleanly: a 403 `REQUEST_LIMIT_EXCEEDED` (from any call, the
//!   login included), or usage at or above the configured budget before a request is sent, comes
//!   back as [`Failure::Quota`].
//!
//! Neither the client secret, the private key, assertions nor access tokens ever reach a log line
//! or an error; endpoints are logged without their query string.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::SalesforceError;
use super::jwt::{self, JwtBearer};
use super::page::QueryPage;
use crate::config::{SalesforceAuth, SalesforceConfig, Secret};
use crate::error::{Classified, ErrorKind};
use crate::sources::http::{Answer, Call, Exchange, HttpError, RetryPolicy, Step};
use crate::{Error, Result};

/// Records a page asks for (A2): the maximum; the server may still send fewer.
const QUERY_OPTIONS: &str = "batchSize=2000";

/// Why a call did not return a usable answer.
#[derive(Debug)]
pub enum Failure {
    /// The API quota is used up (403 `REQUEST_LIMIT_EXCEEDED`) or the configured budget is
    /// reached. Not an error: the extraction stops cleanly and the next run resumes.
    Quota(String),
    /// Salesforce rejected the request with a 4xx that is not retried. Callers that have a
    /// fallback (Bulk → REST) inspect it; everyone else returns it as a source error.
    Api(ApiError),
    /// Anything else: configuration, transport after all retries, unreadable answers.
    Other(Error),
}

impl From<Error> for Failure {
    fn from(err: Error) -> Failure {
        Failure::Other(err)
    }
}

impl From<HttpError> for Failure {
    fn from(err: HttpError) -> Failure {
        Failure::Other(err.into())
    }
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Error {
        match failure {
            Failure::Quota(reason) => SalesforceError::Quota(reason).into(),
            Failure::Api(api) => api.into(),
            Failure::Other(err) => err,
        }
    }
}

/// A rejected request: method, endpoint (no query string), status and the error body.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{method} {endpoint}: HTTP {status} {code}: {message}")]
pub struct ApiError {
    pub method: String,
    pub endpoint: String,
    pub status: u16,
    /// The first `errorCode` of the body, empty when the body had none.
    pub code: String,
    pub message: String,
}

impl Classified for ApiError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Source
    }
}

/// The parts of a Salesforce error body we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// Reads an error body defensively (A7): the documented array `[{"message","errorCode"}]`, a
/// single object, the OAuth form `{"error","error_description"}`, or anything else (HTML,
/// empty), of which a short prefix becomes the message.
pub fn parse_error_body(body: &[u8]) -> ErrorBody {
    fn from_object(value: &Value) -> Option<ErrorBody> {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
        let code = text("errorCode").or_else(|| text("error"));
        let message = text("message").or_else(|| text("error_description"));
        if code.is_none() && message.is_none() {
            return None;
        }
        Some(ErrorBody {
            code: code.unwrap_or_default(),
            message: message.unwrap_or_default(),
        })
    }
    let parsed = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => {
            let entries: Vec<ErrorBody> = items.iter().filter_map(from_object).collect();
            entries.first().map(|first| ErrorBody {
                code: first.code.clone(),
                message: entries
                    .iter()
                    .map(|e| e.message.as_str())
                    .filter(|m| !m.is_empty())
                    .collect::<Vec<_>>()
                    .join("; "),
            })
        }
        Ok(value @ Value::Object(_)) => from_object(&value),
        _ => None,
    };
    parsed.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        ErrorBody {
            code: String::new(),
            message: if text.is_empty() {
                "(empty body)".to_string()
            } else {
                text.chars().take(200).collect()
            },
        }
    })
}

/// Parses `Sforce-Limit-Info` (A7): `api-usage=18/5000`, possibly followed by other entries
/// such as `; per-app-api-usage=17/250(appName=foo)`. Returns `(used, max)`.
pub fn parse_limit_info(header: &str) -> Option<(u64, u64)> {
    header
        .split([';', ','])
        .filter_map(|part| part.trim().split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("api-usage"))
        .and_then(|(_, value)| {
            let (used, max) = value.trim().split_once('/')?;
            let max: String = max
                .trim()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            Some((used.trim().parse().ok()?, max.parse().ok()?))
        })
}

/// An answer with a 2xx status: headers and the whole body (pages and CSV chunks are bounded).
pub struct Reply {
    pub headers: HeaderMap,
    /// The body, empty when it was parsed into `parsed`.
    pub body: Bytes,
    parsed: Parsed,
}

/// What a 2xx body was read into.
enum Parsed {
    Nothing,
    Json(Value),
    Page(QueryPage),
}

/// How the body of a successful answer must look. A body that fails the check counts as cut
/// short and is fetched again.
#[derive(Clone, Copy)]
enum Expect {
    /// JSON: a truncated body does not parse.
    Json,
    /// A query page, split into its records without a `Value` per record; a truncated body
    /// does not parse either.
    Page,
    /// Anything the check accepts; the error names what is missing.
    Raw(fn(&HeaderMap, &[u8]) -> std::result::Result<(), String>),
}

/// The check of [`Expect::Raw`] for answers whose body is not inspected.
fn any_body(_: &HeaderMap, _: &[u8]) -> std::result::Result<(), String> {
    Ok(())
}

impl Reply {
    /// The parsed body of a JSON answer, `Value::Null` for any other.
    fn json(self) -> Value {
        match self.parsed {
            Parsed::Json(json) => json,
            _ => Value::Null,
        }
    }
}

/// A logged-in session. The token is a secret; `instance_url` has no trailing slash.
struct Session {
    token: Secret,
    instance_url: String,
}

/// A Salesforce API client. Cloning shares the connection pool, the session and the usage.
#[derive(Clone)]
pub struct SalesforceClient {
    inner: Arc<Inner>,
}

/// What a token request proves the caller's identity with.
enum Credentials {
    /// Client credentials: the connected app's consumer secret.
    ClientSecret(Secret),
    /// JWT bearer: an assertion signed for each login.
    JwtBearer(JwtBearer),
}

impl Credentials {
    /// The keys to check when Salesforce refuses the login.
    fn hint(&self) -> &'static str {
        match self {
            Credentials::ClientSecret(_) => {
                "check source.client_id and source.client_secret (and that source.login_url is your My Domain URL)"
            }
            Credentials::JwtBearer(_) => {
                "check source.client_id, source.username and the private key (source.private_key or source.private_key_path): the connected app must hold the key's certificate and pre-authorize the user, and source.audience (default source.login_url) must name the login server"
            }
        }
    }
}

struct Inner {
    http: reqwest::Client,
    login_url: String,
    client_id: String,
    credentials: Credentials,
    /// `/services/data/v62.0`
    version_path: String,
    retry: RetryPolicy,
    api_budget: f64,
    /// Held across the login request so that concurrent callers log in once.
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    usage: Arc<Mutex<Option<(u64, u64)>>>,
}

impl SalesforceClient {
    /// Builds the client; no request is sent until the first call. Fails with a
    /// configuration error when the login keys select no flow or two, or the JWT bearer flow's
    /// private key cannot be read or cannot sign.
    pub fn new(config: &SalesforceConfig) -> Result<SalesforceClient> {
        let credentials = match config.auth().map_err(SalesforceError::Auth)? {
            SalesforceAuth::ClientCredentials { client_secret } => {
                Credentials::ClientSecret(client_secret.clone())
            }
            SalesforceAuth::JwtBearer {
                username,
                key,
                audience,
            } => {
                Credentials::JwtBearer(JwtBearer::new(&config.client_id, username, key, audience)?)
            }
        };
        let version = config.api_version.trim().trim_start_matches(['v', 'V']);
        if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(SalesforceError::ApiVersion(config.api_version.clone()).into());
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .connect_timeout(Duration::from_secs(30))
            .user_agent(concat!("syncline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(HttpError::Client)?;
        Ok(SalesforceClient {
            inner: Arc::new(Inner {
                http,
                login_url: config.login_url.trim_end_matches('/').to_string(),
                client_id: config.client_id.clone(),
                credentials,
                version_path: format!("/services/data/v{version}"),
                retry: RetryPolicy::new(config.retry_base_ms, config.max_retries),
                api_budget: config.api_budget,
                session: tokio::sync::Mutex::new(None),
                usage: Arc::new(Mutex::new(None)),
            }),
        })
    }

    /// `/services/data/vNN.0`: the prefix of every REST resource path.
    pub fn version_path(&self) -> &str {
        &self.inner.version_path
    }

    /// `/services/data/vNN.0/{rest}`: the path of a REST resource.
    pub fn data_path(&self, rest: &str) -> String {
        format!(
            "{}/{}",
            self.inner.version_path,
            rest.trim_start_matches('/')
        )
    }

    /// The instance the session talks to, logging in first when needed.
    pub async fn instance_url(&self) -> std::result::Result<String, Failure> {
        Ok(self.session().await?.instance_url.clone())
    }

    /// API usage as last reported by `Sforce-Limit-Info`: `(used, max)`.
    pub fn usage(&self) -> Option<(u64, u64)> {
        *self.inner.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// GET a JSON resource; `path` starts at the instance root (`/services/data/...`).
    pub async fn get_json(&self, path: &str) -> std::result::Result<Value, Failure> {
        Ok(self
            .send(Method::GET, path, None, false, Expect::Json)
            .await?
            .json())
    }

    /// GET a page of `query`/`queryAll` (first page or a `nextRecordsUrl`).
    pub async fn query(&self, path: &str) -> std::result::Result<QueryPage, Failure> {
        match self
            .send(Method::GET, path, None, true, Expect::Page)
            .await?
            .parsed
        {
            Parsed::Page(page) => Ok(page),
            _ => unreachable!("`Expect::Page` is answered with a page"),
        }
    }

    /// POST a JSON body and read a JSON answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> std::result::Result<Value, Failure> {
        Ok(self
            .send(Method::POST, path, Some(body), false, Expect::Json)
            .await?
            .json())
    }

    /// GET a non-JSON resource (Bulk CSV results) with its headers. `complete` judges a 2xx
    /// answer: when it names something missing, the answer was cut short and is fetched again
    /// like any transient failure.
    pub async fn get_raw(
        &self,
        path: &str,
        complete: fn(&HeaderMap, &[u8]) -> std::result::Result<(), String>,
    ) -> std::result::Result<Reply, Failure> {
        self.send(Method::GET, path, None, false, Expect::Raw(complete))
            .await
    }

    /// DELETE a resource (Bulk jobs); the body of the answer is ignored.
    pub async fn delete(&self, path: &str) -> std::result::Result<(), Failure> {
        self.send(Method::DELETE, path, None, false, Expect::Raw(any_body))
            .await
            .map(|_| ())
    }

    /// The current session, logging in when there is none yet.
    async fn session(&self) -> std::result::Result<Arc<Session>, Failure> {
        let mut guard = self.inner.session.lock().await;
        if let Some(session) = guard.as_ref() {
            return Ok(session.clone());
        }
        let session = Arc::new(self.login().await?);
        *guard = Some(session.clone());
        Ok(session)
    }

    /// Replaces `stale` with a new session, unless another caller already did.
    async fn relogin(&self, stale: &Arc<Session>) -> std::result::Result<(), Failure> {
        let mut guard = self.inner.session.lock().await;
        if let Some(current) = guard.as_ref() {
            if !Arc::ptr_eq(current, stale) {
                return Ok(());
            }
        }
        tracing::info!("salesforce session expired or was revoked; logging in again");
        *guard = None;
        let session = Arc::new(self.login().await?);
        *guard = Some(session);
        Ok(())
    }

    /// The OAuth 2.0 client-credentials or JWT bearer flow (A1).
    async fn login(&self) -> std::result::Result<Session, Failure> {
        let path = "/services/oauth2/token";
        self.inner
            .retry
            .send(Login {
                client: self,
                call: Call::new(Method::POST, path),
                url: format!("{}{path}", self.inner.login_url),
            })
            .await
    }

    /// Refuses to send once usage has reached the budget (A7): stopping before the next
    /// request keeps the remaining allocation for other integrations.
    fn check_budget(&self) -> std::result::Result<(), Failure> {
        let Some((used, max)) = self.usage() else {
            return Ok(());
        };
        if max > 0 && used as f64 >= self.inner.api_budget * max as f64 {
            return Err(Failure::Quota(format!(
                "the API budget is reached: Sforce-Limit-Info reports {used}/{max} requests used in the last 24 hours and source.api_budget = {} allows {:.0}",
                self.inner.api_budget,
                self.inner.api_budget * max as f64
            )));
        }
        Ok(())
    }

    fn record_usage(&self, headers: &HeaderMap) {
        let parsed = headers
            .get("Sforce-Limit-Info")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_limit_info);
        if let Some(usage) = parsed {
            *self.inner.usage.lock().unwrap_or_else(|e| e.into_inner()) = Some(usage);
        }
    }

    /// Sends one call with the retry, re-login and quota policies of the module docs.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        query_options: bool,
        expect: Expect,
    ) -> std::result::Result<Reply, Failure> {
        self.inner
            .retry
            .send(DataCall {
                client: self,
                call: Call::new(method, path),
                path,
                body,
                query_options,
                expect,
                session: None,
                logged_in_again: false,
            })
            .await
    }
}

/// A token request.
struct Login<'a> {
    client: &'a SalesforceClient,
    call: Call,
    url: String,
}

impl Exchange for Login<'_> {
    type Output = Session;
    type Error = Failure;

    fn call(&self) -> &Call {
        &self.call
    }

    async fn request(&mut self) -> std::result::Result<RequestBuilder, Failure> {
        let inner = &self.client.inner;
        let request = inner.http.post(&self.url);
        Ok(match &inner.credentials {
            Credentials::ClientSecret(secret) => request.form(&[
                ("grant_type", "client_credentials"),
                ("client_id", inner.client_id.as_str()),
                ("client_secret", secret.expose()),
            ]),
            // Signed per attempt, so retries after long back-offs never send an expired one.
            Credentials::JwtBearer(signer) => {
                let assertion = signer.assertion()?;
                request.form(&[
                    ("grant_type", jwt::GRANT_TYPE),
                    ("assertion", assertion.expose()),
                ])
            }
        })
    }

    async fn decide(&mut self, answer: Answer) -> Step<Session, Failure> {
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
            instance_url: String,
        }
        let call = self.call.clone();
        let status = answer.status;
        if status.is_success() {
            return match serde_json::from_slice::<Token>(&answer.body) {
                Ok(token) if !token.instance_url.trim().is_empty() => Step::Done(Session {
                    token: Secret::new(token.access_token),
                    instance_url: token.instance_url.trim().trim_end_matches('/').to_string(),
                }),
                // The body holds the token: never quote it.
                _ => Step::Fail(Failure::Other(SalesforceError::TokenShape(call).into())),
            };
        }
        let error = parse_error_body(&answer.body);
        // The credentials are fine; the org's allocation is spent, which no key change fixes.
        if error.code == "REQUEST_LIMIT_EXCEEDED" {
            return Step::Fail(Failure::Quota(format!(
                "the Salesforce API request limit is used up: {call} was refused with REQUEST_LIMIT_EXCEEDED ({})",
                error.message
            )));
        }
        if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
            let inner = &self.client.inner;
            return Step::Fail(
                HttpError::Credentials {
                    who: format!("the Salesforce login at {}", inner.login_url),
                    call,
                    status,
                    code: error.code,
                    message: error.message,
                    fix: inner.credentials.hint().to_string(),
                }
                .into(),
            );
        }
        Step::Retry(HttpError::Status {
            call,
            status,
            code: error.code,
            message: error.message,
        })
    }
}

/// A call to the instance with the session.
struct DataCall<'a> {
    client: &'a SalesforceClient,
    call: Call,
    path: &'a str,
    body: Option<&'a Value>,
    query_options: bool,
    expect: Expect,
    /// The session the last attempt was sent with: a 401 replaces exactly this one.
    session: Option<Arc<Session>>,
    logged_in_again: bool,
}

impl Exchange for DataCall<'_> {
    type Output = Reply;
    type Error = Failure;

    fn call(&self) -> &Call {
        &self.call
    }

    async fn request(&mut self) -> std::result::Result<RequestBuilder, Failure> {
        self.client.check_budget()?;
        let session = self.client.session().await?;
        let url = format!("{}{}", session.instance_url, self.path);
        let mut request = self
            .client
            .inner
            .http
            .request(self.call.method().clone(), &url)
            .bearer_auth(session.token.expose());
        if self.query_options {
            request = request.header("Sforce-Query-Options", QUERY_OPTIONS);
        }
        if let Some(body) = self.body {
            request = request.json(body);
        }
        self.session = Some(session);
        Ok(request)
    }

    async fn decide(&mut self, answer: Answer) -> Step<Reply, Failure> {
        self.client.record_usage(&answer.headers);
        let call = self.call.clone();
        let status = answer.status;
        if status.is_success() {
            let Answer { headers, body, .. } = answer;
            return match self.expect {
                Expect::Raw(complete) => match complete(&headers, &body) {
                    Ok(()) => Step::Done(Reply {
                        headers,
                        body,
                        parsed: Parsed::Nothing,
                    }),
                    Err(detail) => Step::Retry(HttpError::Incomplete { call, detail }),
                },
                // A truncated body parses as broken JSON; Airbyte retries these too (A7).
                Expect::Json => match serde_json::from_slice::<Value>(&body) {
                    Ok(json) => Step::Done(Reply {
                        headers,
                        body,
                        parsed: Parsed::Json(json),
                    }),
                    Err(source) => Step::Retry(HttpError::Json { call, source }),
                },
                Expect::Page => match QueryPage::parse(body) {
                    Ok(page) => Step::Done(Reply {
                        headers,
                        body: Bytes::new(),
                        parsed: Parsed::Page(page),
                    }),
                    Err(source) => Step::Retry(HttpError::Json { call, source }),
                },
            };
        }
        let error = parse_error_body(&answer.body);
        match status {
            StatusCode::UNAUTHORIZED if !self.logged_in_again => {
                self.logged_in_again = true;
                tracing::debug!(%call, code = %error.code, "401 from salesforce");
                if let Some(stale) = self.session.take() {
                    if let Err(failure) = self.client.relogin(&stale).await {
                        return Step::Fail(failure);
                    }
                }
                Step::Again
            }
            StatusCode::UNAUTHORIZED => Step::Fail(
                HttpError::Credentials {
                    who: "Salesforce".into(),
                    call,
                    status,
                    code: error.code,
                    message: format!("a fresh session was refused too: {}", error.message),
                    fix: "check the connected app's run-as user and its API permission".into(),
                }
                .into(),
            ),
            StatusCode::FORBIDDEN if error.code == "REQUEST_LIMIT_EXCEEDED" => {
                Step::Fail(Failure::Quota(format!(
                    "the Salesforce API request limit is used up: {call} was refused with REQUEST_LIMIT_EXCEEDED ({})",
                    error.message
                )))
            }
            s if is_retryable(s) => Step::Retry(HttpError::Status {
                call,
                status,
                code: error.code,
                message: error.message,
            }),
            s => Step::Fail(Failure::Api(ApiError {
                method: call.method().to_string(),
                endpoint: call.endpoint().to_string(),
                status: s.as_u16(),
                code: error.code,
                message: error.message,
            })),
        }
    }
}

/// 5xx and the throttling answers Airbyte retries (A7).
fn is_retryable(status: StatusCode) -> bool {
    status.is_server_error() || matches!(status.as_u16(), 406 | 420 | 429)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_info_parses_used_and_max() {
        assert_eq!(parse_limit_info("api-usage=18/5000"), Some((18, 5000)));
        assert_eq!(
            parse_limit_info("api-usage=18/5000; per-app-api-usage=17/250(appName=foo)"),
            Some((18, 5000))
        );
        assert_eq!(
            parse_limit_info("per-app-api-usage=17/250(appName=foo); api-usage=3/15000"),
            Some((3, 15000))
        );
        assert_eq!(parse_limit_info(" api-usage = 7 / 100 "), Some((7, 100)));
        assert_eq!(parse_limit_info("api-usage=lots"), None);
        assert_eq!(parse_limit_info(""), None);
    }

    #[tokio::test]
    async fn a_login_refused_for_the_request_limit_is_a_quota_stop_not_a_credentials_error() {
        let config: SalesforceConfig = toml::from_str(
            r#"
            client_id = "abc"
            client_secret = "shh"
            streams = ["Account"]
            "#,
        )
        .unwrap();
        let client = SalesforceClient::new(&config).unwrap();
        let mut login = Login {
            client: &client,
            call: Call::new(Method::POST, "/services/oauth2/token"),
            url: "https://login.example/services/oauth2/token".into(),
        };
        let answer = Answer {
            status: StatusCode::FORBIDDEN,
            headers: HeaderMap::new(),
            body: Bytes::from_static(
                br#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#,
            ),
        };
        match login.decide(answer).await {
            Step::Fail(Failure::Quota(reason)) => {
                assert!(reason.contains("REQUEST_LIMIT_EXCEEDED"), "{reason}")
            }
            _ => panic!("expected a quota stop"),
        }
    }

    #[test]
    fn error_bodies_parse_defensively() {
        assert_eq!(
            parse_error_body(
                br#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#
            ),
            ErrorBody {
                code: "REQUEST_LIMIT_EXCEEDED".into(),
                message: "TotalRequests Limit exceeded.".into()
            }
        );
        assert_eq!(
            parse_error_body(
                br#"[{"message":"No such column 'Foo__c' on entity 'Account'","errorCode":"INVALID_FIELD","fields":["Foo__c"]},{"message":"second","errorCode":"X"}]"#
            ),
            ErrorBody {
                code: "INVALID_FIELD".into(),
                message: "No such column 'Foo__c' on entity 'Account'; second".into()
            }
        );
        assert_eq!(
            parse_error_body(
                br#"{"error":"invalid_client_id","error_description":"client identifier invalid"}"#
            ),
            ErrorBody {
                code: "invalid_client_id".into(),
                message: "client identifier invalid".into()
            }
        );
        let html = parse_error_body(b"<html>\n<body>We are setting things up</body></html>");
        assert_eq!(html.code, "");
        assert!(
            html.message.contains("setting things up"),
            "{}",
            html.message
        );
        assert_eq!(parse_error_body(b"").message, "(empty body)");
        assert_eq!(parse_error_body(b"[]").message, "[]");
        let long = "x".repeat(1000);
        assert_eq!(parse_error_body(long.as_bytes()).message.len(), 200);
    }

    #[test]
    fn api_errors_name_code_and_message() {
        let err: Error = Failure::Api(ApiError {
            method: "GET".into(),
            endpoint: "/services/data/v62.0/queryAll".into(),
            status: 400,
            code: "MALFORMED_QUERY".into(),
            message: "unexpected token".into(),
        })
        .into();
        let text = err.to_string();
        assert!(
            text.contains("MALFORMED_QUERY") && text.contains("unexpected token"),
            "{text}"
        );
        assert_eq!(err.kind(), ErrorKind::Source);
    }

    #[test]
    fn retryable_statuses() {
        for s in [500u16, 502, 503, 406, 420, 429] {
            assert!(is_retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400u16, 401, 403, 404, 414] {
            assert!(!is_retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}

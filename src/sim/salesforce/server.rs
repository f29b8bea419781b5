//! The HTTP face of the Salesforce simulator: the OAuth token endpoint (client credentials
//! and JWT bearer), and one handler for everything under `/services/data/` that passes the
//! gate (injected 503, URI length, session, daily API limit — in that order), checks the API
//! version and dispatches on the path. Every data response, errors included, carries
//! `Sforce-Limit-Info`.
//!
//! Data paths are dispatched by hand rather than by the router: the version is a path
//! segment whose mismatch must get Salesforce's own 404 body, and axum cannot mix a
//! `{version}` parameter with a catch-all at the same level. Other `/services/` paths fall
//! through to the shared router's fallback.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::bulk::Chunk;
use super::schema::API_VERSION;
use super::{ApiError, Gate, SalesforceSim, clamp_batch};

/// The `grant_type` of the OAuth 2.0 JWT bearer flow.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The routes of the simulated org: `/services/oauth2/token` and `/services/data/…`.
/// No fallback, so it merges with the HubSpot router (which has one).
pub(crate) fn router(sim: SalesforceSim) -> Router {
    Router::new()
        .route("/services/oauth2/token", post(token))
        .route("/services/data/{*rest}", any(data_api))
        .with_state(sim)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        sf_error(self.status, self.code, &self.message)
    }
}

/// `POST /services/oauth2/token` (crm-apis.md A1): the client-credentials flow, where the
/// client may authenticate in the form body or with HTTP Basic, and the JWT bearer flow
/// (`assertion=<JWT>`), whose refused assertions get 400 `invalid_grant`. Not an API call:
/// it neither needs a session nor counts against the daily limit.
async fn token(State(sim): State<SalesforceSim>, headers: HeaderMap, body: Bytes) -> Response {
    sim.note_token_request();
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    match form_value(&form, "grant_type") {
        Some("client_credentials") => {}
        Some(JWT_BEARER_GRANT) => {
            let assertion = form_value(&form, "assertion").unwrap_or_default();
            return match sim.jwt_login(assertion) {
                Ok(body) => Json(body).into_response(),
                Err(description) => oauth_error("invalid_grant", description),
            };
        }
        // Password and refresh-token grants are out of scope for the simulator.
        _ => return oauth_error("unsupported_grant_type", "grant type not supported"),
    }
    let credentials = basic_credentials(&headers).or_else(|| {
        Some((
            form_value(&form, "client_id")?.to_owned(),
            form_value(&form, "client_secret")?.to_owned(),
        ))
    });
    match credentials.and_then(|(id, secret)| sim.login(&id, &secret)) {
        Some(body) => Json(body).into_response(),
        None => oauth_error("invalid_client", "invalid client credentials"),
    }
}

async fn data_api(
    State(sim): State<SalesforceSim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let uri_bytes = uri
        .path_and_query()
        .map_or(uri.path().len(), |pq| pq.as_str().len());
    let (gate, used, max) = sim.admit(bearer_token(&headers), uri_bytes);
    let mut response = match gate {
        Gate::Proceed => dispatch(&sim, &method, &uri, &headers, &body),
        Gate::Unavailable => sf_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER_UNAVAILABLE",
            "Server temporarily unavailable. Please try again later.",
        ),
        Gate::UriTooLong => sf_error(StatusCode::URI_TOO_LONG, "URI_TOO_LONG", "URI Too Long"),
        Gate::Unauthorized => sf_error(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        ),
        Gate::LimitExceeded => sf_error(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        ),
    };
    if let Ok(value) = HeaderValue::from_str(&format!("api-usage={used}/{max}")) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("sforce-limit-info"), value);
    }
    tracing::debug!(
        %method,
        path = uri.path(),
        status = response.status().as_u16(),
        "salesforce sim request"
    );
    response
}

/// Routes an admitted data request by its path segments after `/services/data/`.
fn dispatch(
    sim: &SalesforceSim,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let path = uri
        .path()
        .strip_prefix("/services/data/")
        .unwrap_or_default();
    let segments: Vec<&str> = path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .collect();
    let Some((&version, tail)) = segments.split_first() else {
        return ApiError::not_found().into_response();
    };
    if version.strip_prefix('v') != Some(API_VERSION) {
        return ApiError::not_found().into_response();
    }
    let get = [Method::GET];
    let outcome: Result<Response, ApiError> = match tail {
        ["limits"] => allow(method, &get).map(|()| json_ok(sim.limits())),
        ["sobjects"] => allow(method, &get).map(|()| json_ok(sim.global_describe())),
        ["sobjects", object, "deleted"] => allow(method, &get)
            .and_then(|()| {
                sim.get_deleted(
                    object,
                    query_param(uri, "start").as_deref(),
                    query_param(uri, "end").as_deref(),
                )
            })
            .map(json_ok),
        ["sobjects", object, "describe"] => allow(method, &get)
            .and_then(|()| sim.describe(object))
            .map(json_ok),
        [resource @ ("query" | "queryAll")] => allow(method, &get)
            .and_then(|()| {
                let soql = query_param(uri, "q").ok_or_else(|| {
                    ApiError::bad_request("MALFORMED_QUERY", "A query string has to be specified")
                })?;
                sim.run_query(&soql, *resource == "queryAll", batch_size(headers))
            })
            .map(json_ok),
        ["query" | "queryAll", locator] => allow(method, &get)
            .and_then(|()| sim.query_more(locator))
            .map(json_ok),
        ["jobs", "query"] => allow(method, &[Method::POST])
            .and_then(|()| sim.create_job(body))
            .map(json_ok),
        ["jobs", "query", id] => {
            if *method == Method::GET {
                sim.job_status(id).map(json_ok)
            } else if *method == Method::DELETE {
                sim.delete_job(id)
                    .map(|()| StatusCode::NO_CONTENT.into_response())
            } else if *method == Method::PATCH {
                sim.abort_job(id, body).map(json_ok)
            } else {
                allow(method, &[Method::GET, Method::PATCH, Method::DELETE])
                    .map(|()| StatusCode::NO_CONTENT.into_response())
            }
        }
        ["jobs", "query", id, "results"] => allow(method, &get)
            .and_then(|()| {
                let locator = query_param(uri, "locator");
                let max_records = query_param(uri, "maxRecords");
                sim.job_results(id, locator.as_deref(), max_records.as_deref())
            })
            .map(csv_response),
        _ => Err(ApiError::not_found()),
    };
    outcome.unwrap_or_else(IntoResponse::into_response)
}

fn allow(method: &Method, allowed: &[Method]) -> Result<(), ApiError> {
    if allowed.contains(method) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    Err(ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "METHOD_NOT_ALLOWED",
        message: format!(
            "HTTP Method '{method}' not allowed. Allowed are {}",
            names.join(",")
        ),
    })
}

fn json_ok(body: Value) -> Response {
    Json(body).into_response()
}

/// A results chunk as `text/csv` with `Sforce-NumberOfRecords` and `Sforce-Locator`
/// (the literal `null` on the last chunk).
fn csv_response(chunk: Chunk) -> Response {
    let Chunk {
        csv,
        records,
        next_locator,
    } = chunk;
    let locator = next_locator
        .and_then(|locator| HeaderValue::from_str(&locator).ok())
        .unwrap_or_else(|| HeaderValue::from_static("null"));
    let mut response = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=UTF-8"),
        )],
        csv,
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("sforce-numberofrecords"),
        HeaderValue::from(records),
    );
    headers.insert(HeaderName::from_static("sforce-locator"), locator);
    response
}

/// Salesforce's error body: always a JSON array (crm-apis.md A7).
fn sf_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!([{ "message": message, "errorCode": code }]);
    (status, Json(body)).into_response()
}

/// The OAuth error shape of the login endpoint, which differs from the data API's.
fn oauth_error(error: &str, description: &str) -> Response {
    let body = json!({ "error": error, "error_description": description });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// A decoded query-string parameter (`+` is a space, as in form encoding).
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    let query = uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// `Sforce-Query-Options: batchSize=N`, clamped; 2000 when absent or unreadable.
fn batch_size(headers: &HeaderMap) -> usize {
    let requested = headers
        .get("sforce-query-options")
        .and_then(|value| value.to_str().ok())
        .and_then(|options| {
            options.split(',').find_map(|option| {
                let (key, value) = option.split_once('=')?;
                if key.trim().eq_ignore_ascii_case("batchSize") {
                    value.trim().parse::<u64>().ok()
                } else {
                    None
                }
            })
        });
    clamp_batch(requested)
}

fn form_value<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    // The last occurrence wins, as with most form parsers.
    form.iter()
        .rev()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// Standard base64 with padding; the crate has no base64 dependency for two call sites.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let triple = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for position in 0..4 {
            if position <= chunk.len() {
                let index = (triple >> (18 - 6 * position)) & 63;
                out.push(char::from(BASE64_ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for byte in text.bytes() {
        if byte == b'=' {
            break;
        }
        let value = BASE64_ALPHABET.iter().position(|&c| c == byte)?;
        buffer = (buffer << 6) | u32::try_from(value).ok()?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from(buffer >> bits).ok()?);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimConfig, Simulator};

    struct Reply {
        status: u16,
        /// Lowercased status line and headers.
        head: String,
        body: String,
    }

    impl Reply {
        fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap_or(Value::Null)
        }

        fn header(&self, name: &str) -> Option<&str> {
            self.head.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == name).then(|| value.trim())
            })
        }
    }

    /// One HTTP/1.1 exchange over a fresh connection.
    async fn call(
        base_url: &str,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = base_url.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to simulator");
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read response");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, payload) = text.split_once("\r\n\r\n").expect("response head");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("status code");
        Reply {
            status,
            head: head.to_ascii_lowercase(),
            body: payload.to_owned(),
        }
    }

    fn encode(text: &str) -> String {
        url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
    }

    const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

    async fn login(base: &str) -> String {
        let reply = call(
            base,
            "POST",
            "/services/oauth2/token",
            &[FORM],
            "grant_type=client_credentials&client_id=sim-client&client_secret=sim-secret",
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["access_token"]
            .as_str()
            .expect("access token")
            .to_owned()
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(
            base64_encode(b"sim-client:sim-secret"),
            "c2ltLWNsaWVudDpzaW0tc2VjcmV0"
        );
        for text in ["", "a", "ab", "abc", "sim-client:sim-secret"] {
            let decoded = base64_decode(&base64_encode(text.as_bytes())).expect("decodes");
            assert_eq!(decoded, text.as_bytes());
        }
        assert_eq!(base64_decode("!!"), None);
    }

    #[tokio::test]
    async fn token_endpoint_issues_sessions_for_the_right_client_only() {
        let handle = Simulator::start(SimConfig::default(), "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("simulator starts");
        let base = handle.base_url.clone();

        let wrong_grant = call(
            &base,
            "POST",
            "/services/oauth2/token",
            &[FORM],
            "grant_type=password",
        )
        .await;
        assert_eq!(wrong_grant.status, 400);
        assert_eq!(wrong_grant.json()["error"], "unsupported_grant_type");
        let wrong_client = call(
            &base,
            "POST",
            "/services/oauth2/token",
            &[FORM],
            "grant_type=client_credentials&client_id=sim-client&client_secret=nope",
        )
        .await;
        assert_eq!(wrong_client.status, 400);
        assert_eq!(
            wrong_client.json(),
            json!({"error": "invalid_client", "error_description": "invalid client credentials"})
        );
        let basic = call(
            &base,
            "POST",
            "/services/oauth2/token",
            &[
                FORM,
                ("Authorization", "Basic c2ltLWNsaWVudDpzaW0tc2VjcmV0"),
            ],
            "grant_type=client_credentials",
        )
        .await;
        assert_eq!(basic.status, 200, "{}", basic.body);
        let body = basic.json();
        assert_eq!(body["instance_url"], base.as_str());
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], "api");
        assert!(
            body["issued_at"]
                .as_str()
                .is_some_and(|at| at.parse::<i64>().is_ok())
        );
        assert!(body["signature"].is_string() && body["id"].is_string());
        assert!(
            basic.header("sforce-limit-info").is_none(),
            "not an API call"
        );
        assert_eq!(handle.salesforce.token_requests(), 3);
        assert_eq!(handle.salesforce.api_usage().0, 0);
        handle.shutdown().await;
    }

    /// An RS256 assertion signed with the PEM private key `key`.
    fn assertion(key: &str, iss: &str, sub: &str, aud: &str, exp: i64) -> String {
        let claims = json!({"iss": iss, "sub": sub, "aud": aud, "exp": exp});
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(key.as_bytes()).expect("test key");
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .expect("signs")
    }

    #[tokio::test]
    async fn token_endpoint_accepts_jwt_bearer_assertions_from_the_app_key_only() {
        const APP_KEY: &str = include_str!("../../../tests/fixtures/jwt-test-private.pem");
        const OTHER_KEY: &str = include_str!("../../../tests/fixtures/jwt-other-private.pem");
        let handle = Simulator::start(SimConfig::default(), "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("simulator starts");
        let base = handle.base_url.clone();
        let soon = chrono::Utc::now().timestamp() + 180;
        let user = "sim-user@example.com";
        let post = |jwt: String| {
            let base = base.clone();
            async move {
                let body = format!("grant_type={}&assertion={jwt}", encode(JWT_BEARER_GRANT));
                call(&base, "POST", "/services/oauth2/token", &[FORM], &body).await
            }
        };

        for aud in [
            base.as_str(),
            "https://login.salesforce.com",
            "https://test.salesforce.com",
        ] {
            let reply = post(assertion(APP_KEY, "sim-client", user, aud, soon)).await;
            assert_eq!(reply.status, 200, "{aud}: {}", reply.body);
            let body = reply.json();
            assert_eq!(body["instance_url"], base.as_str());
            assert_eq!(body["token_type"], "Bearer");
            let token = body["access_token"].as_str().expect("token").to_owned();
            let bearer = format!("Bearer {token}");
            let limits = call(
                &base,
                "GET",
                "/services/data/v62.0/limits",
                &[("Authorization", bearer.as_str())],
                "",
            )
            .await;
            assert_eq!(limits.status, 200, "the session works");
        }
        assert_eq!(handle.salesforce.jwt_logins(), 3);

        let refused = [
            (
                assertion(OTHER_KEY, "sim-client", user, &base, soon),
                "invalid assertion",
            ),
            (
                assertion(APP_KEY, "sim-client", "someone@example.com", &base, soon),
                "user hasn't approved this consumer",
            ),
            (
                assertion(APP_KEY, "other-client", user, &base, soon),
                "client identifier invalid",
            ),
            (
                assertion(
                    APP_KEY,
                    "sim-client",
                    user,
                    "https://evil.example.com",
                    soon,
                ),
                "audience is invalid",
            ),
            (
                assertion(APP_KEY, "sim-client", user, &base, soon - 600),
                "expired authorization code",
            ),
            ("not.a.jwt".to_owned(), "invalid assertion"),
        ];
        for (jwt, description) in refused {
            let reply = post(jwt).await;
            assert_eq!(reply.status, 400, "{description}: {}", reply.body);
            assert_eq!(
                reply.json(),
                json!({"error": "invalid_grant", "error_description": description})
            );
        }
        let missing = call(
            &base,
            "POST",
            "/services/oauth2/token",
            &[FORM],
            &format!("grant_type={}", encode(JWT_BEARER_GRANT)),
        )
        .await;
        assert_eq!(missing.status, 400);
        assert_eq!(missing.json()["error"], "invalid_grant");
        assert_eq!(handle.salesforce.jwt_logins(), 3, "refusals are not logins");
        assert_eq!(handle.salesforce.token_requests(), 10);
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn serves_the_documented_data_api() {
        let config = SimConfig {
            sf_accounts: 300,
            sf_wide_records: 2,
            ..SimConfig::default()
        };
        let handle = Simulator::start(config, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("simulator starts");
        let base = handle.base_url.clone();
        let sim = handle.salesforce.clone();

        let anonymous = call(&base, "GET", "/services/data/v62.0/limits", &[], "").await;
        assert_eq!(anonymous.status, 401);
        assert_eq!(anonymous.json()[0]["errorCode"], "INVALID_SESSION_ID");
        assert_eq!(anonymous.json()[0]["message"], "Session expired or invalid");
        assert_eq!(
            anonymous.header("sforce-limit-info"),
            Some("api-usage=0/1000000")
        );

        let token = login(&base).await;
        let bearer = format!("Bearer {token}");
        let auth = ("Authorization", bearer.as_str());

        let limits = call(&base, "GET", "/services/data/v62.0/limits", &[auth], "").await;
        assert_eq!(limits.status, 200);
        assert_eq!(
            limits.header("sforce-limit-info"),
            Some("api-usage=1/1000000")
        );
        assert_eq!(limits.json()["DailyApiRequests"]["Remaining"], 999_999);

        let old = call(&base, "GET", "/services/data/v61.0/sobjects", &[auth], "").await;
        assert_eq!(old.status, 404);
        assert_eq!(old.json()[0]["errorCode"], "NOT_FOUND");

        let global = call(&base, "GET", "/services/data/v62.0/sobjects", &[auth], "").await;
        assert_eq!(global.json()["sobjects"].as_array().map(Vec::len), Some(6));
        let describe = call(
            &base,
            "GET",
            "/services/data/v62.0/sobjects/Account/describe",
            &[auth],
            "",
        )
        .await;
        assert_eq!(describe.status, 200);
        assert_eq!(describe.json()["fields"][0]["name"], "Id");
        let missing = call(
            &base,
            "GET",
            "/services/data/v62.0/sobjects/Nope/describe",
            &[auth],
            "",
        )
        .await;
        assert_eq!(missing.status, 404);

        // Paging with an encoded `+` in the datetime literal.
        let soql = "SELECT Id, SystemModstamp FROM Account \
                    WHERE SystemModstamp >= 2024-01-01T00:00:00.000+00:00 ORDER BY Id";
        let target = format!("/services/data/v62.0/query?q={}", encode(soql));
        let options = ("Sforce-Query-Options", "batchSize=200");
        let first = call(&base, "GET", &target, &[auth, options], "").await;
        assert_eq!(first.status, 200, "{}", first.body);
        let page = first.json();
        assert_eq!(page["totalSize"], 300);
        assert_eq!(page["records"].as_array().map(Vec::len), Some(200));
        let next = page["nextRecordsUrl"]
            .as_str()
            .expect("next page")
            .to_owned();
        let second = call(&base, "GET", &next, &[auth], "").await;
        let page = second.json();
        assert_eq!(page["done"], true);
        assert_eq!(page["records"].as_array().map(Vec::len), Some(100));
        assert_eq!(page["records"][99]["Id"], "001000000000000300");

        // The same literal with a raw `+`, which arrives as a space.
        let raw = "/services/data/v62.0/query?q=SELECT+Id+FROM+Account+WHERE+SystemModstamp\
                   +%3E%3D+2024-01-01T00:00:00.000+00:00";
        let malformed = call(&base, "GET", raw, &[auth], "").await;
        assert_eq!(malformed.status, 400);
        assert_eq!(malformed.json()[0]["errorCode"], "MALFORMED_QUERY");
        let unknown = format!(
            "/services/data/v62.0/queryAll?q={}",
            encode("SELECT Nope FROM Lead")
        );
        let unknown = call(&base, "GET", &unknown, &[auth], "").await;
        assert_eq!(unknown.json()[0]["errorCode"], "INVALID_FIELD");
        let aggregate = format!(
            "/services/data/v62.0/query?q={}",
            encode("SELECT Id FROM AggregateResult")
        );
        let aggregate = call(&base, "GET", &aggregate, &[auth], "").await;
        assert_eq!(aggregate.status, 400);
        assert_eq!(aggregate.json()[0]["errorCode"], "INVALID_TYPE");

        let every_wide_field: Vec<String> = sim
            .describe_fields("Wide__c")
            .into_iter()
            .map(|field| field.name)
            .collect();
        let wide = format!("SELECT {} FROM Wide__c", every_wide_field.join(", "));
        let target = format!("/services/data/v62.0/query?q={}", encode(&wide));
        assert!(target.len() > 16_384);
        let too_long = call(&base, "GET", &target, &[auth], "").await;
        assert_eq!(too_long.status, 414);
        assert_eq!(too_long.json()[0]["errorCode"], "URI_TOO_LONG");
        assert!(too_long.header("sforce-limit-info").is_some());

        // Bulk 2.0: create, poll to completion, read two chunks, delete.
        let job = json!({
            "operation": "queryAll",
            "query": "SELECT Id, Name, BillingStreet, SystemModstamp FROM Account",
            "contentType": "CSV",
            "columnDelimiter": "COMMA",
            "lineEnding": "LF",
        })
        .to_string();
        let json_type = ("Content-Type", "application/json");
        let created = call(
            &base,
            "POST",
            "/services/data/v62.0/jobs/query",
            &[auth, json_type],
            &job,
        )
        .await;
        assert_eq!(created.status, 200, "{}", created.body);
        let info = created.json();
        assert_eq!(info["state"], "UploadComplete");
        let job_path = format!(
            "/services/data/v62.0/jobs/query/{}",
            info["id"].as_str().expect("id")
        );
        let early = call(&base, "GET", &format!("{job_path}/results"), &[auth], "").await;
        assert_eq!(early.status, 400);
        let first_poll = call(&base, "GET", &job_path, &[auth], "").await;
        assert_eq!(first_poll.json()["state"], "InProgress");
        let second_poll = call(&base, "GET", &job_path, &[auth], "").await;
        assert_eq!(second_poll.json()["state"], "JobComplete");
        assert_eq!(second_poll.json()["numberRecordsProcessed"], 300);
        let chunk = call(
            &base,
            "GET",
            &format!("{job_path}/results?maxRecords=250"),
            &[auth],
            "",
        )
        .await;
        assert_eq!(chunk.status, 200);
        assert!(
            chunk
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/csv"))
        );
        assert_eq!(chunk.header("sforce-numberofrecords"), Some("250"));
        assert_eq!(chunk.header("sforce-locator"), Some("250"));
        let rows = csv::Reader::from_reader(chunk.body.as_bytes())
            .records()
            .collect::<Result<Vec<_>, _>>()
            .expect("valid csv");
        assert_eq!(rows.len(), 250);
        let last = call(
            &base,
            "GET",
            &format!("{job_path}/results?maxRecords=250&locator=250"),
            &[auth],
            "",
        )
        .await;
        assert_eq!(last.header("sforce-locator"), Some("null"));
        assert_eq!(last.header("sforce-numberofrecords"), Some("50"));
        let compound =
            json!({"operation": "query", "query": "SELECT Id, BillingAddress FROM Account"})
                .to_string();
        let refused = call(
            &base,
            "POST",
            "/services/data/v62.0/jobs/query",
            &[auth, json_type],
            &compound,
        )
        .await;
        assert_eq!(refused.status, 400);
        assert_eq!(
            refused.json(),
            json!([{"errorCode": "API_ERROR", "message": "Selecting compound data not supported in Bulk Query"}])
        );
        let deleted = call(&base, "DELETE", &job_path, &[auth], "").await;
        assert_eq!(deleted.status, 204);
        assert_eq!(call(&base, "GET", &job_path, &[auth], "").await.status, 404);

        // Faults: 503 injection, the daily limit, expired sessions.
        sim.inject_503(1);
        let unavailable = call(&base, "GET", "/services/data/v62.0/limits", &[auth], "").await;
        assert_eq!(unavailable.status, 503);
        assert_eq!(unavailable.json()[0]["errorCode"], "SERVER_UNAVAILABLE");
        let (used, _) = sim.api_usage();
        sim.set_api_usage(used, used + 1);
        assert_eq!(
            call(&base, "GET", "/services/data/v62.0/limits", &[auth], "")
                .await
                .status,
            200
        );
        let exhausted = call(&base, "GET", "/services/data/v62.0/limits", &[auth], "").await;
        assert_eq!(exhausted.status, 403);
        assert_eq!(exhausted.json()[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
        assert_eq!(
            exhausted.json()[0]["message"],
            "TotalRequests Limit exceeded."
        );
        let usage = format!("api-usage={}/{}", used + 1, used + 1);
        assert_eq!(exhausted.header("sforce-limit-info"), Some(usage.as_str()));
        sim.set_api_usage(0, 1_000);
        sim.expire_sessions();
        let expired = call(&base, "GET", "/services/data/v62.0/limits", &[auth], "").await;
        assert_eq!(expired.status, 401);
        let fresh = login(&base).await;
        let fresh_bearer = format!("Bearer {fresh}");
        let again = call(
            &base,
            "GET",
            "/services/data/v62.0/limits",
            &[("Authorization", fresh_bearer.as_str())],
            "",
        )
        .await;
        assert_eq!(again.status, 200);

        // HubSpot keeps its own routes and gate on the shared server.
        let hubspot_token = format!("Bearer {}", handle.token());
        let hubspot = call(
            &base,
            "GET",
            "/crm/v3/objects/contacts?limit=1",
            &[("Authorization", hubspot_token.as_str())],
            "",
        )
        .await;
        assert_eq!(hubspot.status, 200);
        assert!(hubspot.header("sforce-limit-info").is_none());
        handle.shutdown().await;
    }
}

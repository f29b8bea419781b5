//! HTTP access to HubSpot CRM v3: bearer auth, and what HubSpot's answers mean. Retries,
//! `Retry-After` and error hiding are the shared [`crate::sources::http`] behaviour.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{HubspotConfig, Secret};
use crate::sources::http::{Answer, Call, Exchange, HttpError, RetryPolicy, Step, with_space};
use crate::sources::hubspot::HubspotError;
use crate::sources::hubspot::page::PageBody;
use crate::{Error, Result};

/// A HubSpot API client. Cloning shares the connection pool.
#[derive(Clone)]
pub struct HubspotClient {
    http: reqwest::Client,
    base_url: String,
    token: Secret,
    retry: RetryPolicy,
}

/// The documented error body; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    message: Option<String>,
    category: Option<String>,
    policy_name: Option<String>,
}

impl HubspotClient {
    pub fn new(config: &HubspotConfig) -> Result<HubspotClient> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("syncline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(HttpError::Client)?;
        Ok(HubspotClient {
            http,
            base_url: config.base_url.trim_end_matches('/').to_string(),
            token: config.token.clone(),
            retry: RetryPolicy::new(config.retry_base_ms, config.max_retries),
        })
    }

    /// A list page: its records are read from the body as the page is converted.
    pub async fn get_page(&self, path_and_query: &str) -> Result<PageBody> {
        let body = self.send(Method::GET, path_and_query, None, None).await?;
        Ok(PageBody::new(Call::new(Method::GET, path_and_query), body))
    }

    /// A search or batch-read page.
    pub async fn post_page(&self, path: &str, body: &Value) -> Result<PageBody> {
        let answer = self.send(Method::POST, path, Some(body), None).await?;
        Ok(PageBody::new(Call::new(Method::POST, path), answer))
    }

    /// The property definitions of object type `object` (B4). HubSpot rejects an object
    /// type it does not know (400 "Unable to infer object type", or 404): that is the
    /// configured stream's mistake, so it comes back as [`HubspotError::NoSuchObject`].
    pub async fn properties(&self, object: &str) -> Result<Value> {
        let path = format!("/crm/v3/properties/{}", super::encode(object));
        let body = self.send(Method::GET, &path, None, Some(object)).await?;
        serde_json::from_slice(&body).map_err(|source| {
            HttpError::Json {
                call: Call::new(Method::GET, &path),
                source,
            }
            .into()
        })
    }

    /// Sends a request, retrying what HubSpot documents as retryable, and returns the body
    /// of the 2xx answer. The error names the endpoint path, never the token.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        object: Option<&str>,
    ) -> Result<Bytes> {
        self.retry
            .send(HubspotCall {
                client: self,
                call: Call::new(method, path),
                url: format!("{}{}", self.base_url, path),
                body,
                object,
            })
            .await
    }
}

/// One HubSpot request.
struct HubspotCall<'a> {
    client: &'a HubspotClient,
    call: Call,
    url: String,
    body: Option<&'a Value>,
    /// The object type the path names, when a 400 or 404 can only mean it does not exist.
    object: Option<&'a str>,
}

impl Exchange for HubspotCall<'_> {
    type Output = Bytes;
    type Error = Error;

    fn call(&self) -> &Call {
        &self.call
    }

    async fn request(&mut self) -> Result<RequestBuilder> {
        let request = self
            .client
            .http
            .request(self.call.method().clone(), &self.url)
            .bearer_auth(self.client.token.expose());
        Ok(match self.body {
            Some(body) => request.json(body),
            None => request,
        })
    }

    async fn decide(&mut self, answer: Answer) -> Step<Bytes, Error> {
        let call = self.call.clone();
        // The body is parsed by its reader: pages record by record, without a JSON tree.
        if answer.status.is_success() {
            return Step::Done(answer.body);
        }
        let error: ErrorBody = serde_json::from_slice(&answer.body).unwrap_or_default();
        let message = error.message.unwrap_or_else(|| {
            String::from_utf8_lossy(&answer.body)
                .chars()
                .take(200)
                .collect()
        });
        let code = error.category.unwrap_or_default();
        let status = answer.status;
        let refused = |fix: &str| HttpError::Credentials {
            who: "HubSpot".into(),
            call: call.clone(),
            status,
            code: code.clone(),
            message: message.clone(),
            fix: fix.into(),
        };
        if let Some(object) = self.object
            && matches!(status, StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND)
        {
            return Step::Fail(
                HubspotError::NoSuchObject {
                    stream: object.to_string(),
                    detail: format!(
                        " (HTTP {}{}: {message})",
                        status.as_u16(),
                        with_space(&code)
                    ),
                }
                .into(),
            );
        }
        match status {
            StatusCode::TOO_MANY_REQUESTS if error.policy_name.as_deref() == Some("DAILY") => {
                Step::Fail(HubspotError::DailyLimit { call }.into())
            }
            StatusCode::UNAUTHORIZED => Step::Fail(refused("check source.token").into()),
            StatusCode::FORBIDDEN => Step::Fail(
                refused("the token lacks a scope this stream needs: check source.token and the private app's scopes")
                    .into(),
            ),
            s if is_retryable(s) => Step::Retry(HttpError::Status {
                call,
                status,
                code,
                message,
            }),
            _ => Step::Fail(
                HttpError::Status {
                    call,
                    status,
                    code,
                    message,
                }
                .into(),
            ),
        }
    }
}

fn is_retryable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        423 | 429 | 477 | 500 | 502 | 503 | 504 | 524
    )
}

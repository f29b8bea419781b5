//! `syncline ui`: a local, read-only status page of one pipeline, served over HTTP.
//!
//! Every request reads the streams' state from the stage (`status::from_state`): it never
//! takes a lease, never calls the source or the destination, and so can run beside a sync.
//! The page is rendered on the server (`page`, with an SVG chart from `chart`); it needs no
//! JavaScript and refreshes itself every few seconds. Every value goes through maud's
//! escaping, and the configuration is shown only as `config show` prints it, secrets masked.

mod chart;
mod page;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tracing::warn;

use crate::Result;
use crate::config::Config;
use crate::error::{Classified, ErrorKind};

/// What stops the page from being served.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error(
        "cannot listen on {addr}: pass another --listen address (e.g. 127.0.0.1:0 for any free port)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the status page's server stopped")]
    Serve(#[source] std::io::Error),
}

impl Classified for UiError {
    fn kind(&self) -> ErrorKind {
        match self {
            UiError::Bind { .. } => ErrorKind::Config,
            UiError::Serve(_) => ErrorKind::Transient,
        }
    }
}

/// The page as it is now: what `GET /` serves and `syncline status --html` writes.
pub async fn render(config: &Config) -> Result<String> {
    let streams = crate::status::from_state(config).await?;
    Ok(page::status_page(config, &streams, chrono::Utc::now()).into_string())
}

/// Serves the page on `listen` until Ctrl-C. Prints the address it listens on (the port
/// chosen when `listen` asks for port 0) as the first line on stdout.
pub async fn serve(config: Config, listen: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| UiError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(UiError::Serve)?;
    if !addr.ip().is_loopback() {
        // The page has no login: anyone who reaches the address sees the pipeline's status.
        warn!(%addr, "the status page is reachable from other machines");
    }
    println!("syncline ui: serving http://{addr}/ (read-only; Ctrl-C stops it)");
    let app = Router::new()
        .route("/", get(index))
        .fallback(not_found)
        .with_state(Arc::new(config));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(UiError::Serve)?;
    Ok(())
}

async fn index(State(config): State<Arc<Config>>) -> Response {
    match render(&config).await {
        Ok(html) => Html(html).into_response(),
        Err(err) => {
            warn!(error = %err, "cannot read the pipeline's state");
            let body = page::problem_page(
                "Cannot read the pipeline's state",
                &err.report(),
                chrono::Utc::now(),
            );
            (StatusCode::INTERNAL_SERVER_ERROR, Html(body.into_string())).into_response()
        }
    }
}

async fn not_found() -> Response {
    let body = page::problem_page(
        "Not found",
        "This page shows one thing: the pipeline's status, at /.",
        chrono::Utc::now(),
    );
    (StatusCode::NOT_FOUND, Html(body.into_string())).into_response()
}

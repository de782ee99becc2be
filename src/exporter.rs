//! The HTTP side: `/metrics` (or `--web.telemetry-path`) in the
//! Prometheus text format 0.0.4, `/healthz` and a landing page, served by
//! axum until the shutdown future resolves.
//!
//! Every scrape encodes the latest [`Report`] anew (nothing else is cached:
//! the poll loop replaces the report). An encoding failure answers 500, so
//! Prometheus records a failed scrape rather than an empty one.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use crate::agent::Report;

/// Content type of the Prometheus text format 0.0.4.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct AppState {
    latest: watch::Receiver<Arc<Report>>,
    telemetry_path: Arc<str>,
}

/// The answer to a scrape: 200 with the exposition, or 500 with the
/// error (and one warning in the log).
pub fn exposition(encoded: Result<String, String>) -> Response {
    match encoded {
        Ok(body) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], body).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "encoding /metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding metrics failed: {e}\n"),
            )
                .into_response()
        }
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    let report = st.latest.borrow().clone();
    let encoded = tokio::task::spawn_blocking(move || {
        crate::metrics::encode(&report.families()).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(format!("encoder task: {e}")));
    exposition(encoded)
}

async fn landing(State(st): State<AppState>) -> Html<String> {
    let p = &st.telemetry_path;
    Html(format!(
        "<!doctype html><html><head><title>sockscope</title></head><body>\
         <h1>sockscope</h1><p>Socket-state exporter for reverse-proxy hosts, version {}.</p>\
         <p><a href=\"{p}\">{p}</a> · <a href=\"/healthz\">/healthz</a></p></body></html>",
        env!("CARGO_PKG_VERSION")
    ))
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Builds the router: `telemetry_path` → the latest report's metrics,
/// `/healthz`, `/`.
pub fn router(latest: watch::Receiver<Arc<Report>>, telemetry_path: &str) -> Router {
    let state = AppState {
        latest,
        telemetry_path: telemetry_path.into(),
    };
    Router::new()
        .route(telemetry_path, get(metrics))
        .route("/healthz", get(healthz))
        .route("/", get(landing))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoding_failure_is_a_500_not_an_empty_200() {
        let ok = exposition(Ok("sockscope_build_info 1\n".into()));
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[header::CONTENT_TYPE], TEXT_FORMAT);
        let failed = exposition(Err("invalid label name".into()));
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}

//! The HTTP side: `/metrics` (or `--web.telemetry-path`), `/healthz` and a
//! landing page, served by axum until the shutdown future resolves.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;

/// Content type of the Prometheus text format 0.0.4.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct AppState {
    registry: prometheus::Registry,
    telemetry_path: Arc<str>,
}

async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let body = tokio::task::spawn_blocking(move || super::encode(&st.registry.gather()))
        .await
        .unwrap_or_else(|e| format!("# encoding failed: {e}\n"));
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], body)
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

/// Builds the router: `telemetry_path` → metrics, `/healthz`, `/`.
pub fn router(registry: prometheus::Registry, telemetry_path: &str) -> Router {
    let state = AppState {
        registry,
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

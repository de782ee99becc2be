//! The HTTP side: `/metrics` (or `--web.telemetry-path`) in the
//! Prometheus text format 0.0.4, `/healthz` and a landing page, as an axum
//! router that [`crate::web::conn::serve`] serves: gzip when the request
//! accepts it, basic auth when users are configured, at most
//! `max_requests` scrapes at once (503 beyond), and the configured extra
//! headers (`http_server_config.headers`) on every answer.
//!
//! Every scrape encodes the latest [`Report`] and the latest nginx scrape
//! of each target anew ([`Latest::view`]; nothing else is cached: the poll
//! loop and the scrape tasks replace them). An encoding failure answers 500, so
//! Prometheus records a failed scrape rather than an empty one.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Semaphore;
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::agent::Latest;
#[cfg(doc)]
use crate::agent::Report;
use crate::metrics::Families;
use crate::web::auth::{self, BasicAuth};
use crate::web::stats::{Rejected, WebStats};

/// Content type of the Prometheus text format 0.0.4.
pub(crate) const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct AppState {
    latest: Latest,
    telemetry_path: Arc<str>,
    stats: Arc<WebStats>,
}

/// How the router serves: the path, the scrape limit, the users.
pub struct RouterConfig {
    pub telemetry_path: String,
    /// Scrapes served at once (`--web.max-requests`); 0 = no limit.
    pub max_requests: usize,
    /// `basic_auth_users` (user → bcrypt hash); empty = no authentication.
    pub users: std::collections::BTreeMap<String, String>,
    /// The web server's counters, appended to every scrape.
    pub stats: Arc<WebStats>,
    /// `http_server_config.headers`: set on every response (401 and 503
    /// included) that does not carry the header already.
    pub headers: Vec<(HeaderName, HeaderValue)>,
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
    let view = st.latest.view();
    let stats = Arc::clone(&st.stats);
    let encoded = tokio::task::spawn_blocking(move || {
        let mut web = Families::new();
        stats.encode(&mut web);
        let mut families = view.families();
        families.extend(web.finish());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        crate::metrics::encode(&families).map_err(|e| e.to_string())
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

/// The scrape limit: 503 when `--web.max-requests` scrapes are served.
struct Limit {
    slots: Semaphore,
    stats: Arc<WebStats>,
}

async fn limit(State(l): State<Arc<Limit>>, req: Request, next: Next) -> Response {
    match l.slots.try_acquire() {
        Ok(_permit) => next.run(req).await,
        Err(_) => {
            l.stats.rejected(Rejected::MaxRequests);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many scrapes at once (--web.max-requests)\n",
            )
                .into_response()
        }
    }
}

/// Builds the router: `telemetry_path` → the latest report's and nginx
/// scrapes' metrics (and the web server's own), `/healthz`, `/`.
pub fn router(latest: Latest, cfg: RouterConfig) -> Router {
    let state = AppState {
        latest,
        telemetry_path: cfg.telemetry_path.as_str().into(),
        stats: Arc::clone(&cfg.stats),
    };
    let mut scrape = get(metrics);
    if cfg.max_requests > 0 {
        let l = Arc::new(Limit {
            slots: Semaphore::new(cfg.max_requests),
            stats: Arc::clone(&cfg.stats),
        });
        scrape = scrape.route_layer(middleware::from_fn_with_state(l, limit));
    }
    let mut router = Router::new()
        .route(&cfg.telemetry_path, scrape)
        .route("/healthz", get(healthz))
        .route("/", get(landing))
        .with_state(state);
    if !cfg.users.is_empty() {
        let users = Arc::new(BasicAuth::new(cfg.users, cfg.stats));
        router = router.layer(middleware::from_fn_with_state(users, auth::require));
    }
    router = router.layer(CompressionLayer::new());
    // Outermost, so that the 401 of basic auth and the 503 of the scrape
    // limit carry them too. exporter-toolkit sets them before its handler
    // runs, so a handler's own value would win: hence if_not_present.
    for (name, value) in cfg.headers {
        router = router.layer(SetResponseHeaderLayer::if_not_present(name, value));
    }
    router
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

    #[tokio::test]
    async fn extra_headers_on_every_answer_401_and_404_included() {
        use tower::ServiceExt;
        let latest = Latest::fixed(
            crate::agent::Report {
                namespaces: Vec::new(),
                netns: None,
                parts: Vec::new(),
            },
            Vec::new(),
        );
        let hash = bcrypt::hash("pw", 4).unwrap();
        let router = router(
            latest,
            RouterConfig {
                telemetry_path: "/metrics".into(),
                max_requests: 0,
                users: [("u".to_owned(), hash)].into(),
                stats: Arc::new(WebStats::default()),
                headers: vec![
                    (header::X_FRAME_OPTIONS, HeaderValue::from_static("deny")),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        HeaderValue::from_static("default-src 'none'"),
                    ),
                ],
            },
        );
        // "u:pw"
        let authorized = [("authorization", "Basic dTpwdw==")];
        for (path, auth, want) in [
            ("/healthz", &[][..], StatusCode::OK),
            ("/metrics", &[][..], StatusCode::UNAUTHORIZED),
            ("/metrics", &authorized[..], StatusCode::OK),
            ("/nowhere", &authorized[..], StatusCode::NOT_FOUND),
        ] {
            let mut req = axum::http::Request::get(path);
            for (k, v) in auth {
                req = req.header(*k, *v);
            }
            let resp = router
                .clone()
                .oneshot(req.body(axum::body::Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status(), want, "{path}");
            let h = resp.headers();
            assert_eq!(h[header::X_FRAME_OPTIONS], "deny", "{path}");
            assert_eq!(
                h[header::CONTENT_SECURITY_POLICY],
                "default-src 'none'",
                "{path}"
            );
        }
    }
}

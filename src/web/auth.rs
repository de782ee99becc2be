//! HTTP basic authentication against `basic_auth_users` (bcrypt hashes):
//! a request without valid credentials gets 401 with
//! `WWW-Authenticate: Basic`. `/healthz` is exempt (it says only `ok`), so
//! a liveness probe needs no password.
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10), so
//! verifications run on blocking threads, at most [`VERIFY_AT_ONCE`] at a
//! time, and a pair that verified is remembered (as exporter-toolkit
//! does) so a scraper's every request does not pay the cost again.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use tokio::sync::Semaphore;

use super::stats::{Rejected, WebStats};

/// bcrypt verifications running at once (the rest wait).
pub const VERIFY_AT_ONCE: usize = 2;
/// Verified (user, password) pairs remembered.
const CACHE_MAX: usize = 64;

/// The users and what has been verified.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<(String, String)>>,
    verifying: Semaphore,
    stats: Arc<WebStats>,
}

/// `user:password` of an `Authorization: Basic …` header.
pub fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>, stats: Arc<WebStats>) -> BasicAuth {
        BasicAuth {
            users,
            verified: Mutex::new(HashSet::new()),
            verifying: Semaphore::new(VERIFY_AT_ONCE),
            stats,
        }
    }

    /// True when `password` is `user`'s.
    pub async fn check(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let key = (user.to_owned(), password.to_owned());
        if self.cache().contains(&key) {
            return true;
        }
        let Ok(_permit) = self.verifying.acquire().await else {
            return false;
        };
        let (hash, pw) = (hash.clone(), password.to_owned());
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(pw, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if ok {
            let mut cache = self.cache();
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(key);
        }
        ok
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// 401 with the challenge.
pub fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"sockscope\"")],
        "Unauthorized\n",
    )
        .into_response()
}

/// The middleware: passes authenticated requests (and `/healthz`) on.
pub async fn require(State(auth): State<Arc<BasicAuth>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let ok = match credentials(req.headers()) {
        Some((user, password)) => auth.check(&user, &password).await,
        None => false,
    };
    if ok {
        next.run(req).await
    } else {
        auth.stats.rejected(Rejected::Unauthorized);
        unauthorized()
    }
}

#[cfg(test)]
#[path = "auth/tests.rs"]
mod tests;

//! HTTP basic authentication against `basic_auth_users` (bcrypt hashes):
//! a request without valid credentials gets 401 with
//! `WWW-Authenticate: Basic`. `/healthz` is exempt (it says only `ok`), so
//! a liveness probe needs no password.
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10), so
//! verifications run on blocking threads, at most [`VERIFY_AT_ONCE`] at a
//! time, and a pair that verified is remembered (as exporter-toolkit
//! does) so a scraper's every request does not pay the cost again.
//!
//! An unknown user costs what a wrong password costs: the password is
//! verified against a fixed dummy hash of the configured cost (as
//! exporter-toolkit does), so answer times do not tell which user names
//! exist.

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
pub(crate) const VERIFY_AT_ONCE: usize = 2;
/// Verified (user, password) pairs remembered.
const CACHE_MAX: usize = 64;

/// Salt and digest of the dummy hash that an unknown user's password is
/// verified against (no password matches it; its cost is the users').
const DUMMY_SALT_AND_DIGEST: &str = "sockscope.dummy.salt.Ono.user.has.this.password.hash.";

/// Checks a password against a bcrypt hash: [`bcrypt_verify`], or a
/// stand-in in tests.
pub type Verifier = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// `bcrypt::verify`, false on a malformed hash.
pub(crate) fn bcrypt_verify(password: &str, hash: &str) -> bool {
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// The dummy hash of `cost` ([`DUMMY_SALT_AND_DIGEST`]).
pub(crate) fn dummy_hash(cost: u32) -> String {
    format!("$2y${cost:02}${DUMMY_SALT_AND_DIGEST}")
}

/// The users and what has been verified.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Verified in place of an unknown user's hash: the highest cost among
    /// the users' hashes (they usually share one).
    dummy: String,
    verify: Verifier,
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
    /// `users` (name → bcrypt hash, as [`crate::web::config`] checked
    /// them), verified with bcrypt.
    pub fn new(users: BTreeMap<String, String>, stats: Arc<WebStats>) -> BasicAuth {
        BasicAuth::with_verifier(users, stats, Arc::new(bcrypt_verify))
    }

    /// [`BasicAuth::new`] with `verify` in place of bcrypt.
    pub(crate) fn with_verifier(
        users: BTreeMap<String, String>,
        stats: Arc<WebStats>,
        verify: Verifier,
    ) -> BasicAuth {
        let cost = users
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        BasicAuth {
            users,
            dummy: dummy_hash(cost),
            verify,
            verified: Mutex::new(HashSet::new()),
            verifying: Semaphore::new(VERIFY_AT_ONCE),
            stats,
        }
    }

    /// True when `password` is `user`'s. An unknown user goes through the
    /// same steps as a wrong password (the wait for a verification slot,
    /// one verification against the dummy hash) and is refused.
    pub async fn check(&self, user: &str, password: &str) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy.clone(), false),
        };
        let key = (user.to_owned(), password.to_owned());
        if known && self.cache().contains(&key) {
            return true;
        }
        let Ok(_permit) = self.verifying.acquire().await else {
            return false;
        };
        let (verify, pw) = (Arc::clone(&self.verify), password.to_owned());
        let matched = tokio::task::spawn_blocking(move || verify(&pw, &hash))
            .await
            .unwrap_or(false);
        let ok = matched && known;
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

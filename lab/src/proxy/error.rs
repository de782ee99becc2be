//! Why an upstream exchange failed, and the error pages the client gets.

use std::io;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::ProxyBody;

/// Why an upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    /// nginx's words: `connect() to 127.0.0.1:7100 failed (99: Cannot
    /// assign requested address)`.
    #[error("connect() to {addr} failed ({errno}: {reason})")]
    Io {
        addr: String,
        errno: i32,
        /// The error's text without std's " (os error N)" suffix.
        reason: String,
        #[source]
        source: io::Error,
    },
    /// No slot and connection within `--connect-timeout`.
    #[error("connect() to {0} timed out")]
    Timeout(String),
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        addr: String,
        #[source]
        source: hyper::Error,
    },
}

impl ConnectError {
    /// A failed `connect()` to `addr`, in nginx's words.
    pub(super) fn io(addr: String, source: io::Error) -> ConnectError {
        let mut reason = source.to_string();
        if let Some(at) = reason.find(" (os error ") {
            reason.truncate(at);
        }
        ConnectError::Io {
            addr,
            errno: source.raw_os_error().unwrap_or(0),
            reason,
            source,
        }
    }
}

/// Why an upstream request failed.
pub(super) enum SendError {
    Connect(ConnectError),
    Request(hyper::Error),
    /// No response head within `--read-timeout` of sending the request.
    Timeout,
}

impl SendError {
    /// The status the client gets (504 for the timeouts, else 502) and the
    /// message logged.
    pub(super) fn status_and_message(&self) -> (StatusCode, String) {
        match self {
            SendError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream timed out".into()),
            SendError::Connect(c @ ConnectError::Timeout(_)) => {
                (StatusCode::GATEWAY_TIMEOUT, c.to_string())
            }
            SendError::Connect(c) => (StatusCode::BAD_GATEWAY, c.to_string()),
            SendError::Request(e) => (StatusCode::BAD_GATEWAY, error_chain(e)),
        }
    }
}

/// An error and its sources: "connection closed before message completed",
/// "error reading a body from connection: Connection reset by peer".
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        s.push_str(": ");
        s.push_str(&err.to_string());
        cur = err.source();
    }
    s
}

/// nginx's error page for `status`, as `text/html`.
pub(super) fn error_page(status: StatusCode) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("");
    let body = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>sockscope</center>\r\n</body>\r\n</html>\r\n",
        code = status.as_u16()
    );
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    r
}

//! Header hygiene at each hop: hop-by-hop headers (RFC 9110 §7.6.1) are
//! never forwarded, and request targets are sent in origin form.

use hyper::Uri;
use hyper::header::{self, HeaderMap, HeaderName};

/// Headers that apply to one hop only, never forwarded (plus
/// `Keep-Alive`, which `http` has no constant for).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str() == "keep-alive"
}

/// Removes the hop-by-hop headers and those `Connection` names.
pub(super) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none: one pass over the few names present
    // instead of eight lookups.
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    if let Some(c) = h
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        for name in c.split(',') {
            h.remove(name.trim());
        }
    }
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
    h.remove("keep-alive");
}

/// Request headers: hop-by-hop ones go, but `Host` stays even when
/// `Connection` names it.
pub(super) fn strip_request_headers(h: &mut HeaderMap) {
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    let host = h.get(header::HOST).cloned();
    strip_hop_by_hop(h);
    if let Some(host) = host {
        h.insert(header::HOST, host);
    }
}

/// The request target in origin form (`/path?query`), as the upstream
/// expects it; an absolute-form target (`http://host/path`) is rewritten.
pub(super) fn origin_form(uri: Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri;
    }
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
    Uri::from(pq)
}

#[cfg(test)]
mod tests;

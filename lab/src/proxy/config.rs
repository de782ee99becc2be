//! The proxy's settings.

use std::time::Duration;

use crate::addr::Addr;

/// Proxy settings (the `sockscope proxy` flags).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Upstreams, used round-robin per request; at least one.
    pub upstreams: Vec<Addr>,
    /// Idle upstream connections kept per upstream (in each worker), least
    /// recently used closed first beyond; 0 = none: a new upstream
    /// connection per request, closed by the proxy after the response.
    pub keepalive: usize,
    /// How long an idle upstream connection is kept (checked four times
    /// per timeout, at least every 10 ms).
    pub keepalive_timeout: Duration,
    /// Open upstream connections per upstream; `None` = unbounded. At the
    /// cap a request waits for a slot within `connect_timeout`.
    pub max_upstream_connections: Option<usize>,
    /// Open client connections (over all workers); `None` = unbounded. At
    /// the cap the proxy stops calling `accept()`.
    pub max_connections: Option<usize>,
    /// Time to get a slot and connect to an upstream; past it the client
    /// gets a 504.
    pub connect_timeout: Duration,
    /// Time from sending the request to the upstream's response header
    /// (then 504), and the longest wait for more of a response body (then
    /// the client connection is cut).
    pub read_timeout: Duration,
    /// Request path (exact, without the query) answered with the
    /// stub_status page instead of being proxied; `None` = no page.
    pub status_path: Option<String>,
}

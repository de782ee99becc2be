//! One worker's keep-alive connections to one upstream (nginx's
//! `keepalive N`).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::task::AbortHandle;

use super::connect::UpstreamSender;

/// One worker's keep-alive connections to one upstream, least recently
/// used first: the idle ones and those busy with an exchange.
///
/// A connection stays here while it is in use: hyper marks it ready again
/// as soon as its connection task has read the whole response, so the next
/// request can take it at once, as nginx's event handler frees a keepalive
/// peer when the upstream response ends (waiting for the client's task to
/// run first lets other requests miss it and connect anew).
#[derive(Default)]
pub(super) struct Pool {
    conns: Mutex<VecDeque<PoolConn>>,
}

struct PoolConn {
    tx: UpstreamSender,
    task: AbortHandle,
    /// When it last took a request.
    used: Instant,
}

impl Pool {
    /// Sends the request on the most recently used idle connection; when
    /// none is idle, leaves it in `req`. Returns the response future and
    /// the handle that closes the connection.
    pub(super) fn try_send(
        &self,
        req: &mut Option<Request<Incoming>>,
    ) -> Option<(
        impl Future<Output = hyper::Result<Response<Incoming>>> + use<>,
        AbortHandle,
    )> {
        let mut conns = self.conns.lock().expect("pool lock");
        let i = conns.iter().rposition(|c| c.tx.is_ready())?;
        let mut c = conns.remove(i).expect("in range");
        let sent = c.tx.send_request(req.take()?);
        c.used = Instant::now();
        let task = c.task.clone();
        conns.push_back(c);
        Some((sent, task))
    }

    /// Adds a new connection (busy with its first request).
    pub(super) fn add(&self, tx: UpstreamSender, task: AbortHandle) {
        self.conns.lock().expect("pool lock").push_back(PoolConn {
            tx,
            task,
            used: Instant::now(),
        });
    }

    /// Keeps at most `max` idle connections, closing the least recently
    /// used ones beyond (nginx's `keepalive N`), and, with `timeout`, those
    /// idle for that long; forgets closed ones. Allocates nothing when
    /// there is nothing to close (once per request).
    pub(super) fn trim(&self, max: usize, timeout: Option<Duration>) {
        let now = Instant::now();
        let mut dropped = Vec::new();
        {
            let mut conns = self.conns.lock().expect("pool lock");
            let idle = conns.iter().filter(|c| c.tx.is_ready()).count();
            let mut excess = idle.saturating_sub(max);
            let mut i = 0;
            while i < conns.len() {
                let c = &conns[i];
                let close = if c.tx.is_ready() {
                    let expired = timeout.is_some_and(|t| now.duration_since(c.used) >= t);
                    if excess > 0 {
                        excess -= 1;
                        true
                    } else {
                        expired
                    }
                } else {
                    c.tx.is_closed()
                };
                if close {
                    dropped.extend(conns.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        // Dropping a sender closes its idle connection, outside the lock.
        drop(dropped);
    }

    /// Waits until every connection held has finished its exchange
    /// (hyper's `SendRequest::ready`: the whole response was read), so
    /// that each is idle; forgets those that closed meanwhile.
    #[cfg(test)]
    async fn settled(&self) {
        let conns = std::mem::take(&mut *self.conns.lock().unwrap());
        let mut kept = VecDeque::with_capacity(conns.len());
        for mut c in conns {
            if c.tx.ready().await.is_ok() {
                kept.push_back(c);
            }
        }
        let mut conns = self.conns.lock().unwrap();
        kept.extend(conns.drain(..));
        *conns = kept;
    }

    /// (idle, all) connections held.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let conns = self.conns.lock().unwrap();
        let idle = conns.iter().filter(|c| c.tx.is_ready()).count();
        (idle, conns.len())
    }
}

#[cfg(test)]
mod tests;

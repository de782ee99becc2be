//! The keep-alive pool, through a proxy and a `keepalive` upstream on the
//! test's runtime.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;

use crate::addr::{Addr, Listener, listen};
use crate::proxy::{Proxy, ProxyConfig, serve};
use crate::upstream::{self, Behavior};

fn cfg(upstream: Addr, keepalive: usize) -> ProxyConfig {
    ProxyConfig {
        upstreams: vec![upstream],
        keepalive,
        keepalive_timeout: Duration::from_secs(60),
        max_upstream_connections: None,
        max_connections: None,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        status_path: Some("/stub_status".into()),
    }
}

fn tcp_addr(l: &Listener) -> std::net::SocketAddr {
    match l {
        Listener::Tcp(l) => l.local_addr().unwrap(),
        Listener::Unix(_) => unreachable!(),
    }
}

/// A `--behavior keepalive` upstream and a proxy in front of it, both
/// on this runtime; returns the proxy and its address.
async fn lab(keepalive: usize) -> (Arc<Proxy>, std::net::SocketAddr) {
    let any: Addr = "127.0.0.1:0".parse().unwrap();
    let up = listen(&any, 64).unwrap();
    let up_addr = tcp_addr(&up);
    tokio::spawn(upstream::run(
        up,
        Behavior::Keepalive,
        std::future::pending(),
    ));
    let front = listen(&any, 64).unwrap();
    let front_addr = tcp_addr(&front);
    let proxy = Proxy::new(cfg(Addr::Tcp(up_addr), keepalive));
    tokio::spawn(serve(front, Arc::clone(&proxy), std::future::pending()));
    (proxy, front_addr)
}

/// `n` GETs on one keep-alive client connection; the bodies.
async fn client(addr: std::net::SocketAddr, path: &str, n: usize) -> Vec<String> {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut bodies = Vec::new();
    for _ in 0..n {
        let req = Request::get(path)
            .header(header::HOST, "lab")
            .body(Empty::<Bytes>::new())
            .unwrap();
        tx.ready().await.unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        bodies.push(String::from_utf8(body.to_vec()).unwrap());
    }
    bodies
}

fn pooled(p: &Proxy) -> (usize, usize) {
    p.pools[0].counts()
}

#[tokio::test]
async fn keepalive_pool_reuses_and_keeps_at_most_n_idle() {
    let (proxy, addr) = lab(2).await;
    // One client, one request at a time: a single upstream connection
    // serves them all.
    for b in client(addr, "/a", 5).await {
        assert_eq!(b.as_bytes(), upstream::BODY);
    }
    assert_eq!(pooled(&proxy), (1, 1));
    // Eight at once: up to eight upstream connections, two kept idle.
    let clients: Vec<_> = (0..8)
        .map(|_| tokio::spawn(client(addr, "/b", 20)))
        .collect();
    for c in clients {
        assert!(
            c.await
                .unwrap()
                .iter()
                .all(|b| b.as_bytes() == upstream::BODY)
        );
    }
    // Every upstream connection the eight opened finishes its last
    // exchange (the clients have their bodies; the connections' tasks
    // may still be reading the response ends): all idle, none closed.
    proxy.pools[0].settled().await;
    let (idle, opened) = pooled(&proxy);
    assert_eq!(idle, opened, "all idle once settled");
    assert!(opened >= 1);
    // nginx's keepalive 2: the two most recently used stay, or the one.
    proxy.pools[0].trim(2, None);
    let kept = opened.min(2);
    assert_eq!(pooled(&proxy), (kept, kept), "of {opened} opened");
    let page = client(addr, "/stub_status", 1).await.remove(0);
    // 5 + 8 × 20 proxied, and this one (nginx counts it too).
    assert!(page.contains(" 10 10 166 \nReading"), "{page}");
}

#[tokio::test]
async fn no_keepalive_keeps_no_connection() {
    let (proxy, addr) = lab(0).await;
    let bodies = client(addr, "/", 3).await;
    assert_eq!(bodies.len(), 3);
    assert_eq!(pooled(&proxy), (0, 0));
}

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::*;
use crate::addr::{Addr, listen};
use crate::upstream::{self, Behavior};

fn any() -> (Listener, std::net::SocketAddr) {
    let l = listen(&"127.0.0.1:0".parse::<Addr>().unwrap(), 64).unwrap();
    let Listener::Tcp(t) = &l else { unreachable!() };
    let a = t.local_addr().unwrap();
    (l, a)
}

/// A request on a kept-alive connection, its answer read.
async fn get(s: &mut tokio::net::TcpStream) -> String {
    s.write_all(b"GET / HTTP/1.1\r\nHost: lab\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn stop_closes_every_workers_connections() {
    let (l, addr) = any();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let run = tokio::spawn(upstream::run_workers(l, Behavior::Keepalive, 2, async {
        let _ = stop_rx.await;
    }));
    let mut conns = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(get(&mut s).await.ends_with("\r\n\r\nok\n"));
        conns.push(s);
    }
    stop_tx.send(()).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(5), run).await;
    assert_eq!(res.expect("stopped in time").unwrap(), Ok(()));
    // Kept alive until then, every connection now reads EOF.
    for mut s in conns {
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn a_worker_that_ends_is_an_error() {
    let (l, _) = any();
    let worker = |i| {
        move |_l: Listener| async move {
            if i == 1 {
                return;
            }
            std::future::pending().await
        }
    };
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        run_workers(l, 2, "test-worker", worker, std::future::pending()),
    )
    .await
    .expect("returned in time");
    assert_eq!(res, Err("worker 1 stopped".to_owned()));
}

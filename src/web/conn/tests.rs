use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn the_cap_evicts_the_longest_waiting_and_spares_requests() {
    let t = Tracker::default();
    let (a, ca) = t.admit(2).unwrap();
    let (_b, cb) = t.admit(2).unwrap();
    // a serves a request: not evictable; b waits.
    ca.request_started();
    let (_c, _cc) = t.admit(2).unwrap();
    assert!(cb.lock().evicted, "b waited longest without a request");
    assert!(!ca.lock().evicted);
    assert_eq!(t.len(), 2);
    // c still waits: evicted next. Then a and d serve: the next is refused.
    let (_d, cd) = t.admit(2).unwrap();
    cd.request_started();
    assert!(
        t.admit(2).is_none(),
        "every open connection serves a request"
    );
    // a's response written: a waits again and is evictable.
    ca.request_done();
    assert!(t.admit(2).is_some());
    assert!(ca.lock().evicted);
    t.remove(a);
}

/// At the cap, a connection younger than the grace is spared while an
/// older one waits: a new arrival in a flood evicts the newest, not the
/// scraper that connected first.
#[test]
fn the_cap_spares_the_youngest_waiting_connections() {
    let t = Tracker::default();
    let (_s, scraper) = t.admit(3).unwrap();
    let (_f1, f1) = t.admit(3).unwrap();
    let (_f2, f2) = t.admit(3).unwrap();
    // All three younger than the grace: the newest goes.
    let (_f3, f3) = t.admit(3).unwrap();
    assert!(f2.lock().evicted, "the newest waiting one");
    assert!(!scraper.lock().evicted && !f1.lock().evicted);
    // f1 has waited longer than the grace: it goes first now.
    f1.lock().waiting_since = Some(Instant::now() - EVICTION_GRACE - Duration::from_millis(1));
    let (_f4, _) = t.admit(3).unwrap();
    assert!(f1.lock().evicted, "the longest-stalled beyond the grace");
    assert!(!scraper.lock().evicted && !f3.lock().evicted);
}

async fn start(limits: Limits) -> (std::net::SocketAddr, Arc<WebStats>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(WebStats::default());
    let router = Router::new().route("/", axum::routing::get(|| async { "hi" }));
    let server = Server {
        router,
        tls: None,
        limits,
        stats: Arc::clone(&stats),
    };
    tokio::spawn(serve(listener, server, std::future::pending()));
    (addr, stats)
}

/// Reads until EOF (bounded: 5 s); what was read.
async fn read_to_eof(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

const LIMITS: Limits = Limits {
    read_header_timeout: Duration::from_millis(300),
    max_connections: 3,
    max_header_bytes: 16 * 1024,
};

#[tokio::test]
async fn a_stalled_header_is_closed_at_the_timeout_and_a_request_served() {
    let (addr, stats) = start(LIMITS).await;
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    assert_eq!(read_to_eof(&mut stalled).await, "");
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_to_eof(&mut ok).await.starts_with("HTTP/1.1 200"));
    let text = crate::metrics::encoded(|f| stats.encode(f));
    assert!(
        text.contains("sockscope_web_connections_closed_total{reason=\"header_timeout\"} 1\n"),
        "{text}"
    );
}

#[tokio::test]
async fn at_the_cap_the_oldest_stalled_goes_and_large_headers_get_431() {
    let (addr, stats) = start(LIMITS).await;
    let mut stalled = Vec::new();
    for _ in 0..LIMITS.max_connections {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        stalled.push(s);
    }
    // Wait until the server has them all (bounded).
    for _ in 0..200 {
        if stats.open() == LIMITS.max_connections as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_to_eof(&mut ok).await.starts_with("HTTP/1.1 200"));
    assert_eq!(
        read_to_eof(&mut stalled[0]).await,
        "",
        "the oldest was closed"
    );
    let mut big = TcpStream::connect(addr).await.unwrap();
    let header = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let _ = big.write_all(header.as_bytes()).await;
    assert!(read_to_eof(&mut big).await.starts_with("HTTP/1.1 431"));
    let text = crate::metrics::encoded(|f| stats.encode(f));
    assert!(
        !text.contains("sockscope_web_connections_closed_total{reason=\"evicted\"} 0\n"),
        "{text}"
    );
}

/// The agent's listener asks for a backlog the kernel caps at somaxconn
/// (tokio's bind, through mio, asks for std's 128): its accept-queue
/// limit, read back with inet_diag (the poller), is net.core.somaxconn.
#[tokio::test]
async fn the_listener_backlog_is_somaxconn() {
    use crate::collector::census::CensusPolicy;
    use crate::poller::{Config, Poller, SourceMode};
    use crate::source::ProcRoot;
    use crate::source::kernel::Kernel;
    let l = listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = l.local_addr().unwrap().port();
    // What tokio's bind gives, for comparison.
    let tokio_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tokio_port = tokio_l.local_addr().unwrap().port();
    let somaxconn: u64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut p = Poller::new(
        Config {
            source: SourceMode::Netlink,
            top_destinations: 20,
            max_listeners: 100_000,
            census: CensusPolicy::EVERY_POLL,
            inet_diag_any_family: true,
            netstat_with_census: false,
        },
        Kernel::new(ProcRoot::new("/proc")),
    );
    let sample = p.poll();
    let limit = |port: u16| {
        let name = crate::collector::listen_queue::ListenerKey::Tcp(([127, 0, 0, 1], port).into());
        sample
            .listeners
            .iter()
            .map(|l| &l.listener)
            .find(|l| l.listener == name)
            .expect("the listener is dumped")
            .limit
    };
    // 4096 by default: above the 128 of tokio's bind.
    assert_eq!(limit(port), Some(somaxconn));
    assert_eq!(limit(tokio_port), Some(somaxconn.min(128)));
}

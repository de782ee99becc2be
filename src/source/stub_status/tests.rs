use super::*;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// nginx 1.22.1 (Debian nginx-light), as served on loopback.
const REAL: &str = "Active connections: 291 \nserver accepts handled requests\n 16630948 16630948 31070465 \nReading: 6 Writing: 179 Waiting: 106 \n";

#[test]
fn parses_real_page() {
    let s = parse_stub_status(REAL.as_bytes()).unwrap();
    assert_eq!(
        s,
        StubStatus {
            active: 291,
            accepts: 16630948,
            handled: 16630948,
            requests: 31070465,
            reading: 6,
            writing: 179,
            waiting: 106
        }
    );
}

#[test]
fn large_counters_stay_exact() {
    let big = 9_007_199_254_740_000u64; // near 2^53: exact in f64 and in the text format
    let page = REAL.replace("31070465", &big.to_string());
    assert_eq!(parse_stub_status(page.as_bytes()).unwrap().requests, big);
    assert_eq!((big as f64).to_string(), big.to_string());
}

/// The lab proxy's page (`sockscope proxy --status-path`) reads back as
/// nginx's. It lives here because the lab crate cannot see this parser;
/// the lab checks the page byte for byte.
#[test]
fn stub_status_page_parses_as_nginx() {
    use std::sync::atomic::Ordering::Relaxed;
    let s = sockscope_lab::proxy::Stats::default();
    s.accepts.store(7, Relaxed);
    s.handled.store(7, Relaxed);
    s.requests.store(9, Relaxed);
    s.active.store(3, Relaxed);
    s.writing.store(1, Relaxed);
    let p = parse_stub_status(s.page().as_bytes()).unwrap();
    assert_eq!(
        (p.active, p.accepts, p.requests, p.writing, p.waiting),
        (3, 7, 9, 1, 2)
    );
}

#[test]
fn rejects_what_is_not_stub_status() {
    for bad in [
        "<html><body>Welcome to nginx!</body></html>",
        "Active connections: 1 \nserver accepts handled requests\n 1 1 ", // truncated
        &REAL.replace("291", "-3"),
        &REAL.replace("179", "many"),
        &format!("{REAL} extra"),
        "",
    ] {
        assert!(parse_stub_status(bad.as_bytes()).is_err(), "{bad:?}");
    }
    assert!(parse_stub_status(&[0xff, 0xfe]).is_err());
}

#[test]
fn target_uris() {
    let t: Target = "http://127.0.0.1:8080/stub_status".parse().unwrap();
    assert_eq!(
        (t.conn.clone(), t.path.as_str()),
        (Conn::Tcp("127.0.0.1:8080".into()), "/stub_status")
    );
    let t: Target = "unix:/run/nginx status.sock:/basic_status".parse().unwrap();
    assert_eq!(
        (t.conn.clone(), t.path.as_str()),
        (Conn::Unix("/run/nginx status.sock".into()), "/basic_status")
    );
    assert_eq!(t.to_string(), "unix:/run/nginx status.sock:/basic_status");
    for bad in [
        "https://x/status",
        "unix:relative.sock:/s",
        "unix:/no-path",
        "ftp://x/",
    ] {
        assert!(bad.parse::<Target>().is_err(), "{bad}");
    }
}

/// A port that is not 1-65535 is refused, not read as port 80.
#[test]
fn target_ports_out_of_range_are_refused() {
    for (uri, addr) in [
        ("http://127.0.0.1/x", "127.0.0.1:80"),
        ("http://127.0.0.1:65535/x", "127.0.0.1:65535"),
        ("http://[::1]:8080/x", "[::1]:8080"),
        ("http://[::1]/x", "[::1]:80"),
        ("http://localhost:1/x", "localhost:1"),
    ] {
        let t: Target = uri.parse().unwrap();
        assert_eq!(t.conn, Conn::Tcp(addr.into()), "{uri}");
    }
    for bad in [
        "http://127.0.0.1:99999/x",
        "http://127.0.0.1:65536/x",
        "http://127.0.0.1:2920x/x",
        "http://127.0.0.1:/x",
        "http://127.0.0.1:0/x",
        "http://[::1]:70000/x",
        "http://:8080/x",
    ] {
        let e = bad.parse::<Target>().unwrap_err();
        assert!(e.starts_with("--nginx.scrape-uri"), "{bad}: {e}");
        assert!(!e.contains('\n'), "{bad}: one line: {e}");
    }
}

proptest! {
    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_stub_status(&bytes);
    }

    #[test]
    fn round_trips_any_figures(v in proptest::array::uniform7(any::<u64>())) {
        let page = format!("Active connections: {} \nserver accepts handled requests\n {} {} {} \nReading: {} Writing: {} Waiting: {} \n",
            v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
        let s = parse_stub_status(page.as_bytes()).unwrap();
        prop_assert_eq!([s.active, s.accepts, s.handled, s.requests, s.reading, s.writing, s.waiting], v);
    }
}

/// A one-shot fake server on loopback: answers every connection with
/// `response` (raw bytes), or never answers when `None`.
async fn fake(response: Option<Vec<u8>>) -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                match response {
                    Some(r) => {
                        let _ = s.write_all(&r).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            });
        }
    });
    (format!("http://{addr}/stub_status"), h)
}

fn http(status: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

async fn scrape_once(uri: &str) -> TargetSample {
    let mut s = Scraper::new(uri.parse().unwrap());
    s.scrape(Duration::from_millis(500)).await
}

#[tokio::test]
async fn scrape_ok() {
    let (uri, _h) = fake(Some(http("200 OK", REAL.as_bytes()))).await;
    let mut s = Scraper::new(uri.parse().unwrap());
    let a = s.scrape(Duration::from_secs(2)).await;
    assert_eq!(a.status.unwrap().active, 291);
    assert!(a.errors_total.is_empty());
}

#[tokio::test]
async fn failures_are_classified() {
    let (uri, _h) = fake(Some(http("500 Internal Server Error", b"oops"))).await;
    assert_eq!(scrape_once(&uri).await.errors_total.get("status"), Some(&1));

    let (uri, _h) = fake(Some(http("200 OK", b"<html>hello</html>"))).await;
    let r = scrape_once(&uri).await;
    assert!(r.status.is_none());
    assert_eq!(r.errors_total.get("parse"), Some(&1));

    let garbage = vec![b'x'; 1 << 20]; // 1 MB
    let (uri, _h) = fake(Some(http("200 OK", &garbage))).await;
    assert_eq!(scrape_once(&uri).await.errors_total.get("body"), Some(&1));

    let (uri, _h) = fake(None).await; // accepts, never answers
    assert_eq!(
        scrape_once(&uri).await.errors_total.get("timeout"),
        Some(&1)
    );

    let (uri, _h) = fake(Some(b"SSH-2.0-OpenSSH\r\n".to_vec())).await;
    assert_eq!(scrape_once(&uri).await.errors_total.get("http"), Some(&1));

    // Connection refused: bind a port, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = scrape_once(&format!("http://127.0.0.1:{port}/s")).await;
    assert_eq!(r.errors_total.get("connect"), Some(&1));
}

#[tokio::test]
async fn scrapes_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nginx status.sock");
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            std::str::from_utf8(&buf[..n])
                .unwrap()
                .starts_with("GET /basic_status HTTP/1.1")
        );
        s.write_all(&http("200 OK", REAL.as_bytes())).await.unwrap();
    });
    let r = scrape_once(&format!("unix:{}:/basic_status", path.display())).await;
    assert_eq!(r.status.unwrap().requests, 31070465);
}

/// The log follows the reason: started before nginx it says "connect";
/// then a parse failure, a 404 and a timeout are each logged once, as is
/// the recovery; repeats of the same reason are not.
#[test]
fn the_log_says_when_the_reason_changes() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(sub);

    let target: Target = "http://127.0.0.1:8080/stub_status".parse().unwrap();
    let refused = ScrapeError::Connect(std::io::ErrorKind::ConnectionRefused.into());
    let parse = ScrapeError::Parse(parse_stub_status(b"<html>").unwrap_err());
    let status = ScrapeError::Status(404);
    let timeout = ScrapeError::Timeout(Duration::from_secs(2));
    let mut log = LogState::default();
    let steps: [(Result<(), &ScrapeError>, Option<Logged>); 10] = [
        (Err(&refused), Some(Logged::Failed("connect"))),
        (Err(&refused), None),
        (Err(&parse), Some(Logged::Failed("parse"))),
        (Err(&parse), None),
        (Err(&status), Some(Logged::Failed("status"))),
        (Err(&timeout), Some(Logged::Failed("timeout"))),
        (Err(&timeout), None),
        (Ok(()), Some(Logged::Recovered)),
        (Ok(()), None),
        (Err(&refused), Some(Logged::Failed("connect"))),
    ];
    for (i, (outcome, want)) in steps.into_iter().enumerate() {
        assert_eq!(log.record(&target, outcome), want, "step {i}");
    }
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text.matches("stub_status scrape failed").count(),
        5,
        "{text}"
    );
    assert_eq!(text.matches("stub_status scrape recovered").count(), 1);
    for reason in ["connect", "parse", "status", "timeout"] {
        assert!(
            text.contains(&format!("reason=\"{reason}\"")),
            "{reason} in {text}"
        );
    }
    assert!(text.contains("HTTP status 404"), "{text}");
}

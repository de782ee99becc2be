use super::*;
use crate::collector::census::CensusPolicy;
use crate::poller::{Config, SourceMode};
use crate::source::ProcRoot;
use crate::source::kernel::Kernel;
use crate::source::stub_status::Target;

fn fixture_poller() -> Poller {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc");
    Poller::new(
        Config {
            source: SourceMode::Procfs,
            top_destinations: 20,
            max_listeners: 200,
            census: CensusPolicy::EVERY_POLL,
            inet_diag_any_family: true,
            netstat_with_census: false,
        },
        Kernel::new(ProcRoot::new(root)),
    )
}

/// A target on a port nobody listens on: every scrape fails to connect.
fn refused_target() -> Target {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/stub_status")
        .parse()
        .unwrap()
}

/// A target that accepts the connection (the kernel does, from its
/// backlog) and never answers: every scrape runs into its timeout.
fn hanging_target() -> (std::net::TcpListener, Target) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = format!("http://127.0.0.1:{port}/stub_status")
        .parse()
        .unwrap();
    (l, t)
}

/// Waits for the poll loop's next report (within 10 s) and returns the view.
async fn next_view(latest: &mut Latest) -> View {
    tokio::time::timeout(Duration::from_secs(10), latest.changed())
        .await
        .expect("a poll within 10 s")
        .unwrap();
    latest.view()
}

/// The kernel poll keeps its clock whatever nginx does: with three
/// targets that hang until the 3 s scrape timeout, ten polls 50 ms apart
/// all come within less than one scrape timeout; the scrapes go on beside
/// them, each ending in a timeout, and `/metrics` shows each target's
/// latest scrape with its own timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_nginx_target_does_not_slow_the_poll() {
    let nginx_timeout = Duration::from_secs(3);
    let hanging: Vec<_> = (0..3).map(|_| hanging_target()).collect();
    let lp = PollLoop::new(
        Sampler::Own(Box::new(fixture_poller())),
        hanging
            .iter()
            .map(|(_, t)| Scraper::new(t.clone()))
            .collect(),
        Duration::from_millis(50),
        nginx_timeout,
    )
    .unwrap();
    let (mut latest, running) = lp.start().await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(running.run(async {
        let _ = stop_rx.await;
    }));

    let first = latest.view();
    for t in &first.nginx {
        assert_eq!(t.errors_total.get("timeout"), Some(&1), "the first scrape");
    }
    let started = std::time::Instant::now();
    let mut last_ts = first.report.namespaces[0].sample.timestamp;
    for n in 1..=10 {
        let v = next_view(&mut latest).await;
        let ts = v.report.namespaces[0].sample.timestamp;
        assert!(ts > last_ts, "poll {n}: a new poll");
        last_ts = ts;
    }
    let ten_polls = started.elapsed();
    assert!(
        ten_polls < nginx_timeout,
        "10 polls at 50 ms took {ten_polls:?}: the hanging targets held the poll"
    );

    // The scrapes go on, on their own: the next timeout of each target
    // shows up in the view, with a later timestamp than the first.
    let mut v = next_view(&mut latest).await;
    for _ in 0..400 {
        if v.nginx
            .iter()
            .all(|t| t.errors_total.get("timeout") == Some(&2))
        {
            break;
        }
        v = next_view(&mut latest).await;
    }
    for (t, f) in v.nginx.iter().zip(&first.nginx) {
        assert_eq!(t.status, None);
        assert!(t.timestamp > f.timestamp, "{}: a later scrape", t.target);
        assert!(t.duration_seconds >= nginx_timeout.as_secs_f64());
    }
    let text = crate::metrics::encode(&v.families()).unwrap();
    assert!(text.contains("sockscope_build_info{version="), "{text}");
    assert!(text.contains("sockscope_nginx_scrape_timestamp_seconds{target="));
    assert!(text.contains("sockscope_tcp_sockets{family=\"ipv4\""));

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the loop stops")
        .unwrap();
}

/// A target that refuses is scraped every interval on its own clock: its
/// connect failures keep counting up, one scrape at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_target_is_scraped_every_interval() {
    let lp = PollLoop::new(
        Sampler::Own(Box::new(fixture_poller())),
        vec![Scraper::new(refused_target())],
        Duration::from_millis(50),
        Duration::from_secs(2),
    )
    .unwrap();
    let (mut latest, running) = lp.start().await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(running.run(async {
        let _ = stop_rx.await;
    }));
    assert_eq!(latest.view().nginx[0].errors_total.get("connect"), Some(&1));
    let mut seen = 1;
    for _ in 0..400 {
        let v = next_view(&mut latest).await;
        let n = v.nginx[0].errors_total.get("connect").copied().unwrap();
        assert!(n >= seen, "the count never goes back");
        seen = n;
        if seen >= 4 {
            break;
        }
    }
    assert!(seen >= 4, "4 scrapes within 400 polls, got {seen}");
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the loop stops")
        .unwrap();
}

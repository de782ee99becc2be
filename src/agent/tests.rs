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

/// Each report carries a poll and the nginx scrape of the same tick: the
/// n-th report has the n-th failed scrape and a later poll timestamp than
/// the one before; stopping ends the loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clock_for_polls_and_scrapes() {
    let lp = PollLoop::new(
        Sampler::Own(Box::new(fixture_poller())),
        vec![Scraper::new(refused_target())],
        Duration::from_millis(50),
        Duration::from_secs(2),
    )
    .unwrap();
    let (mut rx, running) = lp.start().await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(running.run(async {
        let _ = stop_rx.await;
    }));

    let mut last_ts = 0.0;
    for n in 1..=4u64 {
        if n > 1 {
            tokio::time::timeout(Duration::from_secs(10), rx.changed())
                .await
                .expect("a tick within 10 s")
                .unwrap();
        }
        let r = rx.borrow_and_update().clone();
        assert_eq!(r.namespaces.len(), 1);
        let sample = &r.namespaces[0].sample;
        assert!(sample.timestamp > last_ts, "tick {n}: a new poll");
        last_ts = sample.timestamp;
        assert_eq!(r.nginx.len(), 1);
        assert_eq!(r.nginx[0].status, None);
        assert_eq!(
            r.nginx[0].errors_total.get("connect").copied(),
            Some(n),
            "tick {n}: this tick's scrape is in this tick's report"
        );
        let text = crate::metrics::encode(&r.families()).unwrap();
        assert!(text.contains("sockscope_build_info{version="), "{text}");
        assert!(text.contains("sockscope_nginx_up{target="));
        assert!(text.contains("sockscope_tcp_sockets{family=\"ipv4\""));
    }
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the loop stops")
        .unwrap();
}

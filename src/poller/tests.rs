use super::*;
use crate::collector::listen_queue::{Listener, ListenerKey, Proto};
use crate::model::TcpState;
use crate::source::ProcRoot;

fn poller_at(procfs: &std::path::Path, source: SourceMode, census: CensusPolicy) -> Poller {
    Poller::new(
        Config {
            source,
            top_destinations: 20,
            max_listeners: 100_000,
            census,
            inet_diag_any_family: true,
            netstat_with_census: false,
        },
        Kernel::new(ProcRoot::new(procfs)),
    )
}

fn poller(census: CensusPolicy) -> Poller {
    poller_at("/proc".as_ref(), SourceMode::Auto, census)
}

fn up(s: &Sample, id: SourceId) -> bool {
    s.sources.iter().any(|x| x.source == id && x.up)
}

fn listener_row(s: &Sample, port: u16) -> Option<&Listener> {
    let name = ListenerKey::Tcp(([127, 0, 0, 1], port).into());
    s.listeners
        .iter()
        .map(|l| &l.listener)
        .find(|l| l.proto == Proto::Tcp && l.listener == name)
}

/// Between censuses a poll dumps the listeners only: a listener and a
/// queued connection made after the census show at once, while the
/// census figures are carried unchanged.
#[test]
fn listener_tick_between_censuses() {
    let mut p = poller(CensusPolicy {
        cpu_budget_ratio: 1e-9,
        max_interval: Duration::from_secs(3600),
    });
    let first = p.poll();
    assert!(first.census.fresh, "the first poll takes a census");
    assert!(up(&first, SourceId::InetDiag));

    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let _queued = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();

    let second = p.poll();
    assert!(!second.census.fresh, "no census within the interval");
    assert_eq!(second.census.timestamp, first.census.timestamp);
    assert_eq!(second.tcp, first.tcp, "census figures are carried");
    assert_eq!(second.ephemeral, first.ephemeral);
    // Both families' listeners in one dump (the census's one-dump request
    // is up, asserted above, so the kernel serves it).
    for s in [SourceId::InetDiagListen, SourceId::UnixDiagListen] {
        assert!(up(&second, s), "{s} up in {:?}", second.sources);
    }
    let row = listener_row(&second, port).expect("the new listener is sampled");
    assert_eq!(row.length, 1, "its queued connection");
    assert_eq!(row.connected, 0, "the census never saw it: nothing carried");

    // A census on every poll sees everything fresh.
    let mut every = poller(CensusPolicy::EVERY_POLL);
    every.poll();
    let again = every.poll();
    assert!(again.census.fresh);
    assert!(
        !again
            .sources
            .iter()
            .any(|s| s.source.label().ends_with("_listen"))
    );
    assert_eq!(listener_row(&again, port).map(|r| r.length), Some(1));
}

/// One inet_diag dump for both families (`inet_diag`), or one per
/// family when that is off; both see a listener of each family.
#[test]
fn inet_diag_one_dump_or_per_family() {
    let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let v6 = std::net::TcpListener::bind("[::1]:0").unwrap();
    let (p4, p6) = (
        v4.local_addr().unwrap().port(),
        v6.local_addr().unwrap().port(),
    );
    for any_family in [true, false] {
        let mut p = poller(CensusPolicy::EVERY_POLL);
        p.cfg.inet_diag_any_family = any_family;
        p.chains = Chains::new(&p.cfg);
        let s = p.poll();
        let up: Vec<SourceId> = s
            .sources
            .iter()
            .filter(|x| x.up && x.source.label().starts_with("inet_diag"))
            .map(|x| x.source)
            .collect();
        let want: &[SourceId] = if any_family {
            &[SourceId::InetDiag]
        } else {
            &[SourceId::InetDiagIpv4, SourceId::InetDiagIpv6]
        };
        assert_eq!(up, want, "sources with any_family = {any_family}");
        assert!(listener_row(&s, p4).is_some(), "127.0.0.1:{p4}");
        let name6 = ListenerKey::Tcp(format!("[::1]:{p6}").parse().unwrap());
        assert!(
            s.listeners.iter().any(|l| l.listener.listener == name6),
            "{name6} with any_family = {any_family}"
        );
        assert!(s.tcp.family(Family::Ipv6).unwrap()[TcpState::Listen.index()] >= 1);
    }
}

/// procfs cannot dump listeners alone: every poll is a census.
#[test]
fn procfs_census_every_poll() {
    let mut p = poller(CensusPolicy {
        cpu_budget_ratio: 1e-9,
        max_interval: Duration::from_secs(3600),
    });
    p.cfg.source = SourceMode::Procfs;
    p.chains = Chains::new(&p.cfg);
    p.poll();
    let second = p.poll();
    assert!(second.census.fresh);
    assert!(up(&second, SourceId::ProcNetTcp));
}

/// Copies the fixture `/proc` tree of the golden test into a temp dir.
fn fixture_copy() -> tempfile::TempDir {
    fn copy(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &dest);
            } else {
                std::fs::copy(e.path(), dest).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc"),
        dir.path(),
    );
    dir
}

/// A kernel booted with `ipv6.disable=1` has no `/proc/net/tcp6`: that
/// is no IPv6 socket, not a failing source (so SockscopeSourceDown does
/// not fire for ever on such hosts).
#[test]
fn missing_tcp6_is_no_data_not_a_failure() {
    let dir = fixture_copy();
    std::fs::remove_file(dir.path().join("net/tcp6")).unwrap();
    let mut p = poller_at(dir.path(), SourceMode::Procfs, CensusPolicy::EVERY_POLL);
    let s = p.poll();
    assert!(up(&s, SourceId::ProcNetTcp6), "{:?}", s.sources);
    assert!(s.sources.iter().all(|x| x.up), "{:?}", s.sources);
    assert_eq!(s.tcp.ipv6, Some([0; TcpState::ALL.len()]));
    assert!(s.tcp.ipv4.unwrap().iter().sum::<u64>() > 0);
}

/// A source that fails is absent from the sample, not zero, and counted
/// by reason; the sources that work are unaffected.
#[test]
fn failing_sources_are_absent_and_counted() {
    let dir = fixture_copy();
    std::fs::remove_file(dir.path().join("net/unix")).unwrap();
    std::fs::write(dir.path().join("sys/net/core/somaxconn"), "lots\n").unwrap();
    let mut p = poller_at(dir.path(), SourceMode::Procfs, CensusPolicy::EVERY_POLL);
    p.poll();
    let s = p.poll();
    let status = |id| s.sources.iter().find(|x| x.source == id).unwrap();
    assert!(!status(SourceId::ProcNetUnix).up);
    assert_eq!(
        status(SourceId::ProcNetUnix).errors_total,
        vec![("enoent", 2)]
    );
    assert!(!status(SourceId::Sysctl).up);
    assert_eq!(status(SourceId::Sysctl).errors_total, vec![("parse", 2)]);
    assert!(status(SourceId::ProcNetTcp).up);
    assert_eq!(s.unix, None);
    assert_eq!(s.sysctls, None);
    assert_eq!(s.ephemeral, None, "no model without the sysctls");
    let text = crate::metrics::encoded(|f| s.encode(f));
    assert!(!text.contains("sockscope_unix_sockets"), "{text}");
    assert!(!text.contains("sockscope_sysctl_somaxconn"));
    assert!(text.contains("sockscope_tcp_sockets{family=\"ipv4\""));
}

/// Bound-only sockets are read on the first census, then when the next
/// census would find the figure older than `--census.max-interval`, and on
/// every census while a pool is near exhaustion.
#[test]
fn bound_only_cadence() {
    let max = Duration::from_secs(15);
    let t0 = Instant::now();
    let mut b = BoundOnly::default();
    assert!(b.due(t0, Duration::ZERO, max, false), "first census");
    b.read_at = Some(t0);
    let s = Duration::from_secs;
    assert!(!b.due(t0 + s(1), s(1), max, false));
    assert!(!b.due(t0 + s(13), s(1), max, false));
    assert!(
        b.due(t0 + s(14), s(1), max, false),
        "the next would be 15 s old"
    );
    assert!(b.due(t0 + s(6), s(9), max, false), "censuses 9 s apart");
    assert!(
        b.due(t0 + s(1), s(1), max, true),
        "near exhaustion: every census"
    );
}

use super::*;

fn readers(c: &TcpChain) -> Vec<TcpReader> {
    let mut v = Vec::new();
    if c.any {
        v.push(TcpReader::InetDiagAny);
    }
    v.extend(c.per_family.iter().flatten().copied());
    v
}

/// The chains `--source` builds: netlink first, procfs as the fallback
/// of a census only (it cannot list the listeners alone).
#[test]
fn chains_follow_source_mode_and_read() {
    use Family::{Ipv4, Ipv6};
    use TcpReader::{InetDiag, InetDiagAny, ProcNetTcp};
    let census = Read::Census { bound: false };
    let cases = [
        (
            SourceMode::Auto,
            census,
            vec![
                InetDiagAny,
                InetDiag(Ipv4),
                ProcNetTcp(Ipv4),
                InetDiag(Ipv6),
                ProcNetTcp(Ipv6),
            ],
        ),
        (
            SourceMode::Auto,
            Read::Listeners,
            vec![InetDiagAny, InetDiag(Ipv4), InetDiag(Ipv6)],
        ),
        (
            SourceMode::Netlink,
            census,
            vec![InetDiagAny, InetDiag(Ipv4), InetDiag(Ipv6)],
        ),
        (
            SourceMode::Procfs,
            census,
            vec![ProcNetTcp(Ipv4), ProcNetTcp(Ipv6)],
        ),
        (SourceMode::Procfs, Read::Listeners, vec![]),
    ];
    for (mode, read, want) in cases {
        assert_eq!(
            readers(&TcpChain::new(mode, true, read)),
            want,
            "{mode:?} {read:?}"
        );
    }
    assert_eq!(
        readers(&TcpChain::new(SourceMode::Auto, false, census))[0],
        InetDiag(Ipv4),
        "no one-dump reader when disabled"
    );
    assert_eq!(
        UnixChain::new(SourceMode::Auto, census).readers,
        [UnixReader::UnixDiag, UnixReader::ProcNetUnix]
    );
    assert_eq!(
        UnixChain::new(SourceMode::Auto, Read::Listeners).readers,
        [UnixReader::UnixDiag]
    );
    assert!(
        UnixChain::new(SourceMode::Procfs, Read::Listeners)
            .readers
            .is_empty()
    );
}

/// Every reader names its `source` label; listener reads have their own.
#[test]
fn reader_ids() {
    let c = Read::Census { bound: true };
    assert_eq!(TcpReader::InetDiagAny.id(c), SourceId::InetDiag);
    assert_eq!(
        TcpReader::InetDiagAny.id(Read::Listeners),
        SourceId::InetDiagListen
    );
    assert_eq!(
        TcpReader::InetDiag(Family::Ipv6).id(Read::Listeners),
        SourceId::InetDiagIpv6Listen
    );
    assert_eq!(
        TcpReader::ProcNetTcp(Family::Ipv6).id(c),
        SourceId::ProcNetTcp6
    );
    assert!(!TcpReader::ProcNetTcp(Family::Ipv4).netlink());
}

/// A census through a chain whose netlink readers fail falls back to
/// procfs per family, and says so: every attempt's status, in order.
#[test]
fn a_failing_reader_falls_back_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("net")).unwrap();
    std::fs::write(
        dir.path().join("net/tcp"),
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n",
    )
    .unwrap();
    // tcp6 unreadable (a directory: EISDIR): that family stays unread.
    std::fs::create_dir(dir.path().join("net/tcp6")).unwrap();
    let mut kernel = Kernel::new(crate::source::ProcRoot::new(dir.path()));
    let mut health = Health::default();
    let mut sources = Vec::new();
    #[derive(Default)]
    struct Count(u64, Vec<Family>);
    impl TcpObserver for Count {
        fn observe(&mut self, _: &TcpSocket) {
            self.0 += 1;
        }
        fn family_read(&mut self, f: Family, _: TcpReader) {
            self.1.push(f);
        }
        fn merge(&mut self, o: Count) {
            self.0 += o.0;
            self.1.extend(o.1);
        }
    }
    let chain = TcpChain::new(SourceMode::Procfs, true, Read::Census { bound: false });
    let got = chain.read(&mut kernel, &mut health, &mut sources, &Count::default);
    assert_eq!(got.observer.0, 1);
    assert_eq!(got.observer.1, [Family::Ipv4]);
    assert_eq!(got.read, [true, false]);
    assert!(!got.netlink && !got.whole());
    let ids: Vec<(SourceId, bool)> = sources.iter().map(|s| (s.source, s.up)).collect();
    assert_eq!(
        ids,
        [(SourceId::ProcNetTcp, true), (SourceId::ProcNetTcp6, false)]
    );
}

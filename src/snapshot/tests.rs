use super::*;
use crate::collector::census::CensusInfo;
use crate::collector::tcp_states::TcpStates;

#[test]
fn fit_keeps_the_tail() {
    assert_eq!(fit("/run/app.sock", 36), "/run/app.sock");
    let long = "/var/lib/some/very/long/path/to/the/application/socket.sock";
    let f = fit(long, 20);
    assert_eq!(f.chars().count(), 20);
    assert!(f.ends_with("socket.sock"));
}

/// A sample whose every source failed.
fn nothing_read() -> Sample {
    Sample {
        timestamp: 1.0,
        census: CensusInfo {
            timestamp: 1.0,
            duration_seconds: 0.0,
            interval_seconds: 0.0,
            fresh: true,
        },
        tcp: TcpStates::default(),
        unix: None,
        listeners: Vec::new(),
        ephemeral: None,
        sysctls: None,
        netstat: None,
        sockstat: None,
        sources: Vec::new(),
        parts: Vec::new(),
    }
}

/// What was not read is `-` and named, never 0.
#[test]
fn unread_figures_are_dashes_not_zeros() {
    let s = nothing_read();
    assert_eq!(
        unread(&s),
        [
            "tcp.ipv4", "tcp.ipv6", "unix", "sysctls", "netstat", "sockstat"
        ]
    );
    let text = render(&s, false);
    assert!(
        text.contains("  established                        -          -\n"),
        "{text}"
    );
    assert!(
        text.contains("  connected                          -          -          -\n"),
        "{text}"
    );
    assert!(!text.contains(" 0\n"), "no figure shown as 0:\n{text}");
    assert!(
        text.contains(
            "Not read (shown as -): tcp.ipv4, tcp.ipv6, unix, sysctls, netstat, sockstat"
        ),
        "{text}"
    );
    let v = serde_json::to_value(Json {
        netns: None,
        sample: &s,
        unread: unread(&s),
    })
    .unwrap();
    assert!(v["tcp"]["ipv4"].is_null() && v["unix"].is_null(), "{v}");
    assert_eq!(v["unread"][2], "unix");

    // A family read with no socket is 0, not unread.
    let mut s = nothing_read();
    s.tcp.read(Family::Ipv6);
    assert_eq!(unread(&s)[0], "tcp.ipv4");
    assert!(!unread(&s).contains(&"tcp.ipv6"));
}

#[test]
fn namespace_headers_mark_the_agents_own() {
    let info = NetnsInfo {
        inode: 4026531840,
        name: String::new(),
        hostname: "host".into(),
        pod_uid: "3f1c2d4e-5a6b-7c8d-9e0f-112233445566".into(),
        pid: Some(1),
        comm: "systemd".into(),
        agent: true,
    };
    let ns = NamespaceSample {
        netns: Some(info),
        sample: nothing_read(),
    };
    let stats = NetnsStats {
        discovered: 3,
        over_limit: 1,
        errors_total: vec![("eacces", 2)],
    };
    let text = render_all(std::slice::from_ref(&ns), &stats, false);
    assert!(
        text.starts_with("Network namespaces: 3 found, 1 shown, 1 over the limit, 2 failed reads"),
        "{text}"
    );
    assert!(
        text.contains(
            "netns 4026531840 (the agent's own) hostname=host pod_uid=3f1c2d4e-5a6b-7c8d-9e0…\n"
        ),
        "{text}"
    );
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "too wide: {line:?}");
    }
    let v = serde_json::to_value(JsonAll {
        namespaces: vec![Json::new(&ns)],
        discovery: &stats,
    })
    .unwrap();
    assert_eq!(v["namespaces"][0]["netns"]["agent"], true);
    assert_eq!(v["namespaces"][0]["netns"]["inode"], 4026531840u64);
    assert_eq!(v["discovery"]["errors_total"]["eacces"], 2);
}

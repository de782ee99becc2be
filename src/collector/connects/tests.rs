use super::*;
use crate::metrics::encoded;

fn table(rows: &[(&str, &str, u64)]) -> Connects {
    let mut c = Connects::default();
    for (dest, result, n) in rows {
        c.add("127.0.0.1".into(), (*dest).into(), result, *n);
    }
    c
}

fn get(c: &Connects, dest: &str, result: &str) -> Option<u64> {
    let ip = if dest == OTHER { OTHER } else { "127.0.0.1" };
    c.pools
        .get(&(ip.to_owned(), dest.to_owned()))
        .and_then(|r| r.get(result).copied())
}

/// The cap keeps the pools with the most failed connects; the rest sum
/// into `other` per result, and no counter goes backwards as pools move
/// across the cap.
#[test]
fn cap_keeps_failing_pools_and_other_is_monotonic() {
    let mut caps = HashMap::new();
    let mut poll = |rows: &[(&str, &str, u64)]| {
        let mut c = table(rows);
        cap_across(&mut [(1, &mut c)], 1, &mut caps);
        c
    };
    // a: 100 established; b: 5 eaddrnotavail. b is kept (failures first).
    let c = poll(&[("a:1", "established", 100), ("b:1", "eaddrnotavail", 5)]);
    assert_eq!(get(&c, "b:1", "eaddrnotavail"), Some(5));
    assert_eq!(get(&c, "a:1", "established"), None);
    assert_eq!(get(&c, OTHER, "established"), Some(100));
    // a starts failing more than b: a kept, b beyond; a's 120 established
    // stay in its own row, other keeps its 100 and adds what b grew by
    // since its own row last showed it (5 → 7).
    let c = poll(&[
        ("a:1", "established", 120),
        ("a:1", "econnrefused", 50),
        ("b:1", "eaddrnotavail", 7),
    ]);
    assert_eq!(get(&c, "a:1", "established"), Some(120));
    assert_eq!(get(&c, OTHER, "established"), Some(100));
    assert_eq!(get(&c, OTHER, "eaddrnotavail"), Some(2));
    // b grows by 3 beyond the cap: other by 3.
    let c = poll(&[
        ("a:1", "established", 121),
        ("a:1", "econnrefused", 50),
        ("b:1", "eaddrnotavail", 10),
    ]);
    assert_eq!(get(&c, OTHER, "eaddrnotavail"), Some(5));
    assert_eq!(get(&c, OTHER, "established"), Some(100));
}

/// Across namespaces: one cap for all, an `other` row per namespace.
#[test]
fn cap_across_namespaces() {
    let mut caps = HashMap::new();
    let mut x = table(&[("a:1", "eaddrnotavail", 9), ("b:1", "established", 1)]);
    let mut y = table(&[("c:1", "econnrefused", 3)]);
    cap_across(&mut [(1, &mut x), (2, &mut y)], 2, &mut caps);
    assert_eq!(get(&x, "a:1", "eaddrnotavail"), Some(9));
    assert_eq!(get(&y, "c:1", "econnrefused"), Some(3));
    assert_eq!(get(&x, OTHER, "established"), Some(1));
    assert!(y.pools.len() == 1, "{y:?}");
    // A namespace gone: its caps are forgotten.
    cap_across(&mut [(1, &mut x)], 2, &mut caps);
    assert!(!caps.contains_key(&2));
}

#[test]
fn encoded_families() {
    let c = table(&[("127.0.0.1:7100", "eaddrnotavail", 13)]);
    let text = encoded(|o| {
        c.encode(o);
        EbpfHealth(EbpfStats {
            programs: 1,
            map_entries: 1,
            map_max_entries: 16384,
            events_total: 13,
            lost_total: 0,
            run_time_seconds: None,
            run_count: None,
        })
        .encode(o);
    });
    assert!(text.contains(
        "sockscope_connects_total{local_ip=\"127.0.0.1\",destination=\"127.0.0.1:7100\",result=\"eaddrnotavail\"} 13"
    ), "{text}");
    assert!(text.contains("sockscope_ebpf_map_max_entries{map=\"flows\"} 16384"));
    assert!(text.contains("sockscope_ebpf_programs 1"));
    assert!(
        !text.contains("sockscope_ebpf_program_run_seconds_total"),
        "absent without --ebpf.kernel-stats"
    );
}

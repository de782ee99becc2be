//! Every input under `tests/fixtures/fuzz/<target>/` -- the fuzzers' seeds
//! and each crash a fuzzer found (`scripts/fuzz`, TESTING.md) -- through
//! the parser of that target, on stable Rust: each must parse or be
//! rejected, never panic. The fuzz targets (`fuzz/fuzz_targets/`) call the
//! same functions the same way.

use std::path::Path;

use sockscope::model::Family;
use sockscope::source::counters::{Netstat, Sockstat};
use sockscope::source::procfs::{parse_tcp, parse_tcp_line, parse_unix, parse_unix_line};
use sockscope::source::sock_diag::{Frame, decode_inet, decode_unix, walk_frames};
use sockscope::source::stub_status::parse_stub_status;
use sockscope::source::sysctl::{parse_port_list, parse_port_range};
use sockscope::web::config::WebConfig;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fuzz");

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(FIXTURES).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut v: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

fn proc_net_tcp(data: &[u8]) {
    for family in [Family::Ipv4, Family::Ipv6] {
        let mut visited = 0u64;
        let stats = parse_tcp(family, data, &mut |_| visited += 1).unwrap();
        let lines = data.split(|&b| b == b'\n').count() as u64;
        assert!(visited + stats.parse_errors <= lines);
        for line in data.split(|&b| b == b'\n') {
            let _ = parse_tcp_line(family, line);
        }
    }
}

fn proc_net_unix(data: &[u8]) {
    let mut visited = 0u64;
    let stats = parse_unix(data, &mut |_| visited += 1).unwrap();
    let lines = data.split(|&b| b == b'\n').count() as u64;
    assert!(visited + stats.parse_errors <= lines);
    for line in data.split(|&b| b == b'\n') {
        let _ = parse_unix_line(line);
    }
}

fn counters(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Netstat::parse(text);
        let _ = Sockstat::parse(text);
    }
}

/// Returns the number of socket messages framed.
fn sock_diag(data: &[u8]) -> usize {
    let (seq, buf) = match data.split_first_chunk::<4>() {
        Some((s, rest)) => (u32::from_ne_bytes(*s), rest),
        None => (0, data),
    };
    let mut sockets = 0;
    let _ = walk_frames(buf, seq, |frame| {
        if let Frame::Socket(payload) = frame {
            sockets += 1;
            let _ = decode_inet(payload);
            let _ = decode_unix(payload);
        }
    });
    let _ = decode_inet(data);
    let _ = decode_unix(data);
    sockets
}

fn sysctl(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(r) = parse_port_range(text) {
            assert!(r.first() <= r.last());
        }
        if let Some(list) = parse_port_list(text) {
            assert!(list.iter().all(|&(a, b)| a <= b));
        }
    }
}

/// As `fuzz/fuzz_targets/web_config.rs`: a problem is one line.
fn web_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(e) = WebConfig::parse(text, Path::new("/nonexistent"))
    {
        assert!(!e.contains(['\n', '\r']), "one line: {e:?}");
    }
}

#[test]
fn fuzz_fixtures_never_panic() {
    let mut n = 0;
    for (target, run) in [
        ("proc_net_tcp", proc_net_tcp as fn(&[u8])),
        ("proc_net_unix", proc_net_unix),
        ("counters", counters),
        ("sock_diag", |d| {
            sock_diag(d);
        }),
        ("stub_status", |d| {
            let _ = parse_stub_status(d);
        }),
        ("sysctl", sysctl),
        ("web_config", web_config),
    ] {
        for (name, data) in inputs(target) {
            println!("{target}: {name} ({} bytes)", data.len());
            run(&data);
            n += 1;
        }
    }
    assert!(n >= 4, "fixtures found: {n}");
}

/// The sock_diag seeds are real dumps (kernel 6.18, a private network
/// namespace): each decodes, socket by socket, without a parse error.
#[test]
fn sock_diag_seeds_are_real_dumps() {
    for (name, data) in inputs("sock_diag")
        .into_iter()
        .filter(|(n, _)| n.contains("/dump-"))
    {
        let (seq, buf) = data.split_first_chunk::<4>().unwrap();
        let mut decoded = 0;
        let done = walk_frames(buf, u32::from_ne_bytes(*seq), |f| {
            if let Frame::Socket(p) = f {
                if name.contains("unix") {
                    decode_unix(p).unwrap();
                } else {
                    decode_inet(p).unwrap();
                }
                decoded += 1;
            }
        })
        .unwrap();
        assert!(done, "{name}: ends with NLMSG_DONE");
        assert!(decoded >= 4, "{name}: {decoded} sockets");
    }
}

/// The web config seeds (`tests/fixtures/fuzz/web_config/seed-*`) are
/// real files: each parses, except the one of refused keys.
#[test]
fn web_config_seeds_parse() {
    let mut n = 0;
    for (name, data) in inputs("web_config")
        .into_iter()
        .filter(|(n, _)| n.contains("/seed-"))
    {
        let r = WebConfig::parse(
            std::str::from_utf8(&data).unwrap(),
            Path::new("/nonexistent"),
        );
        assert_eq!(r.is_ok(), !name.contains("refused"), "{name}: {r:?}");
        n += 1;
    }
    assert!(n >= 5, "seeds found: {n}");
}

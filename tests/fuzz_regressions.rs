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

/// Every input of `target`'s directory, sorted by path. A missing
/// directory fails: a target without inputs would replay nothing.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(FIXTURES).join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (every fuzz target has its inputs)", dir.display()));
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

/// A fuzz target's name, the function it calls, and the floor of its
/// minimised corpus (`min-*` files; see TESTING.md, "Fuzzing").
type Target = (&'static str, fn(&[u8]), usize);

/// Every target.
const TARGETS: [Target; 7] = [
    ("proc_net_tcp", proc_net_tcp, 80),
    ("proc_net_unix", proc_net_unix, 50),
    ("counters", counters, 25),
    (
        "sock_diag",
        |d| {
            sock_diag(d);
        },
        25,
    ),
    (
        "stub_status",
        |d| {
            let _ = parse_stub_status(d);
        },
        25,
    ),
    ("sysctl", sysctl, 40),
    ("web_config", web_config, 300),
];

/// Every target replays its own corpus (its committed minimised corpus,
/// seeds and crashes), each input through the function its fuzz target
/// calls: never a panic. Each target has at least its floor of minimised
/// inputs, so none replays nothing.
#[test]
fn fuzz_fixtures_never_panic() {
    let targets: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/fuzz_targets"))
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
    for t in &targets {
        assert!(
            TARGETS.iter().any(|(name, _, _)| name == t),
            "fuzz target {t} has no replay here"
        );
    }
    for (target, run, floor) in TARGETS {
        let inputs = inputs(target);
        let minimised = inputs.iter().filter(|(n, _)| n.contains("/min-")).count();
        assert!(
            minimised >= floor,
            "{target}: {minimised} minimised inputs, fewer than its floor {floor}"
        );
        for (name, data) in &inputs {
            println!("{target}: {name} ({} bytes)", data.len());
            run(data);
        }
    }
}

/// The sock_diag seeds are real dumps (kernel 6.18, a private network
/// namespace): each decodes, socket by socket, without a parse error.
#[test]
fn sock_diag_seeds_are_real_dumps() {
    let dumps: Vec<_> = inputs("sock_diag")
        .into_iter()
        .filter(|(n, _)| n.contains("/dump-"))
        .collect();
    let names: Vec<&str> = dumps
        .iter()
        .map(|(n, _)| n.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["dump-tcp4.bin", "dump-tcp6.bin", "dump-unix.bin"],
        "the three real dumps"
    );
    for (name, data) in dumps {
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

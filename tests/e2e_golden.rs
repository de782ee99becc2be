//! The binary against a fixture `/proc` tree: its `/metrics` output must
//! equal `tests/e2e-output.txt` (`UPDATE_GOLDEN=1` rewrites it), pass
//! `promtool check metrics`, and parse with Python's `prometheus_client`.
//! Also: bad flags and unusable inputs fail with a one-line error, and a
//! missing source is a metric, not a failed scrape.

mod common;

use common::agent::Agent;
use common::prereq;
use common::process::run_with_stdin;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e-output.txt");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proc");

/// Replaces values that change run to run (timings, timestamps).
fn stable(text: &str) -> String {
    text.lines()
        .map(|l| {
            let volatile = [
                "sockscope_source_duration_seconds{",
                "sockscope_last_poll_timestamp_seconds ",
                "sockscope_census_timestamp_seconds ",
                "sockscope_census_interval_seconds ",
            ];
            if volatile.iter().any(|p| l.starts_with(p)) {
                let (series, _) = l.rsplit_once(' ').expect("sample line has a value");
                format!("{series} <volatile>")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// One scrape of the agent on the fixture tree with `--source procfs` and
/// `--ebpf off` (the fixture is the census's input; the eBPF families'
/// exact values, promtool and the Python parser on them are
/// tests/netns_ebpf.rs's, in a private namespace),
/// after exactly one poll (the agent polls once before it serves; an hour
/// to the next): counters such as `sockscope_parse_errors_total` grow per
/// poll, so a 100 ms interval made the golden depend on the machine's
/// speed (3 polls before the scrape under an emulated CPU).
fn fixture_scrape() -> String {
    Agent::start(&[
        "--path.procfs",
        FIXTURE,
        "--source",
        "procfs",
        "--poll.interval",
        "1h",
        "--ebpf",
        "off",
    ])
    .scrape()
}

#[test]
fn golden_metrics_from_fixture_procfs() {
    let body = fixture_scrape();
    // procfs cannot dump listeners alone: every poll takes the census.
    let value = |name: &str| -> f64 {
        let line = body
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {body}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    };
    assert_eq!(
        value("sockscope_census_timestamp_seconds "),
        value("sockscope_last_poll_timestamp_seconds "),
        "with --source procfs every poll is a census"
    );
    let got = stable(&body);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &got).unwrap();
    }
    let want =
        std::fs::read_to_string(GOLDEN).expect("golden file exists (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(
        got, want,
        "metrics differ from {GOLDEN}; rerun with UPDATE_GOLDEN=1 if intended"
    );

    // Spot checks that the golden file itself says the right things.
    for line in [
        "sockscope_tcp_sockets{family=\"ipv4\",state=\"time_wait\"} 4",
        "sockscope_listen_queue_length{proto=\"tcp\",listener=\"127.0.0.1:8080\"} 9",
        "sockscope_listen_connections{proto=\"tcp\",listener=\"127.0.0.1:8080\",state=\"connecting\"} 9",
        "sockscope_parse_errors_total{source=\"proc_net_tcp\"} 1",
        "sockscope_source_up{source=\"proc_net_tcp\"} 1",
        "sockscope_sockstat_tcp_tw 4",
    ] {
        assert!(got.contains(line), "missing {line}");
    }
    // procfs has no accept-queue limit: the series is absent, not zero.
    assert!(!got.contains("sockscope_listen_queue_limit{"));
}

#[test]
#[ignore = "needs promtool (Debian prometheus): ./scripts/test installs it"]
fn golden_passes_promtool_check_metrics() {
    let body = fixture_scrape();
    let (ok, out) = run_with_stdin("promtool", &["check", "metrics"], &body);
    assert!(ok && out.trim().is_empty(), "promtool check metrics: {out}");
}

#[test]
#[ignore = "needs python3 with prometheus_client: ./scripts/test installs it"]
fn golden_parses_with_prometheus_client() {
    let body = fixture_scrape();
    prereq::python_with(&["prometheus_client.parser"]);
    let script = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\n\
                  fams = list(p(sys.stdin.read()))\nassert len(fams) > 20, len(fams)\nprint(len(fams))";
    let (ok, out) = run_with_stdin("python3", &["-c", script], &body);
    assert!(ok, "prometheus_client failed to parse the output: {out}");
    let families: usize = out.trim().parse().expect("a family count");
    assert!(families > 20, "{families} families");
}

#[test]
fn missing_source_is_a_metric_not_a_failed_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A copy of the fixture without net/tcp6 (a kernel booted with
    // ipv6.disable=1), without net/unix and with a garbage sysctl.
    copy_tree(std::path::Path::new(FIXTURE), root);
    std::fs::remove_file(root.join("net/tcp6")).unwrap();
    std::fs::remove_file(root.join("net/unix")).unwrap();
    std::fs::write(root.join("sys/net/core/somaxconn"), "lots\n").unwrap();
    let agent = Agent::start(&[
        "--path.procfs",
        root.to_str().unwrap(),
        "--source",
        "procfs",
    ]);
    let body = agent.scrape();
    // No tcp6 is no IPv6 socket, not a failure.
    assert!(
        body.contains("sockscope_source_up{source=\"proc_net_tcp6\"} 1"),
        "{body}"
    );
    assert!(body.contains("sockscope_tcp_sockets{family=\"ipv6\",state=\"listen\"} 0"));
    assert!(body.contains("sockscope_source_up{source=\"sysctl\"} 0"));
    assert!(body.contains("sockscope_source_errors_total{source=\"sysctl\",reason=\"parse\"}"));
    assert!(body.contains("sockscope_source_up{source=\"proc_net_unix\"} 0"));
    assert!(
        body.contains("sockscope_source_errors_total{source=\"proc_net_unix\",reason=\"enoent\"}")
    );
    assert!(body.contains("sockscope_source_up{source=\"proc_net_tcp\"} 1"));
    // The rest is still served; figures that need a failed source are absent, not 0.
    assert!(body.contains("sockscope_tcp_sockets{family=\"ipv4\",state=\"listen\"} 4"));
    assert!(
        !body.contains("sockscope_unix_sockets{"),
        "a source that is down leaves its figures out, not 0"
    );
    assert!(!body.contains("sockscope_sysctl_somaxconn"));
    assert!(!body.contains("sockscope_ephemeral_ports_available"));
    // Let a few more polls fail the same way (every 100 ms; bounded wait
    // for the poll timestamp to move on three times).
    let poll_ts = |body: &str| -> String {
        body.lines()
            .find(|l| l.starts_with("sockscope_last_poll_timestamp_seconds "))
            .expect("the poll timestamp")
            .to_owned()
    };
    let mut seen = vec![poll_ts(&body)];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while seen.len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "polls stalled: {seen:?}"
        );
        let ts = poll_ts(&agent.scrape());
        if !seen.contains(&ts) {
            seen.push(ts);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let body = agent.scrape();
    let skipped: usize = body
        .lines()
        .find_map(|l| l.strip_prefix("sockscope_parse_errors_total{source=\"proc_net_tcp\"} "))
        .expect("proc_net_tcp parse errors")
        .parse()
        .unwrap();
    assert!(
        skipped >= seen.len(),
        "the fixture's malformed line is counted on every poll: {skipped} after {} polls",
        seen.len()
    );
    let log = agent.stop();
    assert_eq!(
        log.matches("source failed").count(),
        2,
        "one warning per failed source, not one per poll:\n{log}"
    );
    assert_eq!(
        log.matches("skipping malformed records").count(),
        1,
        "one warning when a source starts skipping, not one per poll:\n{log}"
    );
    assert!(
        log.contains("somaxconn") && log.contains("net/unix"),
        "the warnings name the files:\n{log}"
    );
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// Bad input exits with exactly one line on stderr: status 2 for a bad
/// command line (an unknown flag or a value a flag refuses), 1 for
/// everything found after it (an unreadable `--path.procfs`, an address in
/// use). Never a log line beside it.
#[test]
fn bad_input_exits_with_one_line_error() {
    let bin = env!("CARGO_BIN_EXE_sockscope");
    let cases: &[(&[&str], &str, i32)] = &[
        (
            &["agent", "--path.procfs", "/nonexistent/proc"],
            "--path.procfs",
            1,
        ),
        (&["agent", "--poll.interval", "soon"], "--poll.interval", 2),
        (
            &["agent", "--web.listen-address", "localhost"],
            "--web.listen-address",
            1,
        ),
        (&["snapshot", "--source", "carrier-pigeon"], "--source", 2),
        (&["snapshot", "--no-such-flag"], "--no-such-flag", 2),
        (
            &["agent", "--nginx.scrape-uri", "http://127.0.0.1:99999/x"],
            "expected 1-65535",
            2,
        ),
        (
            &["agent", "--nginx.scrape-uri", "https://127.0.0.1/x"],
            "only http:// and unix:",
            2,
        ),
        (&["snapshot", "--log.level", "bogus"], "not a level", 2),
        (
            &["snapshot", "--listen.max-listeners", "0"],
            "--listen.max-listeners",
            2,
        ),
        (&["proxy", "--listen", "127.0.0.1:1"], "--upstream", 2),
    ];
    for (args, needle, code) in cases {
        let out = std::process::Command::new(bin)
            .args(*args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: error should name {needle}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.starts_with("sockscope: "), "{args:?}: {stderr}");
    }
    // A listen address in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = std::process::Command::new(bin)
        .args([
            "agent",
            "--path.procfs",
            FIXTURE,
            "--web.listen-address",
            &addr,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The "starting" log lines are info; the error is the one line after.
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("in use")).collect();
    assert_eq!(errors.len(), 1, "the error once, not also logged: {stderr}");
    assert!(
        errors[0].starts_with("sockscope: --web.listen-address"),
        "{stderr}"
    );
}

/// `--log.level warning` (or `WARN`, or `target=level`) keeps the warnings:
/// with a source missing, its warning is logged.
#[test]
fn log_level_warning_keeps_warnings() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(std::path::Path::new(FIXTURE), dir.path());
    std::fs::remove_file(dir.path().join("net/unix")).unwrap();
    for level in ["warning", "WARN", "info,sockscope=warning"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sockscope"))
            .args(["snapshot", "--source", "procfs", "--log.level", level])
            .arg("--path.procfs")
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("WARN") && stderr.contains("net/unix"),
            "--log.level {level}: the warning is logged: {stderr}"
        );
    }
}

/// `sockscope snapshot` of the fixture tree with `extra` flags.
fn snapshot(extra: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sockscope"))
        .args([
            "snapshot",
            "--path.procfs",
            FIXTURE,
            "--source",
            "procfs",
            extra,
        ])
        .output()
        .unwrap_or_else(|e| panic!("spawning sockscope snapshot: {e}"))
}

#[test]
fn snapshot_fits_80_columns_and_json_parses() {
    let out = snapshot("--timing");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "too wide: {line:?}");
    }
    assert!(text.contains("127.0.0.1:8080"));
    let out = snapshot("--json");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tcp"]["ipv4"]["time_wait"], 4, "TIME_WAIT count in JSON");
    assert_eq!(v["unix"]["stream"]["connecting"], 3);
    assert_eq!(v["ephemeral"]["range"]["first"], 32768);
    assert_eq!(v["listeners"][0]["listener"], "127.0.0.1:8080");
    assert_eq!(v["unread"], serde_json::json!([]));
}

/// Every member of `snapshot --json` is in the README's schema, by name:
/// no positional array, nothing undocumented.
#[test]
fn snapshot_json_is_named_and_documented() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let documented = documented_json_paths(&readme);
    assert!(documented.len() > 40, "the README's table: {documented:?}");

    let dir = tempfile::tempdir().unwrap();
    copy_tree(std::path::Path::new(FIXTURE), dir.path());
    std::fs::remove_file(dir.path().join("net/unix")).unwrap();
    for procfs in [std::path::Path::new(FIXTURE), dir.path()] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sockscope"))
            .args(["snapshot", "--source", "procfs", "--json", "--path.procfs"])
            .arg(procfs)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut paths = std::collections::BTreeSet::new();
        json_paths(&v, String::new(), &mut paths);
        for p in &paths {
            // An empty array is documented by its elements' paths.
            assert!(
                documented.contains(p) || documented.iter().any(|d| d.starts_with(p.as_str())),
                "{p} is in `snapshot --json` but not in the README's schema"
            );
        }
        assert!(paths.contains("tcp.<family>.<state>"));
        assert!(
            paths.contains("sources[].errors_total.<reason>")
                == (procfs != std::path::Path::new(FIXTURE))
        );
    }
}

/// The first-column paths of the README's `snapshot --json` table; a path
/// that starts with `.` continues the previous one's parent.
fn documented_json_paths(readme: &str) -> std::collections::BTreeSet<String> {
    let start = readme
        .find("### `snapshot --json`")
        .expect("the schema section");
    let section = &readme[start..];
    let section = &section[..section.find("\n## ").unwrap()];
    let mut out = std::collections::BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cell = row.split(" | ").next().unwrap();
        let mut parent = String::new();
        for (i, tok) in cell.split('`').enumerate() {
            if i % 2 == 0 {
                continue;
            }
            let full = if let Some(rest) = tok.strip_prefix('.') {
                format!("{parent}.{rest}")
            } else {
                parent = tok.rsplit_once('.').map_or("", |(p, _)| p).to_owned();
                tok.to_owned()
            };
            out.insert(full);
        }
    }
    out
}

/// Leaf paths of a JSON value, with the names of states, families, types
/// and reasons as the README's placeholders.
fn json_paths(v: &serde_json::Value, at: String, out: &mut std::collections::BTreeSet<String>) {
    use serde_json::Value;
    let placeholder = |at: &str| -> Option<&'static str> {
        Some(match at {
            "tcp" => "<family>",
            "tcp.<family>" => "<state>",
            "unix" => "<type>",
            "unix.<type>" => "<ustate>",
            _ if at.ends_with("errors_total") => "<reason>",
            _ => return None,
        })
    };
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let k = placeholder(&at).unwrap_or(k);
                let next = if at.is_empty() {
                    k.to_owned()
                } else {
                    format!("{at}.{k}")
                };
                json_paths(x, next, out);
            }
        }
        Value::Array(a) if a.is_empty() => {
            out.insert(format!("{at}[]"));
        }
        Value::Array(a) => {
            for x in a {
                json_paths(x, format!("{at}[]"), out);
            }
        }
        _ => {
            out.insert(at);
        }
    }
}

/// A source that is down: its figures are `-` and `null`, and the snapshot
/// exits 1 naming them in one line; a missing `tcp6` (IPv6 disabled) is
/// not a failure.
#[test]
fn snapshot_of_unread_sources_shows_dashes_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(std::path::Path::new(FIXTURE), dir.path());
    std::fs::remove_file(dir.path().join("net/tcp6")).unwrap();
    let run = |json: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_sockscope"));
        c.args([
            "snapshot",
            "--source",
            "procfs",
            "--log.level",
            "off",
            "--path.procfs",
        ])
        .arg(dir.path());
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let out = run(false);
    assert!(
        out.status.success(),
        "no tcp6 is IPv6 disabled, not a failure"
    );

    std::fs::remove_file(dir.path().join("net/unix")).unwrap();
    std::fs::remove_file(dir.path().join("net/sockstat")).unwrap();
    let out = run(false);
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        "sockscope: snapshot: could not read unix, sockstat (shown as -; see \"Sources down\" or sources[] for why)\n"
    );
    assert!(
        text.contains("  connecting                         -          -          -\n"),
        "{text}"
    );
    assert!(text.contains("sockstat tw -"), "{text}");
    assert!(
        text.contains("Not read (shown as -): unix, sockstat"),
        "{text}"
    );

    let out = run(true);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["unix"].is_null() && v["sockstat"].is_null());
    assert_eq!(v["unread"], serde_json::json!(["unix", "sockstat"]));

    // Nothing readable at all: every figure unread, exit 1.
    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir(empty.path().join("net")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sockscope"))
        .args([
            "snapshot",
            "--source",
            "procfs",
            "--log.level",
            "off",
            "--path.procfs",
        ])
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("  established                        -          0\n"),
        "{text}"
    );
}

/// The README and `--help` name the lab's experiments by what they show
/// (no undefined "seed 000/001/002"), say what nginx's Active counts (A,
/// not Q + A + 1), and give the arithmetic of a pool's rate.
#[test]
fn readme_and_help_name_what_they_mean() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut help = String::new();
    for sub in [
        &[][..],
        &["agent"],
        &["snapshot"],
        &["proxy"],
        &["upstream"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sockscope"))
            .args(sub)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success());
        help.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    for (what, text) in [("README.md", &readme), ("--help", &help)] {
        let lower = text.to_lowercase();
        for word in ["seed 000", "seed 001", "seed 002", "seed's", "the seeds"] {
            assert!(!lower.contains(word), "{what} says {word:?}");
        }
        assert!(!text.contains("Q + A + 1"), "{what}: Active counts A only");
    }
    // The default range, 32768-60999, over TIME_WAIT's 60 s.
    let ports = 60999 - 32768 + 1;
    assert_eq!(ports, 28_232);
    assert_eq!(ports / 60, 470, "new connections a second, rounded down");
    assert!(
        readme.contains("28,232 / 60 s ≈ **470"),
        "the README gives the arithmetic of a pool's rate"
    );
}

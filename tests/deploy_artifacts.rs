//! Checks of the deployment artifacts: `deploy/prometheus/` (rules, their
//! unit tests, the scrape config), `dashboards/sockscope.json`,
//! `deploy/kubernetes/` and `deploy/systemd/`.
//!
//! External tools: `promtool` (Debian `prometheus`), `python3` with PyYAML
//! (YAML is read by Python and handed over as JSON), `kubernetes-validate`
//! (pip), `systemd-analyze` (Debian `systemd`) and `nginx` (Debian
//! `nginx-light`). A test that needs one is `#[ignore]`d (reported as
//! ignored by a plain `cargo test`); `./scripts/test` installs them and
//! runs it, and then a tool still missing fails it (`common/prereq.rs`).
//!
//! Metric names used by the rules and the dashboard must be in the metric
//! table of README.md (the contract) or be recording rules of
//! `deploy/prometheus/recording.yml`, so renaming a metric breaks this test
//! instead of leaving a silent alert or an empty panel.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

#[path = "common/prereq.rs"]
mod prereq;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn path(rel: &str) -> PathBuf {
    root().join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// python3 ([`prereq::python_with`]) with PyYAML, which reads every YAML
/// file for these tests.
fn python_yaml() -> PathBuf {
    prereq::python_with(&["yaml"])
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_ok(cmd: &mut Command) -> Output {
    let o = run(cmd);
    assert!(o.status.success(), "{cmd:?} failed:\n{}", text(&o));
    o
}

/// Every YAML document of the file, as JSON (through python3 + PyYAML).
fn yaml_docs(file: &Path) -> Vec<Value> {
    let o = assert_ok(Command::new(python_yaml()).arg("-c").arg(
        "import json, sys, yaml\n\
         json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None], sys.stdout)",
    ).arg(file));
    match serde_json::from_slice(&o.stdout).expect("python's json") {
        Value::Array(docs) => docs,
        v => panic!("expected a list of documents, got {v}"),
    }
}

fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(&path(rel));
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

fn s<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v}"))
}

fn arr<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected a list, got {v}"))
}

// ---------------------------------------------------------------------------
// The metric contract
// ---------------------------------------------------------------------------

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Identifiers in `text` that start with `sockscope_` or `sockscope:`.
fn sockscope_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if is_ident(c) {
            cur.push(c);
        } else {
            if cur.starts_with("sockscope_") || cur.starts_with("sockscope:") {
                out.push(cur.clone());
            }
            cur.clear();
        }
    }
    out
}

/// Names in the first column of README.md's "## Metrics" table, with its
/// abbreviations expanded (`..._last`, `_inuse`: the previous name with its
/// last `_segment` replaced).
fn readme_metrics() -> BTreeSet<String> {
    let readme = read("README.md");
    let section = readme
        .split("\n## Metrics")
        .nth(1)
        .expect("README.md has a '## Metrics' section");
    let section = section.split("\n## ").next().unwrap();
    let mut names = BTreeSet::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = line.split('|').nth(1).unwrap();
        let mut prev: Option<String> = None;
        for (i, token) in first_cell.split('`').enumerate() {
            if i % 2 == 0 {
                continue; // outside backticks
            }
            let name = if token.starts_with("sockscope_") {
                token.to_owned()
            } else if let Some(suffix) = token.strip_prefix("...").or(Some(token))
                && suffix.starts_with('_')
                && let Some(p) = &prev
            {
                let stem = &p[..p.rfind('_').unwrap()];
                format!("{stem}{suffix}")
            } else {
                continue;
            };
            prev = Some(name.clone());
            names.insert(name);
        }
    }
    names
}

/// `NAME = "sockscope_...", Kind, [...]` of every `metric_specs!` list in
/// src/ (each analysis declares the families it computes).
fn exporter_metrics() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let src = std::fs::read_to_string(&p).unwrap();
                out.extend(
                    src.lines()
                        .filter_map(|l| l.split_once("= \"sockscope_"))
                        .filter(|(_, rest)| {
                            rest.contains("\", Gauge,") || rest.contains("\", Counter,")
                        })
                        .map(|(_, rest)| format!("sockscope_{}", rest.split('"').next().unwrap())),
                );
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&path("src"), &mut out);
    out
}

fn recording_rules() -> BTreeSet<String> {
    let doc = yaml("deploy/prometheus/recording.yml");
    let mut out = BTreeSet::new();
    for g in arr(&doc["groups"], "groups") {
        for r in arr(&g["rules"], "rules") {
            out.insert(s(&r["record"], "record").to_owned());
        }
    }
    out
}

/// Every name the rules and the dashboard may use.
fn contract() -> BTreeSet<String> {
    let readme = readme_metrics();
    let exporter = exporter_metrics();
    // Guards the parsers above: a table that parsed into nothing (or into
    // garbage) would make every check below vacuous.
    assert!(
        readme.len() >= 30,
        "README metric table parsed to {readme:?}"
    );
    assert!(
        exporter.len() >= 30,
        "the metric_specs! of src/ parsed to {exporter:?}"
    );
    for n in &readme {
        assert!(
            exporter.contains(n),
            "README lists {n}, no metric_specs! in src/ defines it"
        );
    }
    for n in &exporter {
        assert!(
            readme.contains(n),
            "src/ defines {n}, README.md's metric table (the contract) does not list it"
        );
    }
    let mut all = readme;
    all.extend(recording_rules());
    all
}

fn assert_names_in_contract(what: &str, expr: &str, contract: &BTreeSet<String>) {
    for n in sockscope_names(expr) {
        assert!(
            contract.contains(&n),
            "{what}: {n} is neither in README.md's metric table nor a recording rule of \
             deploy/prometheus/recording.yml\n  expr: {expr}"
        );
    }
}

#[test]
fn readme_abbreviations_expand() {
    let names = readme_metrics();
    for n in [
        "sockscope_tcp_listen_drops_total",
        "sockscope_sysctl_ip_local_port_range_last",
        "sockscope_sockstat_tcp_inuse",
        "sockscope_sockstat_tcp_orphan",
        "sockscope_ephemeral_ports_available",
    ] {
        assert!(names.contains(n), "{n} not parsed from README: {names:?}");
    }
}

// ---------------------------------------------------------------------------
// Prometheus rules and config
// ---------------------------------------------------------------------------

#[test]
#[ignore = "needs promtool: ./scripts/test installs it"]
fn promtool_check_rules() {
    assert_ok(prereq::command("promtool").args(["check", "rules"]).args([
        path("deploy/prometheus/alerts.yml"),
        path("deploy/prometheus/recording.yml"),
    ]));
}

#[test]
#[ignore = "needs promtool: ./scripts/test installs it"]
fn promtool_test_rules() {
    let o = assert_ok(
        prereq::command("promtool")
            .args(["test", "rules"])
            .arg(path("deploy/prometheus/alerts_test.yml")),
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("SUCCESS"),
        "{}",
        text(&o)
    );
}

struct Alert {
    name: String,
    expr: String,
}

fn alerts() -> Vec<Alert> {
    let doc = yaml("deploy/prometheus/alerts.yml");
    let mut out = Vec::new();
    for g in arr(&doc["groups"], "groups") {
        for r in arr(&g["rules"], "rules") {
            let name = s(&r["alert"], "alert").to_owned();
            let labels = &r["labels"];
            let sev = s(&labels["severity"], &format!("{name}: labels.severity"));
            assert!(
                sev == "warning" || sev == "critical",
                "{name}: severity {sev:?} is neither warning nor critical"
            );
            for key in ["summary", "description"] {
                let a = s(
                    &r["annotations"][key],
                    &format!("{name}: annotations.{key}"),
                );
                assert!(
                    a.trim().len() >= 20,
                    "{name}: annotations.{key} is too short: {a:?}"
                );
            }
            out.push(Alert {
                name,
                expr: s(&r["expr"], "expr").to_owned(),
            });
        }
    }
    out
}

const REQUIRED_ALERTS: &[&str] = &[
    "SockscopeEphemeralPortsExhaustionImminent",
    "SockscopeEphemeralPortsExhausted",
    "SockscopeEphemeralPortsNearExhaustion",
    "SockscopeConnectsFailing",
    "SockscopeListenerDropping",
    "SockscopeListenQueueSaturated",
    "SockscopeListenOverflows",
    "SockscopeUnixListenerStuck",
    "SockscopeNginxDown",
    "SockscopeSourceDown",
    "SockscopeAgentAbsent",
    "SockscopeEbpfEventsLost",
];

#[test]
#[ignore = "needs python3 with PyYAML: ./scripts/test installs it"]
fn every_alert_is_labelled_documented_and_unit_tested() {
    let alerts = alerts();
    let names: BTreeSet<&str> = alerts.iter().map(|a| a.name.as_str()).collect();
    for r in REQUIRED_ALERTS {
        assert!(names.contains(r), "alerts.yml lacks {r}");
    }
    assert_eq!(names.len(), alerts.len(), "duplicate alert names");

    // The parameter block at the top names every alert.
    let raw = read("deploy/prometheus/alerts.yml");
    let header: String = raw
        .lines()
        .take_while(|l| !l.starts_with("groups:"))
        .collect::<Vec<_>>()
        .join("\n");
    for a in &names {
        assert!(
            header.contains(a),
            "the parameter comment block of alerts.yml does not mention {a}"
        );
    }

    // Unit tests: for every alert, a case where it fires and one where it
    // does not.
    let tests = yaml("deploy/prometheus/alerts_test.yml");
    let files: Vec<&str> = arr(&tests["rule_files"], "rule_files")
        .iter()
        .map(|f| s(f, "rule_files[]"))
        .collect();
    assert!(
        files.contains(&"alerts.yml") && files.contains(&"recording.yml"),
        "alerts_test.yml must load alerts.yml and recording.yml: {files:?}"
    );
    let mut firing: BTreeMap<String, usize> = BTreeMap::new();
    let mut silent: BTreeMap<String, usize> = BTreeMap::new();
    let mut tested_exprs = Vec::new();
    for t in arr(&tests["tests"], "tests") {
        for case in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = s(&case["alertname"], "alertname").to_owned();
            assert!(
                names.contains(name.as_str()),
                "alerts_test.yml tests unknown alert {name}"
            );
            let exp = case["exp_alerts"].as_array().map_or(0, Vec::len);
            *if exp > 0 { &mut firing } else { &mut silent }
                .entry(name)
                .or_default() += 1;
        }
        for case in t["promql_expr_test"].as_array().into_iter().flatten() {
            tested_exprs.push(s(&case["expr"], "promql_expr_test.expr").to_owned());
        }
    }
    for a in &names {
        assert!(
            firing.contains_key(*a),
            "alerts_test.yml has no case where {a} fires"
        );
        assert!(
            silent.contains_key(*a),
            "alerts_test.yml has no case where {a} stays silent"
        );
    }
    for r in recording_rules() {
        assert!(
            tested_exprs.iter().any(|e| sockscope_names(e).contains(&r)),
            "alerts_test.yml has no promql_expr_test of recording rule {r}"
        );
    }

    let contract = contract();
    for a in &alerts {
        assert_names_in_contract(&a.name, &a.expr, &contract);
    }
    let rec = yaml("deploy/prometheus/recording.yml");
    for g in arr(&rec["groups"], "groups") {
        for r in arr(&g["rules"], "rules") {
            assert_names_in_contract(s(&r["record"], "record"), s(&r["expr"], "expr"), &contract);
        }
    }
}

/// The Python that turns scrape.yml's Kubernetes pod discovery into static
/// targets: one per container port (and one per port-less container) of
/// every pod template in the manifests given, with the `__meta_kubernetes_*`
/// labels pod discovery would set, plus pods that must not be scraped.
/// Writes the config to argv[2]; rule_files become absolute.
const SIMULATE_POD_SD: &str = r#"
import json, os, re, sys, yaml

scrape, out, manifests = sys.argv[1], sys.argv[2], sys.argv[3:]
cfg = yaml.safe_load(open(scrape))
base = os.path.dirname(os.path.abspath(scrape))
cfg["rule_files"] = [os.path.join(base, f) for f in cfg.get("rule_files", [])]

def sanitize(k):
    return re.sub(r"[^a-zA-Z0-9_]", "_", k)

def targets(pod, ns, node, ip, phase, meta, spec):
    common = {
        "__meta_kubernetes_namespace": ns,
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_node_name": node,
        "__meta_kubernetes_pod_ip": ip,
        "__meta_kubernetes_pod_phase": phase,
    }
    for k, v in (meta.get("labels") or {}).items():
        common["__meta_kubernetes_pod_label_" + sanitize(k)] = str(v)
    for k, v in (meta.get("annotations") or {}).items():
        common["__meta_kubernetes_pod_annotation_" + sanitize(k)] = str(v)
    out = []
    for c in spec["containers"]:
        ports = c.get("ports") or [None]
        for p in ports:
            labels = dict(common, __meta_kubernetes_pod_container_name=c["name"])
            addr = ip
            if p is not None:
                addr = "%s:%d" % (ip, p["containerPort"])
                labels["__meta_kubernetes_pod_container_port_name"] = p.get("name", "")
                labels["__meta_kubernetes_pod_container_port_number"] = str(p["containerPort"])
                labels["__meta_kubernetes_pod_container_port_protocol"] = p.get("protocol", "TCP")
            out.append({"targets": [addr], "labels": labels})
    return out

static = []
n = 0
for m in manifests:
    for doc in yaml.safe_load_all(open(m)):
        if not doc or "template" not in doc.get("spec", {}):
            continue
        n += 1
        t = doc["spec"]["template"]
        ns = doc["metadata"].get("namespace", "default")
        pod = doc["metadata"]["name"] + "-abcde"
        ip = "10.0.0.%d" % n
        static += targets(pod, ns, "node-1", ip, "Running", t["metadata"], t["spec"])
        # The same pod, not running yet: must not be scraped.
        static += targets(pod + "-pending", ns, "node-1", "10.0.1.%d" % n, "Pending",
                          t["metadata"], t["spec"])

# Somebody else's pod, annotated for scraping by a generic job.
static += targets("web-1", "shop", "node-2", "10.0.2.1", "Running",
                  {"annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}},
                  {"containers": [{"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}]})

sd_jobs = []
for job in cfg["scrape_configs"]:
    if "kubernetes_sd_configs" in job:
        sd_jobs.append(job["job_name"])
        assert job["kubernetes_sd_configs"] == [{"role": "pod"}], job["kubernetes_sd_configs"]
        del job["kubernetes_sd_configs"]
        job["static_configs"] = static
yaml.safe_dump(cfg, open(out, "w"))
json.dump(sd_jobs, sys.stdout)
"#;

#[test]
#[ignore = "needs promtool and python3 with PyYAML: ./scripts/test installs it"]
fn scrape_config_is_valid_and_keeps_only_the_agent() {
    let scrape = path("deploy/prometheus/scrape.yml");

    // The file as shipped. Debian's promtool is built without Kubernetes
    // service discovery ("field kubernetes_sd_configs not found"): then the
    // rest of the file is checked through the simulated copy below.
    let o = run(prereq::command("promtool")
        .args(["check", "config"])
        .arg(&scrape));
    if !o.status.success() {
        let t = text(&o);
        assert!(
            t.contains("field kubernetes_sd_configs not found"),
            "promtool check config scrape.yml failed:\n{t}"
        );
        println!(
            "NOTE: this promtool lacks Kubernetes service discovery (Debian build); \
             checking scrape.yml with kubernetes_sd_configs replaced by simulated pod targets"
        );
    }

    // The same config with pod discovery replaced by static targets built
    // from the manifests of deploy/kubernetes/.
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("prometheus.yml");
    let o = assert_ok(
        Command::new(python_yaml())
            .args(["-c", SIMULATE_POD_SD])
            .arg(&scrape)
            .arg(&sim)
            .arg(path("deploy/kubernetes/daemonset.yaml"))
            .arg(path("deploy/kubernetes/sidecar.yaml")),
    );
    let sd_jobs: Vec<String> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sd_jobs.len(), 1, "expected one Kubernetes job: {sd_jobs:?}");
    let o = assert_ok(
        prereq::command("promtool")
            .args(["check", "config"])
            .arg(&sim),
    );
    let t = text(&o);
    assert!(
        t.contains("2 rule files found"),
        "rule files not loaded:\n{t}"
    );

    for job in ["sockscope"]
        .iter()
        .copied()
        .chain(sd_jobs.iter().map(String::as_str))
    {
        assert!(
            job.starts_with("sockscope"),
            "job {job} breaks SockscopeAgentAbsent's job=~\"sockscope.*\""
        );
    }

    let o = assert_ok(
        prereq::command("promtool")
            // Static targets arrive at once; promtool spins until the
            // timeout (30s by default) regardless.
            .args(["check", "service-discovery", "--timeout=5s"])
            .arg(&sim)
            .arg(&sd_jobs[0]),
    );
    let found: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("service-discovery output is not JSON ({e}):\n{}", text(&o)));
    let mut kept = BTreeSet::new();
    for t in arr(&found, "targets") {
        let labels = t["labels"].as_object().expect("labels");
        if labels.is_empty() {
            continue; // dropped by relabeling
        }
        for l in ["namespace", "pod", "node", "container", "instance", "job"] {
            assert!(labels.contains_key(l), "target without label {l}: {t}");
        }
        kept.insert((
            s(&labels["pod"], "pod").to_owned(),
            s(&labels["container"], "container").to_owned(),
            s(&labels["__address__"], "__address__").to_owned(),
        ));
    }
    let want: BTreeSet<_> = [
        ("sockscope-abcde", "sockscope", "10.0.0.1:9977"),
        ("nginx-sockscope-demo-abcde", "sockscope", "10.0.0.2:9977"),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    .collect();
    assert_eq!(
        kept, want,
        "the Kubernetes job must keep exactly the agent's metrics port of running pods"
    );
}

// ---------------------------------------------------------------------------
// Grafana dashboard
// ---------------------------------------------------------------------------

fn dashboard() -> Value {
    serde_json::from_str(&read("dashboards/sockscope.json"))
        .expect("dashboards/sockscope.json is JSON")
}

/// Panels, rows' nested panels included.
fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in arr(&d["panels"], "panels") {
        out.push(p);
        for n in p["panels"].as_array().into_iter().flatten() {
            out.push(n);
        }
    }
    out
}

/// (panel title, expr) of every query target.
fn exprs(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in all_panels(d) {
        let title = p["title"].as_str().unwrap_or("").to_owned();
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                title.clone(),
                s(&t["expr"], &format!("{title}: expr")).to_owned(),
            ));
        }
    }
    out
}

/// The `{...}` matcher blocks following each metric name in `expr`, as
/// (name, matchers); `None` when a name has no block.
fn selectors(expr: &str) -> Vec<(String, Option<String>)> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '"' {
            // Skip string literals (label values, regexes).
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if is_ident(chars[i]) && !chars[i].is_ascii_digit() {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            let is_metric =
                name.starts_with("sockscope_") || name.starts_with("sockscope:") || name == "up";
            if is_metric {
                let block = (i < chars.len() && chars[i] == '{').then(|| {
                    let end = chars[i..]
                        .iter()
                        .position(|&c| c == '}')
                        .expect("closing }")
                        + i;
                    chars[i + 1..end].iter().collect::<String>()
                });
                out.push((name, block));
            }
            continue;
        }
        i += 1;
    }
    out
}

#[test]
fn dashboard_structure() {
    let d = dashboard();
    assert_eq!(d["schemaVersion"], 39);
    assert_eq!(d["uid"], "sockscope");
    let ds = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});

    // Unique ids, known panel types, the data source variable everywhere.
    let mut ids = BTreeSet::new();
    for p in all_panels(&d) {
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel without numeric id: {}", p["title"]));
        assert!(ids.insert(id), "duplicate panel id {id}");
        let ty = s(&p["type"], "type");
        assert!(
            ["row", "timeseries", "stat", "table", "bargauge"].contains(&ty),
            "panel {} has type {ty}",
            p["title"]
        );
        if ty == "row" {
            continue;
        }
        assert_eq!(p["datasource"], ds, "panel {} datasource", p["title"]);
        let targets = arr(&p["targets"], "targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(
                t["datasource"], ds,
                "panel {} target datasource",
                p["title"]
            );
            assert!(
                refs.insert(s(&t["refId"], "refId")),
                "panel {} repeats a refId",
                p["title"]
            );
        }
    }

    // Layout: inside 24 columns, no two panels overlap (top level; rows
    // are expanded so their panels are top level too).
    let mut boxes: Vec<(String, u64, u64, u64, u64)> = Vec::new();
    for p in arr(&d["panels"], "panels") {
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(
            w > 0 && h > 0 && x + w <= 24,
            "panel {} gridPos {g}",
            p["title"]
        );
        let title = p["title"].as_str().unwrap_or("").to_owned();
        for (other, ox, oy, ow, oh) in &boxes {
            let overlap = x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h;
            assert!(!overlap, "panels {title:?} and {other:?} overlap");
        }
        boxes.push((title, x, y, w, h));
        if p["type"] == "row" {
            assert_eq!(p["collapsed"], false, "row {} is collapsed", p["title"]);
        }
    }

    // The rows asked for.
    let rows: Vec<&str> = all_panels(&d)
        .into_iter()
        .filter(|p| p["type"] == "row")
        .map(|p| s(&p["title"], "row title"))
        .collect();
    for r in [
        "Overview",
        "Ephemeral ports per destination",
        "Listeners",
        "TCP states",
        "UNIX sockets",
        "nginx",
    ] {
        assert!(rows.contains(&r), "no row {r:?} in {rows:?}");
    }

    // Variables.
    let vars: BTreeMap<&str, &Value> = arr(&d["templating"]["list"], "templating.list")
        .iter()
        .map(|v| (s(&v["name"], "variable name"), v))
        .collect();
    let dsv = vars.get("datasource").expect("variable datasource");
    assert_eq!(dsv["type"], "datasource");
    assert_eq!(dsv["query"], "prometheus");
    for (name, q) in [
        ("job", "label_values(sockscope_build_info, job)"),
        (
            "instance",
            "label_values(sockscope_build_info{job=~\"$job\"}, instance)",
        ),
    ] {
        let v = vars.get(name).unwrap_or_else(|| panic!("variable {name}"));
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["definition"], q, "{name}");
        assert_eq!(v["query"]["query"], q, "{name}");
        assert_eq!(v["multi"], true, "{name}");
        assert_eq!(v["includeAll"], true, "{name}");
        assert_eq!(v["datasource"], ds, "{name}");
    }
    let nl = vars.get("nginx_listener").expect("variable nginx_listener");
    assert!(nl["type"] == "textbox" || nl["type"] == "custom");
    assert_eq!(nl["query"], ".*:80");
    assert_eq!(nl["current"]["value"], ".*:80");
}

#[test]
fn dashboard_queries_filter_on_job_and_instance() {
    let d = dashboard();
    let all = exprs(&d);
    assert!(all.len() >= 30, "only {} queries", all.len());
    for (title, expr) in &all {
        let sel = selectors(expr);
        assert!(!sel.is_empty(), "{title}: no metric in {expr}");
        for (name, block) in sel {
            let block = block
                .unwrap_or_else(|| panic!("{title}: {name} has no {{...}} selector in {expr}"));
            for m in ["job=~\"$job\"", "instance=~\"$instance\""] {
                assert!(block.contains(m), "{title}: {name}{{{block}}} lacks {m}");
            }
        }
    }
    // The nginx Active vs Q + A panel, as specified.
    assert!(
        all.iter()
            .any(|(_, e)| e.contains("sockscope_nginx_connections_active")
                && e.starts_with("sum by (instance)")),
        "no sum by (instance) of sockscope_nginx_connections_active"
    );
    assert!(
        all.iter().any(
            |(_, e)| e.starts_with("sum by (instance) (sockscope_listen_connections{")
                && e.contains("proto=\"tcp\"")
                && e.contains("listener=~\"$nginx_listener\"")
                && !e.contains("state=")
        ),
        "no sum by (instance) of sockscope_listen_connections on $nginx_listener"
    );
    // The agent's forecast per pool and the drops per listener.
    for needle in [
        "sockscope_ephemeral_ports_exhaustion_seconds{",
        "rate(sockscope_ephemeral_ports_time_wait_entries_total{",
        "increase(sockscope_listen_queue_drops_total{",
    ] {
        assert!(
            all.iter().any(|(_, e)| e.contains(needle)),
            "no dashboard query with {needle}"
        );
    }
}

#[test]
#[ignore = "needs python3 with PyYAML: ./scripts/test installs it"]
fn dashboard_metric_names_are_in_the_contract() {
    let contract = contract();
    let d = dashboard();
    for (title, expr) in exprs(&d) {
        assert_names_in_contract(&title, &expr, &contract);
    }
    let mut used = BTreeSet::new();
    for v in arr(&d["templating"]["list"], "templating.list") {
        let q = v["definition"].as_str().unwrap_or("");
        assert_names_in_contract(&format!("variable {}", v["name"]), q, &contract);
        used.extend(sockscope_names(q));
    }
    // A renamed recording rule must break the dashboard too.
    for (_, e) in exprs(&d) {
        used.extend(sockscope_names(&e));
    }
    for r in recording_rules() {
        assert!(
            used.contains(&r),
            "recording rule {r} is not used by the dashboard"
        );
    }
}

#[test]
#[ignore = "needs promtool: ./scripts/test installs it"]
fn dashboard_promql_parses() {
    let d = dashboard();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in exprs(&d).iter().enumerate() {
        let e = expr
            .replace("$__rate_interval", "1m")
            .replace("$nginx_listener", ".*:80")
            .replace("$job", ".+")
            .replace("$instance", ".+")
            .replace("$netns", ".*");
        assert!(!e.contains('$'), "{title}: unknown variable in {expr}");
        rules.push_str(&format!(
            "      # {}\n      - record: dashboard:query:{i}\n        expr: |\n          {e}\n",
            title.replace('\n', " ")
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("dashboard_rules.yml");
    std::fs::write(&f, &rules).unwrap();
    let o = run(prereq::command("promtool").args(["check", "rules"]).arg(&f));
    assert!(
        o.status.success(),
        "a dashboard query does not parse:\n{}\n{rules}",
        text(&o)
    );
}

// ---------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------

/// The Kubernetes version the manifests are validated against (the
/// kubernetes-validate package ships schemas for 1.25 and later).
const K8S_VERSION: &str = "1.30.0";

fn kubernetes_validate(files: &[PathBuf]) -> Output {
    run(prereq::command("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", K8S_VERSION])
        .args(files))
}

#[test]
#[ignore = "needs kubernetes-validate: ./scripts/test installs it"]
fn kubernetes_manifests_validate_strictly() {
    let files = [
        path("deploy/kubernetes/daemonset.yaml"),
        path("deploy/kubernetes/daemonset-unprivileged.yaml"),
        path("deploy/kubernetes/daemonset-netns-all.yaml"),
        path("deploy/kubernetes/sidecar.yaml"),
    ];
    let o = kubernetes_validate(&files);
    let t = text(&o);
    assert!(o.status.success(), "kubernetes-validate failed:\n{t}");
    assert!(
        !t.contains("WARN"),
        "kubernetes-validate warned (no schema?):\n{t}"
    );
    for want in [
        "serviceaccount/sockscope",
        "daemonset/sockscope",
        "daemonset/sockscope-netns-all",
        "serviceaccount/sockscope-netns-all",
        "configmap/nginx-sockscope-demo",
        "deployment/nginx-sockscope-demo",
    ] {
        assert!(
            t.contains(&format!("passed for resource {want}")),
            "{want} not validated:\n{t}"
        );
    }

    // Control: the validator is strict, so a misspelt field fails.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let ds = read("deploy/kubernetes/daemonset.yaml");
    assert!(ds.contains("\n      hostNetwork: true\n"));
    std::fs::write(
        &bad,
        ds.replace(
            "\n      hostNetwork: true\n",
            "\n      hostNetwork: true\n      hostNetwrok: true\n",
        ),
    )
    .unwrap();
    let o = kubernetes_validate(&[bad]);
    assert!(
        !o.status.success() && text(&o).contains("hostNetwrok"),
        "kubernetes-validate --strict accepted an unknown field:\n{}",
        text(&o)
    );
}

fn kind<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == k)
        .unwrap_or_else(|| panic!("no {k}"))
}

fn container<'a>(pod_spec: &'a Value, name: &str) -> &'a Value {
    arr(&pod_spec["containers"], "containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The least-privilege settings every sockscope container must have.
fn assert_least_privilege(what: &str, pod_spec: &Value, c: &Value) {
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{what}");
    assert_eq!(sc["runAsUser"], 65534, "{what}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{what}"
    );
    assert!(
        sc["capabilities"]["add"].is_null(),
        "{what} adds capabilities"
    );
    assert_eq!(
        pod_spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{what}"
    );
    assert_eq!(pod_spec["securityContext"]["runAsNonRoot"], true, "{what}");
    let ports = arr(&c["ports"], "ports");
    assert!(
        ports
            .iter()
            .any(|p| p["name"] == "metrics" && p["containerPort"] == 9977),
        "{what}: no port metrics/9977"
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{what} {probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{what} {probe}");
    }
    let r = &c["resources"];
    assert_eq!(r["requests"]["cpu"], "10m", "{what}");
    assert_eq!(r["requests"]["memory"], "16Mi", "{what}");
    assert_eq!(r["limits"]["cpu"], "200m", "{what}");
    assert_eq!(r["limits"]["memory"], "64Mi", "{what}");
    assert_image(what, c);
}

/// The eBPF DaemonSet's container: uid 0 (Kubernetes makes a non-root
/// user's added capabilities ineffective) with every capability dropped but
/// exactly BPF and PERFMON, read-only root, no escalation, RuntimeDefault
/// seccomp; the rest as [`assert_least_privilege`] asks.
fn assert_ebpf_privilege(what: &str, pod_spec: &Value, c: &Value) {
    let sc = &c["securityContext"];
    for s in [sc, &pod_spec["securityContext"]] {
        assert_eq!(s["runAsUser"], 0, "{what}");
        assert_eq!(s["runAsNonRoot"], false, "{what}");
    }
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
    assert_eq!(sc["privileged"], false, "{what}");
    assert_eq!(
        sc["capabilities"],
        serde_json::json!({"drop": ["ALL"], "add": ["BPF", "PERFMON"]}),
        "{what}"
    );
    assert_eq!(
        pod_spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{what}"
    );
    // The BTF parse at load time: tests/least_privilege.rs measures it.
    let r = &c["resources"];
    assert_eq!(r["requests"]["memory"], "48Mi", "{what}");
    assert_eq!(r["limits"]["memory"], "128Mi", "{what}");
    assert_image(what, c);
}

/// The `--ebpf…` arguments of a container.
fn ebpf_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter()
        .copied()
        .filter(|a| a.starts_with("--ebpf"))
        .collect()
}

/// The image scripts/image builds (`localhost/sockscope:VERSION`), for the
/// user to replace with their registry's: no registry path of a namespace
/// the project does not own.
fn assert_image(what: &str, c: &Value) {
    assert_eq!(
        s(&c["image"], "image"),
        format!("localhost/sockscope:{}", env!("CARGO_PKG_VERSION")),
        "{what}"
    );
}

/// Flags passed to the agent exist in `sockscope agent --help`.
fn assert_agent_flags_exist(what: &str, args: &[&str]) {
    let o = assert_ok(Command::new(env!("CARGO_BIN_EXE_sockscope")).args(["agent", "--help"]));
    let help = String::from_utf8_lossy(&o.stdout).into_owned();
    for a in args.iter().filter(|a| a.starts_with("--")) {
        let flag = a.split('=').next().unwrap();
        assert!(
            help.contains(flag),
            "{what}: `sockscope agent` has no flag {flag}:\n{help}"
        );
    }
}

#[test]
#[ignore = "needs python3 with PyYAML: ./scripts/test installs it"]
fn daemonset_settings() {
    let docs = yaml_docs(&path("deploy/kubernetes/daemonset.yaml"));
    let sa = kind(&docs, "ServiceAccount");
    assert_eq!(sa["metadata"]["namespace"], "monitoring");
    assert!(
        docs.iter().all(|d| d["kind"] != "Namespace"),
        "must not create the namespace"
    );
    let ds = kind(&docs, "DaemonSet");
    assert_eq!(ds["metadata"]["namespace"], "monitoring");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    let c = container(pod, "sockscope");
    assert_ebpf_privilege("daemonset", pod, c);
    assert!(pod["hostPID"].is_null() || pod["hostPID"] == false);
    let args: Vec<&str> = arr(&c["args"], "args")
        .iter()
        .map(|a| s(a, "arg"))
        .collect();
    assert_eq!(args[0], "agent");
    assert!(args.contains(&"--web.listen-address=:9977"), "{args:?}");
    assert_eq!(ebpf_args(&args), ["--ebpf=auto"], "{args:?}");
    assert_agent_flags_exist("daemonset", &args);
}

/// The same DaemonSet without eBPF: no privilege at all, --ebpf=off, the
/// same object names (apply one or the other), the same pod otherwise.
#[test]
#[ignore = "needs python3 with PyYAML: ./scripts/test installs it"]
fn daemonset_unprivileged_settings() {
    let docs = yaml_docs(&path("deploy/kubernetes/daemonset-unprivileged.yaml"));
    let ebpf_docs = yaml_docs(&path("deploy/kubernetes/daemonset.yaml"));
    for k in ["ServiceAccount", "DaemonSet"] {
        assert_eq!(
            kind(&docs, k)["metadata"],
            kind(&ebpf_docs, k)["metadata"],
            "{k}: the two DaemonSets replace each other"
        );
    }
    let pod = &kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let c = container(pod, "sockscope");
    assert_least_privilege("daemonset-unprivileged", pod, c);
    let args: Vec<&str> = arr(&c["args"], "args")
        .iter()
        .map(|a| s(a, "arg"))
        .collect();
    assert_eq!(ebpf_args(&args), ["--ebpf=off"], "{args:?}");
    assert_agent_flags_exist("daemonset-unprivileged", &args);
    // Apart from uid, capabilities, --ebpf and memory, the pods are the same.
    let ebpf_pod = &kind(&ebpf_docs, "DaemonSet")["spec"]["template"];
    let strip = |t: &Value| {
        let mut t = t.clone();
        let spec = &mut t["spec"];
        spec["securityContext"] = Value::Null;
        let c = &mut spec["containers"][0];
        c["securityContext"] = Value::Null;
        c["resources"] = Value::Null;
        let args: Vec<Value> = arr(&c["args"], "args")
            .iter()
            .filter(|a| !s(a, "arg").starts_with("--ebpf"))
            .cloned()
            .collect();
        c["args"] = Value::Array(args);
        t
    };
    assert_eq!(
        strip(&kind(&docs, "DaemonSet")["spec"]["template"]),
        strip(ebpf_pod)
    );
}

/// `--netns all`: hostPID and hostNetwork, only SYS_ADMIN and SYS_PTRACE
/// added to an otherwise dropped set, a read-only root.
#[test]
#[ignore = "needs python3 with PyYAML: ./scripts/test installs it"]
fn daemonset_netns_all_settings() {
    let docs = yaml_docs(&path("deploy/kubernetes/daemonset-netns-all.yaml"));
    let sa = kind(&docs, "ServiceAccount");
    let ds = kind(&docs, "DaemonSet");
    assert_eq!(ds["metadata"]["namespace"], "monitoring");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = container(pod, "sockscope");
    let sc = &c["securityContext"];
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["SYS_ADMIN", "SYS_PTRACE"])
    );
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["privileged"], false);
    let args: Vec<&str> = arr(&c["args"], "args")
        .iter()
        .map(|a| s(a, "arg"))
        .collect();
    assert_eq!(args[0], "agent");
    assert!(args.contains(&"--netns=all"), "{args:?}");
    // SYS_ADMIN covers BPF and PERFMON: eBPF on where the node allows it.
    assert_eq!(ebpf_args(&args), ["--ebpf=auto"], "{args:?}");
    assert_agent_flags_exist("daemonset-netns-all", &args);
    assert_image("daemonset-netns-all", c);
}

#[test]
#[ignore = "needs python3 with PyYAML and nginx: ./scripts/test installs it"]
fn sidecar_settings_and_nginx_config() {
    let docs = yaml_docs(&path("deploy/kubernetes/sidecar.yaml"));
    let dep = kind(&docs, "Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    assert!(pod["hostNetwork"].is_null() || pod["hostNetwork"] == false);
    let c = container(pod, "sockscope");
    assert_least_privilege("sidecar", pod, c);
    container(pod, "nginx");
    let args: Vec<&str> = arr(&c["args"], "args")
        .iter()
        .map(|a| s(a, "arg"))
        .collect();
    assert_eq!(args[0], "agent");
    assert!(
        args.contains(&"--nginx.scrape-uri=http://127.0.0.1:8080/stub_status"),
        "{args:?}"
    );
    // No eBPF in an application pod (host-wide program, root + CAP_BPF).
    assert_eq!(ebpf_args(&args), ["--ebpf=off"], "{args:?}");
    assert_agent_flags_exist("sidecar", &args);
    // The demo upstream runs sockscope's own lab server: its flags must exist.
    let app = container(pod, "app");
    assert_image("sidecar app", app);
    let app_args: Vec<&str> = arr(&app["args"], "args")
        .iter()
        .map(|a| s(a, "arg"))
        .collect();
    let o = run(Command::new(env!("CARGO_BIN_EXE_sockscope")).args(["upstream", "--help"]));
    let help = String::from_utf8_lossy(&o.stdout).into_owned();
    for a in app_args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(a.split('=').next().unwrap()),
            "upstream has no {a}:\n{help}"
        );
    }

    let conf = s(
        &kind(&docs, "ConfigMap")["data"]["nginx.conf"],
        "nginx.conf",
    );
    for want in [
        "listen 127.0.0.1:8080;",
        "location = /stub_status",
        "stub_status;",
        "keepalive ",
        "proxy_http_version 1.1;",
        "proxy_set_header Connection \"\";",
    ] {
        assert!(conf.contains(want), "nginx.conf lacks {want:?}");
    }

    // nginx -t on the config.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("nginx.conf");
    std::fs::write(&f, conf).unwrap();
    let prefix = format!("{}/", dir.path().display());
    let o = run(prereq::command("nginx")
        .args(["-t", "-q", "-e", "/dev/stderr", "-p", &prefix, "-c"])
        .arg(&f));
    assert!(
        o.status.success(),
        "nginx -t rejects the ConfigMap's nginx.conf:\n{}",
        text(&o)
    );
}

/// kubernetes-validate has no schema for custom resources (it only warns
/// "Couldn't find schema for kind PodMonitor" and passes); the
/// prometheus-operator CRD is not vendored here (tests/helm_chart.rs
/// validates this PodMonitor against it where the CRDs are present). Here
/// its core fields, against the other manifests: known keys, the selector
/// matching both pod templates, the `metrics` port and a job label the
/// alerts expect.
#[test]
#[ignore = "needs python3 with PyYAML: ./scripts/test installs it"]
fn podmonitor_core_fields() {
    let pm = yaml("deploy/kubernetes/podmonitor.yaml");
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["kind"], "PodMonitor");
    assert!(pm["metadata"]["name"].is_string());
    assert_eq!(pm["metadata"]["namespace"], "monitoring");
    let spec = pm["spec"].as_object().expect("spec");
    for k in spec.keys() {
        assert!(
            [
                "selector",
                "namespaceSelector",
                "podMetricsEndpoints",
                "jobLabel",
                "podTargetLabels",
                "sampleLimit",
                "targetLimit",
            ]
            .contains(&k.as_str()),
            "PodMonitor spec has unknown key {k}"
        );
    }
    let match_labels = pm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector.matchLabels");
    assert!(!match_labels.is_empty());
    let eps = arr(&pm["spec"]["podMetricsEndpoints"], "podMetricsEndpoints");
    assert!(!eps.is_empty());
    let mut job = None;
    for ep in eps {
        for k in ep.as_object().expect("endpoint").keys() {
            assert!(
                [
                    "port",
                    "path",
                    "interval",
                    "scrapeTimeout",
                    "scheme",
                    "honorLabels",
                    "relabelings",
                    "metricRelabelings"
                ]
                .contains(&k.as_str()),
                "podMetricsEndpoints has unknown key {k}"
            );
        }
        assert_eq!(ep["port"], "metrics");
        for r in ep["relabelings"].as_array().into_iter().flatten() {
            for k in r.as_object().expect("relabeling").keys() {
                assert!(
                    [
                        "action",
                        "sourceLabels",
                        "targetLabel",
                        "replacement",
                        "regex",
                        "separator",
                        "modulus"
                    ]
                    .contains(&k.as_str()),
                    "relabeling has unknown key {k}"
                );
            }
            if r["targetLabel"] == "job" {
                job = r["replacement"].as_str().map(str::to_owned);
            }
        }
    }
    let job =
        job.expect("a relabeling that sets job (the operator's default is <namespace>/<name>)");
    assert!(
        job.starts_with("sockscope"),
        "job {job} breaks SockscopeAgentAbsent"
    );

    // It selects the pods of both workloads, on their `metrics` port.
    for (file, k) in [
        ("deploy/kubernetes/daemonset.yaml", "DaemonSet"),
        ("deploy/kubernetes/daemonset-unprivileged.yaml", "DaemonSet"),
        ("deploy/kubernetes/daemonset-netns-all.yaml", "DaemonSet"),
        ("deploy/kubernetes/sidecar.yaml", "Deployment"),
    ] {
        let docs = yaml_docs(&path(file));
        let tmpl = &kind(&docs, k)["spec"]["template"];
        for (l, v) in match_labels {
            assert_eq!(&tmpl["metadata"]["labels"][l], v, "{file}: pod label {l}");
        }
        let c = container(&tmpl["spec"], "sockscope");
        assert!(
            arr(&c["ports"], "ports")
                .iter()
                .any(|p| p["name"] == "metrics")
        );
    }
}

// ---------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------

const UNIT: &str = "deploy/systemd/sockscope.service";

#[test]
fn systemd_unit_settings() {
    let unit = read(UNIT);
    let directives: Vec<(&str, &str)> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |k: &str| -> Vec<&str> {
        directives
            .iter()
            .filter(|(n, _)| *n == k)
            .map(|(_, v)| *v)
            .collect()
    };
    for (k, v) in [
        ("ExecStart", "/usr/local/bin/sockscope agent"),
        ("Restart", "on-failure"),
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        (
            "RestrictAddressFamilies",
            "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        ),
        ("CapabilityBoundingSet", "CAP_BPF CAP_PERFMON"),
        ("AmbientCapabilities", "CAP_BPF CAP_PERFMON"),
        ("LimitMEMLOCK", "16M"),
        ("SystemCallFilter", "@system-service"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
    ] {
        assert!(
            get(k).contains(&v),
            "{UNIT}: expected {k}={v}, found {:?}",
            get(k)
        );
    }
    // The eBPF source's two capabilities and nothing else, in both sets.
    for k in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        assert_eq!(get(k), ["CAP_BPF CAP_PERFMON"], "{UNIT}: {k}");
    }
    // The allow list, then @privileged taken out, then bpf(2) alone put back
    // (order matters: each line edits the list the first one started).
    assert_eq!(
        get("SystemCallFilter"),
        ["@system-service", "~@privileged", "bpf"],
        "{UNIT}"
    );
    // It would hide the host's sockets; ProcSubset=pid would hide /proc/net.
    assert!(
        get("PrivateNetwork").is_empty(),
        "{UNIT} must not set PrivateNetwork"
    );
    assert!(
        get("ProcSubset").is_empty(),
        "{UNIT} must not set ProcSubset"
    );
    assert!(get("ProtectProc").iter().all(|v| *v != "noaccess"));
}

/// Every `file://` of `Documentation=` is a file that the unit's header
/// (its install recipe) installs, from a file of this repository.
#[test]
fn systemd_documentation_is_installed() {
    let unit = read(UNIT);
    let installs: Vec<(String, String)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(str::trim)
        .filter(|l| l.starts_with("install "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let (src, dst) = (w[w.len() - 2], w[w.len() - 1]);
            let dst = match dst.strip_suffix('/') {
                Some(dir) => format!("{dir}/{}", src.rsplit('/').next().unwrap()),
                None => dst.to_owned(),
            };
            (src.to_owned(), dst)
        })
        .collect();
    let docs: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Documentation="))
        .flat_map(str::split_whitespace)
        .collect();
    assert!(!docs.is_empty(), "{UNIT}: a Documentation= line");
    for doc in docs {
        let Some(file) = doc.strip_prefix("file://") else {
            continue;
        };
        let (src, _) = installs
            .iter()
            .find(|(_, dst)| dst == file)
            .unwrap_or_else(|| {
                panic!("{UNIT}: Documentation={doc} is installed by none of {installs:?}")
            });
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(src).is_file(),
            "{UNIT}: installs {src}, which is not in the repository"
        );
    }
}

#[test]
#[ignore = "needs systemd-analyze: ./scripts/test installs it"]
fn systemd_analyze_verify_and_security() {
    // A copy of the unit whose ExecStart is the binary under test (verify
    // checks the executable exists).
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("sockscope");
    std::fs::copy(env!("CARGO_BIN_EXE_sockscope"), &bin).unwrap();
    let unit = read(UNIT);
    assert!(unit.contains("\nExecStart=/usr/local/bin/sockscope agent\n"));
    let unit = unit.replace(
        "\nExecStart=/usr/local/bin/sockscope agent\n",
        &format!("\nExecStart={} agent\n", bin.display()),
    );
    let f = dir.path().join("sockscope.service");
    std::fs::write(&f, unit).unwrap();

    let o = run(prereq::command("systemd-analyze").arg("verify").arg(&f));
    let t = text(&o);
    // Unknown keys and bad values are warnings with exit status 0: fail on
    // any line about this unit (other units of the host may be noisy).
    let about_unit: Vec<&str> = t
        .lines()
        .filter(|l| l.contains("sockscope.service"))
        .collect();
    assert!(
        o.status.success() && about_unit.is_empty(),
        "systemd-analyze verify:\n{t}"
    );

    // bpf(2) is in @privileged and not in @system-service: the unit's
    // `SystemCallFilter=bpf` after `~@privileged` is what lets it through.
    let set = |name: &str| {
        let o = assert_ok(prereq::command("systemd-analyze").args(["syscall-filter", name]));
        text(&o).lines().map(str::trim).any(|l| l == "bpf")
    };
    assert!(set("@privileged") && !set("@system-service"));
    // And systemd reads the unit's filter as allowing it (its own words).
    let o = run(prereq::command("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&f));
    assert!(
        text(&o).contains("bpf is allowed"),
        "systemd-analyze security does not see bpf(2) allowed:\n{}",
        text(&o)
    );

    // The hardening keeps systemd's exposure score at "OK" (<= 2.0).
    let o = run(prereq::command("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&f));
    assert!(
        o.status.success(),
        "systemd-analyze security scores the unit above 2.0:\n{}",
        text(&o)
    );
}

/// The intervals the rules need ship with them: the port and listener
/// rule groups are evaluated every 5s, and every shipped way of scraping
/// the agent (scrape.yml's two jobs, the PodMonitor) scrapes it every 5s.
#[test]
#[ignore = "needs python3 with PyYAML: ./scripts/test installs it"]
fn shipped_intervals_are_the_ones_the_rules_need() {
    let alerts = yaml("deploy/prometheus/alerts.yml");
    let mut fast = 0;
    for g in arr(&alerts["groups"], "groups") {
        let name = s(&g["name"], "group name");
        if name == "sockscope.ephemeral-ports" || name == "sockscope.listeners" {
            assert_eq!(g["interval"], "5s", "group {name}");
            fast += 1;
        }
    }
    assert_eq!(fast, 2, "both paging groups found");
    let scrape = yaml("deploy/prometheus/scrape.yml");
    let jobs = arr(&scrape["scrape_configs"], "scrape_configs");
    assert!(!jobs.is_empty());
    for j in jobs {
        assert_eq!(j["scrape_interval"], "5s", "job {}", j["job_name"]);
    }
    let pm = yaml("deploy/kubernetes/podmonitor.yaml");
    for ep in arr(&pm["spec"]["podMetricsEndpoints"], "podMetricsEndpoints") {
        assert_eq!(ep["interval"], "5s");
    }
}

// ---------------------------------------------------------------------------
// Licence
// ---------------------------------------------------------------------------

/// Apache-2.0: the LICENSE text at the root and `license` in every crate's
/// manifest (the root package and the lab through `[workspace.package]`,
/// the fuzz crate on its own).
#[test]
fn licence_is_apache_2_0_everywhere() {
    let licence = read("LICENSE");
    assert!(
        licence.trim_start().starts_with("Apache License")
            && licence.contains("Version 2.0, January 2004")
            && licence.contains("END OF TERMS AND CONDITIONS"),
        "LICENSE is not the Apache License 2.0 text"
    );
    // Cargo's own reading of the manifests.
    let licences = |manifest: &str| -> Vec<(String, String)> {
        let o = assert_ok(Command::new(env!("CARGO")).args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version=1",
            "--manifest-path",
            &path(manifest).to_string_lossy(),
        ]));
        let m: Value = serde_json::from_slice(&o.stdout).expect("cargo metadata's JSON");
        arr(&m["packages"], "packages")
            .iter()
            .map(|p| (p["name"].to_string(), p["license"].to_string()))
            .collect()
    };
    let mut all = licences("Cargo.toml");
    all.extend(licences("fuzz/Cargo.toml"));
    let names: BTreeSet<&str> = all.iter().map(|(n, _)| n.trim_matches('"')).collect();
    assert_eq!(
        names,
        BTreeSet::from(["sockscope", "sockscope-lab", "sockscope-fuzz"])
    );
    for (name, licence) in &all {
        assert_eq!(licence, "\"Apache-2.0\"", "{name}");
    }
}

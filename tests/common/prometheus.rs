//! A real Prometheus loaded as users load it: `deploy/prometheus/scrape.yml`
//! as shipped, with only what is the user's changed; and its HTTP API.

use std::path::Path;

/// Where the tests' Prometheus listens (in their own network namespace).
pub const PROM: &str = "127.0.0.1:9090";

/// One keep-alive client for Prometheus: a new connection per request would
/// fill a test namespace's small port range toward Prometheus with
/// TIME_WAIT.
fn client() -> &'static ureq::Agent {
    static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    AGENT.get_or_init(ureq::Agent::new_with_defaults)
}

/// GET `path` of Prometheus's HTTP API; returns the `data` member (panics
/// on an error or a status other than success).
pub fn api(path: &str) -> serde_json::Value {
    let body = client()
        .get(&format!("http://{PROM}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .into_body()
        .read_to_string()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{path}: {body}");
    v["data"].clone()
}

/// An instant query's result vector.
pub fn query(expr: &str) -> Vec<serde_json::Value> {
    api(&format!("/api/v1/query?query={}", encode(expr)))["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `expr` percent-encoded for a query string.
pub fn encode(expr: &str) -> String {
    expr.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The body of Prometheus's own `/metrics`.
pub fn own_metrics() -> String {
    client()
        .get(&format!("http://{PROM}/metrics"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap()
}

/// `scrape.yml`'s global settings and its `sockscope` job as shipped (its
/// `scrape_interval` included), the target set to `agent` (the
/// `sockscope-pods` job is left out: Debian's Prometheus is built without
/// Kubernetes discovery), and the shipped `alerts.yml` and `recording.yml`
/// read in place, byte for byte.
pub fn shipped_config(agent: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    let text = std::fs::read_to_string(root.join("scrape.yml")).unwrap();
    let mut cfg: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let jobs = cfg["scrape_configs"].as_sequence_mut().unwrap();
    jobs.retain(|j| j["job_name"] == "sockscope");
    assert_eq!(jobs.len(), 1, "scrape.yml has the sockscope job");
    jobs[0]["static_configs"] =
        serde_yaml_ng::from_str(&format!("[{{targets: ['{agent}']}}]")).unwrap();
    cfg["rule_files"] = serde_yaml_ng::Value::Sequence(
        ["alerts.yml", "recording.yml"]
            .iter()
            .map(|f| root.join(f).display().to_string().into())
            .collect(),
    );
    serde_yaml_ng::to_string(&cfg).unwrap()
}

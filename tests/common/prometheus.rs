//! A real Prometheus loaded as users load it: `deploy/prometheus/scrape.yml`
//! as shipped, with only what is the user's changed.

use std::path::Path;

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

//! `--netns all`: what each network namespace is (`sockscope_netns_info`),
//! how many were found and left out, and the namespaces that could not be
//! entered. The per-namespace figures themselves are the other analyses',
//! encoded once per namespace under the label `netns`.

use crate::metrics::Families;
use crate::source::ErrorReason;

crate::metric_specs! {
    NETNS_INFO = "sockscope_netns_info", Gauge, ["netns", "name", "hostname", "pod_uid", "pid", "comm", "agent"],
        "1 per reported network namespace: its inode (netns, as lsns prints it), its /run/netns name, the UTS hostname of its lowest pid (on Kubernetes the pod's name), the pod UID from that process's cgroup (join kube_pod_info{uid}), the pid and its comm (empty strings where there are none), and agent=\"true\" for the namespace the agent itself runs in (\"false\" for the others).";
    NETNS_DISCOVERED = "sockscope_netns_discovered", Gauge, [],
        "Network namespaces found under /proc/[pid]/ns/net and /run/netns at the latest poll.";
    NETNS_OVER_LIMIT = "sockscope_netns_over_limit", Gauge, [],
        "Namespaces found but not reported: beyond --netns.max-namespaces, the ones with the fewest sockets.";
    NETNS_ERRORS = "sockscope_netns_errors_total", Counter, ["reason"],
        "Failures by reason, counted on every poll: one per process whose /proc/PID/ns/net could not be read (its namespace is unknown, so a namespace with several such processes counts several times), one per namespace that could not be entered. Reasons: eacces (another user's process without CAP_SYS_PTRACE), eperm (setns without CAP_SYS_ADMIN), other errno names. A process that exits meanwhile is not counted; what failed is logged at debug.";
}

/// What one reported namespace is.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetnsInfo {
    /// Inode number of the namespace (`netns` label).
    pub inode: u64,
    /// Its `/run/netns` name, or empty.
    pub name: String,
    /// UTS hostname of its lowest pid, or empty (no process).
    pub hostname: String,
    /// Kubernetes pod UID of that process's cgroup, or empty.
    pub pod_uid: String,
    /// Its lowest pid.
    pub pid: Option<u32>,
    /// That process's `comm`, or empty.
    pub comm: String,
    /// The namespace the agent itself runs in (`agent="true"`).
    pub agent: bool,
}

impl NetnsInfo {
    /// The `netns` label value.
    pub fn label(&self) -> String {
        self.inode.to_string()
    }

    /// `sockscope_netns_info` for this namespace.
    pub fn encode(&self, out: &mut Families) {
        let pid = self.pid.map(|p| p.to_string()).unwrap_or_default();
        out.push(
            &NETNS_INFO,
            &[
                &self.label(),
                &self.name,
                &self.hostname,
                &self.pod_uid,
                &pid,
                &self.comm,
                if self.agent { "true" } else { "false" },
            ],
            1.0,
        );
    }
}

/// Counts across polls and the latest discovery.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetnsStats {
    pub discovered: u64,
    pub over_limit: u64,
    /// Failures by reason since start (only the reasons seen).
    #[serde(serialize_with = "super::serialize_counts")]
    pub errors_total: Vec<(&'static str, u64)>,
}

impl NetnsStats {
    /// Builds the error list from per-reason totals.
    pub fn errors(totals: &[u64; ErrorReason::ALL.len()]) -> Vec<(&'static str, u64)> {
        ErrorReason::ALL
            .iter()
            .filter(|r| totals[r.index()] > 0)
            .map(|r| (r.label(), totals[r.index()]))
            .collect()
    }

    /// The discovery families.
    pub fn encode(&self, out: &mut Families) {
        out.one(&NETNS_DISCOVERED, Some(self.discovered as f64));
        out.one(&NETNS_OVER_LIMIT, Some(self.over_limit as f64));
        for &(reason, n) in &self.errors_total {
            out.push(&NETNS_ERRORS, &[reason], n as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded() {
        let info = NetnsInfo {
            inode: 4026532281,
            name: String::new(),
            hostname: "web-7d4f".into(),
            pod_uid: "3f1c2d4e-5a6b-7c8d-9e0f-112233445566".into(),
            pid: Some(4242),
            comm: "nginx".into(),
            agent: false,
        };
        let mut totals = [0; ErrorReason::ALL.len()];
        totals[ErrorReason::Eperm.index()] = 3;
        let stats = NetnsStats {
            discovered: 5,
            over_limit: 1,
            errors_total: NetnsStats::errors(&totals),
        };
        let text = crate::metrics::encoded(|f| {
            info.encode(f);
            stats.encode(f);
        });
        for line in [
            "sockscope_netns_info{netns=\"4026532281\",name=\"\",hostname=\"web-7d4f\",pod_uid=\"3f1c2d4e-5a6b-7c8d-9e0f-112233445566\",pid=\"4242\",comm=\"nginx\",agent=\"false\"} 1\n",
            "sockscope_netns_discovered 5\n",
            "sockscope_netns_over_limit 1\n",
            "sockscope_netns_errors_total{reason=\"eperm\"} 3\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}

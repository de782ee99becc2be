//! `--source auto` under a seccomp filter that denies netlink sockets
//! (`socket(AF_NETLINK, ...)` → `EPERM`, as a container runtime's profile
//! can): the agent falls back per family to procfs, reports the netlink
//! sources down, and keeps serving every figure. With `--source netlink`
//! the socket figures are absent, never zeros, and the scrape still works.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use common::agent::Agent;

/// Classic-BPF seccomp program: `socket(AF_NETLINK, ...)` fails with EPERM,
/// everything else is allowed (seccomp(2), linux/filter.h).
fn deny_netlink_filter() -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const RET_ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    const RET_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32; // SECCOMP_RET_ERRNO | EPERM
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        op(LD_W_ABS, 0, 0, 4),                    // A = seccomp_data.arch
        op(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),       // x86_64? skip the next
        op(RET_K, 0, 0, RET_ALLOW),               // other arch: allow
        op(LD_W_ABS, 0, 0, 0),                    // A = seccomp_data.nr
        op(JEQ_K, 0, 3, libc::SYS_socket as u32), // socket()? else allow
        op(LD_W_ABS, 0, 0, 16),                   // A = args[0] (domain), low word
        op(JEQ_K, 0, 1, libc::AF_NETLINK as u32), // AF_NETLINK? else allow
        op(RET_K, 0, 0, RET_EPERM),
        op(RET_K, 0, 0, RET_ALLOW),
    ]
}

/// Makes `cmd`'s child install the filter before exec.
fn with_netlink_denied(cmd: &mut Command) {
    let filter = deny_netlink_filter();
    // SAFETY: prctl(2) calls with a program that outlives them; both are
    // async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn auto_falls_back_to_procfs_when_netlink_is_denied() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let label = listener.local_addr().unwrap().to_string();
    let agent = Agent::start_with(&["--source", "auto"], with_netlink_denied);
    let body = agent.scrape();
    for (source, up) in [
        ("inet_diag_ipv4", 0),
        ("inet_diag_ipv6", 0),
        ("unix_diag", 0),
        ("proc_net_tcp", 1),
        ("proc_net_tcp6", 1),
        ("proc_net_unix", 1),
    ] {
        let line = format!("sockscope_source_up{{source=\"{source}\"}} {up}");
        assert!(body.contains(&line), "missing {line}\n{body}");
    }
    // The figures come from procfs: our listener is there (procfs has no
    // accept-queue limit, so the limit series is absent for it).
    let len = format!("sockscope_listen_queue_length{{proto=\"tcp\",listener=\"{label}\"}} 0");
    assert!(body.contains(&len), "missing {len}");
    assert!(body.contains("sockscope_tcp_sockets{family=\"ipv4\",state=\"listen\"}"));
    assert!(body.contains("sockscope_unix_sockets{"));
    let log = agent.stop();
    let warnings = log.lines().filter(|l| l.contains("source failed")).count();
    assert_eq!(
        warnings, 3,
        "one warning per failed netlink source, not one per poll:\n{log}"
    );
    assert!(
        log.contains("Operation not permitted"),
        "the warning says why:\n{log}"
    );
}

#[test]
#[cfg(target_arch = "x86_64")]
fn netlink_only_reports_down_and_absent_not_zero() {
    let agent = Agent::start_with(&["--source", "netlink"], with_netlink_denied);
    let body = agent.scrape();
    assert!(body.contains("sockscope_source_up{source=\"inet_diag_ipv4\"} 0"));
    assert!(body.contains("sockscope_source_up{source=\"unix_diag\"} 0"));
    assert!(
        !body.contains("proc_net_tcp\""),
        "no fallback with --source netlink"
    );
    let samples: Vec<&str> = body.lines().filter(|l| !l.starts_with('#')).collect();
    for absent in [
        "sockscope_tcp_sockets{",
        "sockscope_unix_sockets{",
        "sockscope_ephemeral_ports_available{",
    ] {
        assert!(
            !samples.iter().any(|l| l.starts_with(absent)),
            "{absent} must be absent, not zero"
        );
    }
    // The sources that do not need netlink still serve.
    assert!(body.contains("sockscope_source_up{source=\"sysctl\"} 1"));
    assert!(body.contains("sockscope_sysctl_somaxconn "));
}

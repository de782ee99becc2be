use super::*;

#[test]
fn ns_links() {
    assert_eq!(parse_ns_link("net:[4026531840]"), Some(4026531840));
    assert_eq!(parse_ns_link("uts:[4026531838]"), None);
    assert_eq!(parse_ns_link("net:[x]"), None);
    assert_eq!(parse_ns_link("net:4026531840"), None);
}

#[test]
fn pod_uids_in_both_kubelet_layouts() {
    // systemd cgroup driver (cgroup v2), Burstable pod.
    let systemd = "0::/kubepods.slice/kubepods-burstable.slice/\
                   kubepods-burstable-pod3f1c2d4e_5a6b_7c8d_9e0f_112233445566.slice/\
                   cri-containerd-0123abcd.scope\n";
    assert_eq!(
        parse_pod_uid(systemd).as_deref(),
        Some("3f1c2d4e-5a6b-7c8d-9e0f-112233445566")
    );
    // systemd driver, Guaranteed pod (no QoS part).
    let guaranteed =
        "0::/kubepods.slice/kubepods-pod0a1b2c3d_0000_1111_2222_333344445555.slice/x\n";
    assert_eq!(
        parse_pod_uid(guaranteed).as_deref(),
        Some("0a1b2c3d-0000-1111-2222-333344445555")
    );
    // cgroupfs driver (cgroup v1), BestEffort and Guaranteed.
    let cgroupfs = "12:pids:/kubepods/besteffort/pod3f1c2d4e-5a6b-7c8d-9e0f-112233445566/0123abcd\n\
                    1:name=systemd:/kubepods/besteffort/pod3f1c2d4e-5a6b-7c8d-9e0f-112233445566/0123abcd\n";
    assert_eq!(
        parse_pod_uid(cgroupfs).as_deref(),
        Some("3f1c2d4e-5a6b-7c8d-9e0f-112233445566")
    );
    let cgroupfs_g = "8:pids:/kubepods/pod3f1c2d4e-5a6b-7c8d-9e0f-112233445566/abc\n";
    assert!(parse_pod_uid(cgroupfs_g).is_some());
    // Not a pod.
    assert_eq!(
        parse_pod_uid("0::/user.slice/user-0.slice/session-1.scope\n"),
        None
    );
    assert_eq!(parse_pod_uid("0::/system.slice/podman.service\n"), None);
    assert_eq!(parse_pod_uid("garbage"), None);
}

#[test]
fn discovers_own_namespace() {
    let own = own_inode(Path::new("/proc")).unwrap();
    let d = discover(Path::new("/proc"), Path::new("/nonexistent/run/netns"));
    let me = std::process::id();
    let ours = d
        .found
        .iter()
        .find(|f| f.inode == own)
        .expect("our namespace");
    assert!(ours.pid.unwrap() <= me, "the lowest pid in it: {ours:?}");
    let inodes: Vec<u64> = d.found.iter().map(|f| f.inode).collect();
    let mut sorted = inodes.clone();
    sorted.dedup();
    assert_eq!(inodes, sorted, "one entry per namespace, sorted");
    assert_eq!(process_info(Path::new("/proc"), me).pod_uid, "");
}

proptest::proptest! {
    #[test]
    fn parsers_never_panic(s in "\\PC{0,200}") {
        let _ = parse_ns_link(&s);
        let _ = parse_pod_uid(&s);
    }
}

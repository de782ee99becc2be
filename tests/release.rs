//! `scripts/release` and what it writes to `dist/`:
//!
//! - `SHA256SUMS`, which `sha256sum -c` verifies;
//! - the tarball: LICENSE, README, CHANGELOG, deploy/ and dashboards/, and
//!   a binary that is static (no ELF interpreter, no shared library) and
//!   runs `--version` alone in an empty root;
//! - the `.deb`, installed with `dpkg -i` into a fresh Debian 12 root
//!   (`debootstrap --variant=minbase`, plus `systemd`, as a host that runs
//!   the unit has it): the binary, the unit in systemd's unit directory
//!   with a `Documentation=` that exists there, `/etc/default/sockscope`
//!   and the copyright file land where they belong, `systemd-analyze
//!   verify --root` accepts the unit, and `dpkg --purge` takes it all away;
//! - the image as an OCI archive.
//!
//! Needs root (chroot, debootstrap), network to the host's Debian mirror,
//! and what scripts/image needs; `./scripts/test` installs the tools. The
//! podman settings of this sandbox (tests/container_image.rs) are passed
//! here too.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::prereq;
use common::process::{ok_stdout as ok, output_text as text, run_cmd as run};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The host's Debian mirror, as scripts/fresh-machine-check finds it.
fn mirror() -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "sources"))
    {
        let t = std::fs::read_to_string(f).unwrap_or_default();
        if let Some(uri) = t.lines().find_map(|l| l.strip_prefix("URIs:")) {
            return uri.split_whitespace().next().unwrap().to_owned();
        }
    }
    let t = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    t.lines()
        .find_map(|l| l.strip_prefix("deb "))
        .and_then(|l| l.split_whitespace().find(|w| w.contains("://")))
        .expect("no Debian mirror in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list")
        .to_owned()
}

fn assert_static(bin: &Path) {
    let program = ok(prereq::command("readelf").args(["-lW"]).arg(bin));
    assert!(
        !program.contains("INTERP"),
        "{bin:?} asks for an ELF interpreter:\n{program}"
    );
    let dynamic = ok(prereq::command("readelf").args(["-dW"]).arg(bin));
    assert!(
        !dynamic.contains("(NEEDED)"),
        "{bin:?} needs shared libraries:\n{dynamic}"
    );
}

/// A `.service` file's `Key=value` lines.
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
#[ignore = "needs root, debootstrap and a Debian mirror, podman and the musl target: ./scripts/test installs them"]
fn release_artifacts_install_and_verify() {
    let version = env!("CARGO_PKG_VERSION");
    let dist = root().join("dist");
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(
        conf.path().join("containers.conf"),
        "[containers]\n\
         default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
         [engine]\n\
         runtime = \"runc\"\n",
    )
    .unwrap();
    let start = Instant::now();
    ok(Command::new(root().join("scripts/release"))
        .env("CONTAINERS_CONF", conf.path().join("containers.conf"))
        .env("CARGO_BUILD_JOBS", "1"));
    eprintln!("scripts/release took {:?}", start.elapsed());

    // --- dist/ and its checksums.
    let tarball = format!("sockscope-{version}-x86_64-linux-musl.tar.gz");
    let deb = format!("sockscope_{version}_amd64.deb");
    let oci = format!("sockscope-{version}.oci.tar");
    let names: BTreeSet<String> = std::fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let want: BTreeSet<String> = [&tarball, &deb, &oci, "SHA256SUMS"]
        .into_iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, want, "dist/");
    let sums = ok(Command::new("sha256sum")
        .args(["--strict", "-c", "SHA256SUMS"])
        .current_dir(&dist));
    for f in [&tarball, &deb, &oci] {
        assert!(sums.contains(&format!("{f}: OK")), "{sums}");
    }

    // --- The tarball.
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    ok(Command::new("tar")
        .arg("-xzf")
        .arg(dist.join(&tarball))
        .arg("-C")
        .arg(work.path()));
    let top = work
        .path()
        .join(format!("sockscope-{version}-x86_64-linux-musl"));
    for f in [
        "sockscope",
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "deploy/systemd/sockscope.service",
        "deploy/prometheus/alerts.yml",
        "deploy/kubernetes/daemonset.yaml",
        "deploy/kubernetes/daemonset-unprivileged.yaml",
        "deploy/helm/sockscope/Chart.yaml",
        "dashboards/sockscope.json",
    ] {
        assert!(top.join(f).is_file(), "the tarball has no {f}");
    }
    assert_eq!(
        std::fs::read(top.join("LICENSE")).unwrap(),
        std::fs::read(root().join("LICENSE")).unwrap()
    );
    let bin = top.join("sockscope");
    assert_static(&bin);
    // Alone in an empty root: no libc to lean on.
    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::copy(&bin, empty.join("sockscope")).unwrap();
    let out = ok(Command::new("chroot")
        .arg(&empty)
        .args(["/sockscope", "--version"]));
    assert_eq!(out.trim(), format!("sockscope {version}"));

    // --- The OCI archive.
    let listing = ok(Command::new("tar").arg("-tf").arg(dist.join(&oci)));
    for f in ["oci-layout", "index.json"] {
        assert!(
            listing.lines().any(|l| l == f),
            "{oci} has no {f}:\n{listing}"
        );
    }

    // --- The .deb: its fields, then installed into a fresh Debian root.
    let deb_path = dist.join(&deb);
    for (field, want) in [
        ("Package", "sockscope"),
        ("Version", version),
        ("Architecture", "amd64"),
    ] {
        let v = ok(prereq::command("dpkg-deb")
            .args(["--field"])
            .arg(&deb_path)
            .arg(field));
        assert_eq!(v.trim(), want, "{deb}: {field}");
    }
    let fresh = work.path().join("bookworm");
    let start = Instant::now();
    let o = run(prereq::command("debootstrap")
        .args(["--variant=minbase", "--include=systemd", "bookworm"])
        .arg(&fresh)
        .arg(mirror()));
    assert!(o.status.success(), "debootstrap:\n{}", text(&o));
    eprintln!("debootstrap took {:?}", start.elapsed());
    std::fs::copy(&deb_path, fresh.join("tmp").join(&deb)).unwrap();
    let chroot = |args: &[&str]| -> Output { run(Command::new("chroot").arg(&fresh).args(args)) };
    let o = chroot(&["dpkg", "-i", &format!("/tmp/{deb}")]);
    assert!(o.status.success(), "dpkg -i:\n{}", text(&o));
    let o = chroot(&[
        "dpkg-query",
        "-W",
        "-f",
        "${Status} ${Version}",
        "sockscope",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("install ok installed {version}")
    );

    let bin = fresh.join("usr/bin/sockscope");
    let mode = std::fs::metadata(&bin).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755, "/usr/bin/sockscope mode");
    let o = chroot(&["/usr/bin/sockscope", "--version"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("sockscope {version}")
    );

    // The unit, in a directory this root's systemd reads units from.
    let unit_dir = "/usr/lib/systemd/system";
    let o = chroot(&["systemd-analyze", "unit-paths"]);
    let paths = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success() && paths.lines().any(|l| l == unit_dir),
        "{unit_dir} is not among systemd's unit paths:\n{}",
        text(&o)
    );
    let unit = std::fs::read_to_string(fresh.join(&unit_dir[1..]).join("sockscope.service"))
        .expect("the unit in systemd's unit directory");
    let d = directives(&unit);
    let get = |k: &str| -> Vec<&str> {
        d.iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("ExecStart"), ["/usr/bin/sockscope agent $ARGS"]);
    assert_eq!(get("EnvironmentFile"), ["-/etc/default/sockscope"]);
    let docs = get("Documentation");
    assert_eq!(docs.len(), 1, "{docs:?}");
    let doc = docs[0]
        .strip_prefix("file://")
        .expect("Documentation=file://…");
    assert!(
        fresh.join(doc.trim_start_matches('/')).is_file(),
        "Documentation={} does not exist in the installed root",
        docs[0]
    );
    // The repository's hardening came along.
    for (k, v) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        // Exactly the eBPF source's two capabilities (README "Privileges").
        ("CapabilityBoundingSet", "CAP_BPF CAP_PERFMON"),
        ("AmbientCapabilities", "CAP_BPF CAP_PERFMON"),
    ] {
        assert_eq!(get(k), [v], "{k}");
    }
    let default = std::fs::read_to_string(fresh.join("etc/default/sockscope")).unwrap();
    assert!(default.lines().any(|l| l == "ARGS=\"\""), "{default}");
    let copyright =
        std::fs::read_to_string(fresh.join("usr/share/doc/sockscope/copyright")).unwrap();
    assert!(copyright.contains("License: Apache-2.0"), "{copyright}");

    let o = run(prereq::command("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", fresh.display()))
        .arg(format!("{unit_dir}/sockscope.service")));
    let t = text(&o);
    let about_unit: Vec<&str> = t
        .lines()
        .filter(|l| l.contains("sockscope.service"))
        .collect();
    assert!(
        o.status.success() && about_unit.is_empty(),
        "systemd-analyze verify --root:\n{t}"
    );

    // Purged: nothing left behind, the conffile included.
    let o = chroot(&["dpkg", "--purge", "sockscope"]);
    assert!(o.status.success(), "dpkg --purge:\n{}", text(&o));
    for f in [
        "usr/bin/sockscope",
        "usr/lib/systemd/system/sockscope.service",
        "etc/default/sockscope",
        "usr/share/doc/sockscope/copyright",
    ] {
        assert!(!fresh.join(f).exists(), "{f} left after dpkg --purge");
    }
}

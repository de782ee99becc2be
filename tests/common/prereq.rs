//! The one skip policy of the test suite.
//!
//! A test that needs root or a tool beyond Rust is marked
//! `#[ignore = "needs …"]`: a plain `cargo test` reports it as ignored, with
//! that reason, never as passed. `./scripts/test` installs every
//! prerequisite and runs with `--include-ignored`, so there, a prerequisite
//! that is still missing fails the test with a message naming it and how to
//! get it (the functions below panic; none of them skips).
//!
//! Tools are looked up first in the checkout's `.venv/bin` (where
//! `./scripts/test` installs the Python modules, `kubernetes-validate` and
//! helm),
//! then on `PATH`, then in `/usr/sbin` and `/sbin` (nginx, ip).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The checkout's virtual environment, made by `./scripts/test`.
pub fn venv_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin")
}

fn executable(p: &Path) -> bool {
    p.metadata().is_ok_and(|m| {
        m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
    })
}

/// Where `name` is found: `.venv/bin`, `PATH`, `/usr/sbin`, `/sbin`; `None`
/// when nowhere.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs = vec![venv_bin()];
    if let Some(paths) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&paths));
    }
    dirs.extend(["/usr/sbin".into(), "/sbin".into()]);
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| executable(p))
}

/// How to get `name`, for the failure message.
fn hint(name: &str) -> &'static str {
    match name {
        "ss" | "ip" => "Debian package iproute2",
        "unshare" | "setpriv" | "nsenter" => "Debian package util-linux",
        "promtool" => "Debian package prometheus",
        "prometheus" => "Debian package prometheus",
        "nginx" => "Debian package nginx-light",
        "systemd-analyze" => "Debian package systemd",
        "kubernetes-validate" => "pip package kubernetes-validate, in .venv",
        "python3" => "Debian packages python3 and python3-venv",
        "curl" => "Debian package curl",
        "openssl" => "Debian package openssl",
        "helm" => "helm from npm, pinned, in .venv/bin",
        "podman" => "Debian package podman",
        "runc" => "Debian package runc",
        "musl-gcc" => "Debian package musl-tools",
        "readelf" => "Debian package binutils",
        "debootstrap" => "Debian package debootstrap",
        "dpkg-deb" | "dpkg" => "Debian package dpkg",
        _ => "see scripts/test",
    }
}

/// The path of `name` ([`find_tool`]); panics naming the tool and its
/// package when it is missing.
pub fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "prerequisite missing: `{name}` is not in .venv/bin, PATH or /usr/sbin \
             ({}); ./scripts/test installs it",
            hint(name)
        )
    })
}

/// A [`Command`] for `name` ([`tool`]).
pub fn command(name: &str) -> Command {
    Command::new(tool(name))
}

/// The Python interpreter ([`tool`] `python3`, the venv's first) after
/// checking that it imports every module of `modules`, e.g.
/// `["prometheus_client.parser"]`; panics with Python's error otherwise.
pub fn python_with(modules: &[&str]) -> PathBuf {
    let python = tool("python3");
    let import = format!("import {}", modules.join(", "));
    let out = Command::new(&python)
        .args(["-c", &import])
        .output()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "prerequisite missing: {} cannot `{import}` ({}); ./scripts/test installs the \
         modules into .venv",
        python.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    python
}

/// True when `CI=true`.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Panics unless this process can make private network namespaces: root
/// (or `CAP_SYS_ADMIN`), a working `unshare -n`, and iproute2's `ss` and
/// `ip`.
pub fn require_netns() {
    for t in ["ss", "ip", "unshare"] {
        tool(t);
    }
    let out = command("unshare")
        .args(["-n", "--", "true"])
        .output()
        .unwrap_or_else(|e| panic!("spawning unshare: {e}"));
    assert!(
        out.status.success(),
        "prerequisite missing: `unshare -n` failed ({}; needs root or CAP_SYS_ADMIN): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

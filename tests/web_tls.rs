//! `--web.config.file` end to end, with certificates made by `openssl`:
//! - curl over TLS with basic auth: no credentials → 401 (with
//!   `WWW-Authenticate: Basic`), wrong password → 401, right → 200, gzip on
//!   request; plain HTTP to the TLS port → no 200; a changed certificate is
//!   served without a restart;
//! - `client_auth_type: RequireAndVerifyClientCert`: refused without a
//!   client certificate, served with one;
//! - a real Prometheus scrapes over TLS with basic auth (`scheme: https`,
//!   `tls_config.ca_file`, `basic_auth.password_file`): `up` == 1;
//! - bad files (missing certificate, key that does not match, a hash that
//!   is not bcrypt, an unknown key) exit non-zero with one line naming it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::agent::{AGENT_ADDR, Agent};
use common::certs::{self, Certs};
use common::netns::run_in_netns;
use common::prereq;
use common::process::{LabProcess, run_ok, wait_listening};
use common::truth::tcp_listening;
use common::wait::wait_for;

const PASSWORD: &str = "correct horse";

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A web config with the server certificate (relative paths) and one user.
fn tls_auth_config(c: &Certs, extra_tls: &str) -> PathBuf {
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    write_config(
        &c.dir,
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra_tls}\
             basic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    )
}

/// curl with `args`: (HTTP code, "000" when there was no answer; headers).
fn curl(args: &[&str]) -> (String, String, Output) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let out = prereq::command("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-D",
        ])
        .arg(&headers)
        .args(args)
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let h = std::fs::read_to_string(&headers)
        .unwrap_or_default()
        .to_lowercase();
    (code, h, out)
}

/// The serial of the certificate `addr` serves.
fn served_serial(addr: &str) -> String {
    let out = prereq::command("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let pem = String::from_utf8_lossy(&out.stdout).into_owned();
    let (ok, text) =
        common::process::run_with_stdin("openssl", &["x509", "-noout", "-serial"], &pem);
    assert!(ok, "{text}");
    text.trim().to_owned()
}

#[test]
#[ignore = "needs openssl and curl: ./scripts/test runs it"]
fn tls_basic_auth_gzip_and_reload_with_curl() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs::make(dir.path());
    let cfg = tls_auth_config(&c, "");
    let agent = Agent::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let url = format!("https://{}/metrics", agent.addr);
    let ca = c.ca.to_str().unwrap();
    let right = format!("prometheus:{PASSWORD}");

    let (code, h, _) = curl(&["--cacert", ca, &url]);
    assert_eq!(code, "401");
    assert!(h.contains("www-authenticate: basic"), "{h}");
    assert_eq!(
        curl(&["--cacert", ca, "-u", "prometheus:wrong", &url]).0,
        "401"
    );
    assert_eq!(curl(&["--cacert", ca, "-u", "nobody:x", &url]).0, "401");
    let (code, h, _) = curl(&[
        "--cacert",
        ca,
        "-u",
        &right,
        "-H",
        "Accept-Encoding: gzip",
        &url,
    ]);
    assert_eq!(code, "200");
    assert!(h.contains("content-encoding: gzip"), "{h}");
    let (code, _, _) = curl(&["--cacert", ca, &format!("https://{}/healthz", agent.addr)]);
    assert_eq!(code, "200", "/healthz needs no credentials");
    let (code, _, out) = curl(&[&format!("http://{}/metrics", agent.addr)]);
    assert_ne!(code, "200", "plain HTTP on the TLS port: {out:?}");

    // A new certificate (same key) is served without a restart.
    let before = served_serial(&agent.addr);
    let ext = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
    std::fs::write(dir.path().join("renew.ext"), ext).unwrap();
    let d = dir.path().to_str().unwrap();
    run_ok(
        prereq::tool("openssl").to_str().unwrap(),
        &[
            "x509",
            "-req",
            "-in",
            &format!("{d}/server.csr"),
            "-CA",
            &format!("{d}/ca.crt"),
            "-CAkey",
            &format!("{d}/ca.key"),
            "-set_serial",
            "4242",
            "-days",
            "2",
            "-extfile",
            &format!("{d}/renew.ext"),
            "-out",
            &format!("{d}/renewed.crt"),
        ],
    );
    std::fs::rename(dir.path().join("renewed.crt"), &c.server_crt).unwrap();
    wait_for(
        "the renewed certificate served",
        Duration::from_secs(10),
        || {
            let s = served_serial(&agent.addr);
            if s != before && s.contains("1092") {
                Ok(())
            } else {
                Err(s)
            }
        },
    );
    let (code, _, _) = curl(&["--cacert", ca, "-u", &right, &url]);
    assert_eq!(code, "200");

    let m = {
        let out = prereq::command("curl")
            .args(["-sS", "--cacert", ca, "-u", &right, &url])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let value = |series: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} in {m}"))
    };
    assert!(value("sockscope_web_requests_rejected_total{reason=\"unauthorized\"}") >= 3.0);
    assert!(value("sockscope_web_connections_closed_total{reason=\"tls_handshake\"}") >= 1.0);
}

#[test]
#[ignore = "needs openssl and curl: ./scripts/test runs it"]
fn client_certificate_required_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs::make(dir.path());
    let cfg = tls_auth_config(
        &c,
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    );
    let agent = Agent::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let url = format!("https://{}/metrics", agent.addr);
    let ca = c.ca.to_str().unwrap();
    let right = format!("prometheus:{PASSWORD}");
    let (code, _, out) = curl(&["--cacert", ca, "-u", &right, &url]);
    assert_eq!(code, "000", "refused without a client certificate: {out:?}");
    let (code, _, out) = curl(&[
        "--cacert",
        ca,
        "-u",
        &right,
        "--cert",
        c.client_crt.to_str().unwrap(),
        "--key",
        c.client_key.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(code, "200", "{out:?}");
}

#[test]
#[ignore = "needs openssl: ./scripts/test runs it"]
fn bad_web_config_files_exit_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs::make(dir.path());
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let cases = [
        (
            "missing-cert.yml",
            "tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n".to_owned(),
            "nope.crt",
        ),
        (
            "mismatch.yml",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n".to_owned(),
            "does not match",
        ),
        (
            "not-bcrypt.yml",
            "basic_auth_users:\n  prometheus: 'secret'\n".to_owned(),
            "not a bcrypt hash",
        ),
        (
            "unknown.yml",
            format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  certfile: x\nbasic_auth_users:\n  p: '{hash}'\n"
            ),
            "unknown field `certfile`",
        ),
        ("absent.yml", String::new(), "cannot read"),
    ];
    for (name, text, needle) in cases {
        let path = c.dir.join(name);
        if !text.is_empty() {
            std::fs::write(&path, text).unwrap();
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sockscope"))
            .args([
                "agent",
                "--web.listen-address",
                "127.0.0.1:0",
                "--web.config.file",
            ])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} should fail: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!(
                "sockscope: --web.config.file {}: ",
                path.display()
            )) && last.contains(needle),
            "{name}: the last line should name the file and {needle:?}: {stderr}"
        );
    }
}

const PROM: &str = "127.0.0.1:9090";

#[test]
#[ignore = "needs root (unshare -n), openssl and prometheus: ./scripts/test runs it"]
fn prometheus_scrapes_over_tls_with_basic_auth() {
    run_in_netns("prometheus_scrapes_over_tls_with_basic_auth", || {
        run_ok("ip", &["link", "set", "lo", "up"]);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let c = certs::make(d);
        let cfg = tls_auth_config(&c, "");
        let mut agent = Agent::spawn(&["--web.config.file", cfg.to_str().unwrap()]);
        wait_listening(
            &format!("the agent on {AGENT_ADDR}"),
            || tcp_listening(AGENT_ADDR),
            || agent.assert_running(),
        );
        std::fs::write(d.join("password"), PASSWORD).unwrap();
        std::fs::write(d.join("wrong"), "not it").unwrap();
        let job = |name: &str, pw: &str| {
            format!(
                "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n\
                 \x20   basic_auth:\n      username: prometheus\n      password_file: {pwf}\n\
                 \x20   static_configs:\n      - targets: ['{AGENT_ADDR}']\n",
                ca = c.ca.display(),
                pwf = d.join(pw).display()
            )
        };
        let config = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
            job("sockscope", "password"),
            job("wrong_password", "wrong")
        );
        let _prom = LabProcess::prometheus(d, &config, PROM);
        let query = |job: &str| -> Option<String> {
            let url = format!("http://{PROM}/api/v1/query?query=up%7Bjob%3D%22{job}%22%7D");
            let body = ureq::get(&url)
                .call()
                .ok()?
                .into_body()
                .read_to_string()
                .ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            v["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_owned)
        };
        wait_for(
            "up == 1 over TLS with basic auth",
            Duration::from_secs(60),
            || match (query("sockscope"), query("wrong_password")) {
                (Some(a), Some(b)) if a == "1" && b == "0" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        agent.assert_running();
    });
}

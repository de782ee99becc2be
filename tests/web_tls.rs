//! `--web.config.file` end to end, with certificates made by `openssl`:
//! - curl over TLS with basic auth: no credentials → 401 (with
//!   `WWW-Authenticate: Basic`), wrong password → 401, right → 200, gzip on
//!   request; plain HTTP to the TLS port → no 200; a changed certificate is
//!   served without a restart;
//! - `client_auth_type: RequireAndVerifyClientCert`: refused without a
//!   client certificate, served with one; `RequestClientCert` serves
//!   without one or with a self-signed one, `RequireAnyClientCert` refuses
//!   without one and serves a self-signed one; `client_allowed_sans`
//!   refuses a verified certificate without an allowed SAN;
//! - `cipher_suites`, `prefer_server_cipher_suites` and
//!   `curve_preferences` as `openssl s_client` negotiates them;
//! - `http_server_config.headers` on the 401 and the 200;
//! - SIGHUP serves a renewed certificate that the file-change check cannot
//!   see (same length and modification time);
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

/// What `openssl x509 -serial` prints for [`renew`]'s certificate. The
/// first certificate's serial is random, 20 bytes: compare whole lines,
/// never substrings (CI once drew a random serial containing `1092`).
const RENEWED_SERIAL: &str = "serial=1092";

/// A renewal of the server certificate (same key and CSR, serial 4242 =
/// 0x1092, see [`RENEWED_SERIAL`]) in `renewed.crt` beside it; returns its
/// path.
fn renew(c: &Certs) -> PathBuf {
    let ext = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
    std::fs::write(c.dir.join("renew.ext"), ext).unwrap();
    let d = c.dir.to_str().unwrap();
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
    c.dir.join("renewed.crt")
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
    let renewed = renew(&c);
    std::fs::rename(renewed, &c.server_crt).unwrap();
    wait_for(
        "the renewed certificate served",
        Duration::from_secs(10),
        || {
            let s = served_serial(&agent.addr);
            if s != before && s == RENEWED_SERIAL {
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
fn sighup_reloads_the_certificate_without_a_restart() {
    use std::time::SystemTime;
    let dir = tempfile::tempdir().unwrap();
    let c = certs::make(dir.path());
    // Room to write the renewal with the very same length: PEM readers
    // skip the blank lines after the END line.
    let mut pem = std::fs::read(&c.server_crt).unwrap();
    pem.resize(pem.len() + 512, b'\n');
    std::fs::write(&c.server_crt, &pem).unwrap();
    let cfg = tls_auth_config(&c, "");
    let agent = Agent::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let before = served_serial(&agent.addr);
    assert_ne!(before, RENEWED_SERIAL);

    // The renewal, padded to the old length and given the old
    // modification time before it replaces the old file: the file-change
    // check (modification time and size) cannot tell, only SIGHUP can.
    let old = std::fs::metadata(&c.server_crt).unwrap();
    let old_mtime: SystemTime = old.modified().unwrap();
    let renewed = renew(&c);
    let mut new_pem = std::fs::read(&renewed).unwrap();
    assert!(new_pem.len() <= pem.len(), "padding too short");
    new_pem.resize(pem.len(), b'\n');
    std::fs::write(&renewed, &new_pem).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&renewed)
        .unwrap()
        .set_modified(old_mtime)
        .unwrap();
    std::fs::rename(&renewed, &c.server_crt).unwrap();
    let now = std::fs::metadata(&c.server_crt).unwrap();
    assert_eq!(
        (now.len(), now.modified().unwrap()),
        (old.len(), old_mtime),
        "the file looks unchanged"
    );
    assert_eq!(
        served_serial(&agent.addr),
        before,
        "the file-change check did not pick it up"
    );

    let pid = rustix::process::Pid::from_raw(agent.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    wait_for(
        "the renewed certificate served after SIGHUP",
        Duration::from_secs(10),
        || {
            let s = served_serial(&agent.addr);
            if s == RENEWED_SERIAL { Ok(()) } else { Err(s) }
        },
    );
    let log = agent.stop();
    assert!(log.contains("SIGHUP"), "{log}");
}

#[test]
#[ignore = "needs openssl and curl: ./scripts/test runs it"]
fn client_certificates_requested_or_required_but_not_verified() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs::make(dir.path());
    certs::self_signed(
        &c.dir,
        "stranger",
        "stranger",
        "extendedKeyUsage=clientAuth",
    );
    let stranger = [
        "--cert",
        &format!("{}/stranger.crt", c.dir.display()),
        "--key",
        &format!("{}/stranger.key", c.dir.display()),
    ]
    .map(|s| s.to_owned());
    let ca = c.ca.to_str().unwrap();
    let right = format!("prometheus:{PASSWORD}");
    for (auth, without, with_stranger) in [
        ("RequestClientCert", "200", "200"),
        ("RequireAnyClientCert", "000", "200"),
    ] {
        let cfg = tls_auth_config(&c, &format!("  client_auth_type: {auth}\n"));
        let agent = Agent::start(&["--web.config.file", cfg.to_str().unwrap()]);
        let url = format!("https://{}/metrics", agent.addr);
        let (code, _, out) = curl(&["--cacert", ca, "-u", &right, &url]);
        assert_eq!(code, without, "{auth} without a certificate: {out:?}");
        let mut args: Vec<&str> = vec!["--cacert", ca, "-u", &right];
        args.extend(stranger.iter().map(String::as_str));
        args.push(&url);
        let (code, _, out) = curl(&args);
        assert_eq!(
            code, with_stranger,
            "{auth} with a self-signed one: {out:?}"
        );
        agent.stop();
    }
}

#[test]
#[ignore = "needs openssl and curl: ./scripts/test runs it"]
fn client_allowed_sans_refuse_a_verified_certificate_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs::make(dir.path());
    certs::leaf(
        &c.dir,
        "scraper",
        "scraper",
        "subjectAltName=DNS:prometheus.monitoring.svc,URI:spiffe://cluster.local/sa/prometheus\n\
         extendedKeyUsage=clientAuth\n",
    );
    certs::self_signed(
        &c.dir,
        "impostor",
        "impostor",
        "subjectAltName=DNS:prometheus.monitoring.svc",
    );
    let cfg = tls_auth_config(
        &c,
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n\
         \x20 client_allowed_sans: [spiffe://cluster.local/sa/prometheus]\n",
    );
    let agent = Agent::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let url = format!("https://{}/metrics", agent.addr);
    let ca = c.ca.to_str().unwrap();
    let right = format!("prometheus:{PASSWORD}");
    for (name, want) in [("scraper", "200"), ("client", "000"), ("impostor", "000")] {
        let crt = format!("{}/{name}.crt", c.dir.display());
        let key = format!("{}/{name}.key", c.dir.display());
        let (code, _, out) = curl(&[
            "--cacert", ca, "-u", &right, "--cert", &crt, "--key", &key, &url,
        ]);
        assert_eq!(code, want, "{name}: {out:?}");
    }
}

/// `openssl s_client` to `addr` with `args`, TLS 1.2: the cipher and the
/// temporary key's group it negotiated, or `None` when the handshake
/// failed.
fn negotiated(addr: &str, args: &[&str]) -> Option<(String, String)> {
    let out = prereq::command("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let cipher = text
        .lines()
        .find_map(|l| {
            l.split_once(", Cipher is ")
                .map(|(_, c)| c.trim().to_owned())
        })
        .filter(|c| c != "(NONE)")?;
    let group = text
        .lines()
        .find_map(|l| l.strip_prefix("Server Temp Key: ").map(str::to_owned))
        .or_else(|| {
            text.lines().find_map(|l| {
                l.strip_prefix("Negotiated TLS1.3 group: ")
                    .map(str::to_owned)
            })
        })
        .unwrap_or_default();
    Some((cipher, group))
}

#[test]
#[ignore = "needs openssl: ./scripts/test runs it"]
fn cipher_suites_and_curves_as_openssl_negotiates_them() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs::make(dir.path());
    let (aes128, aes256, chacha) = (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    );
    let both = format!("{aes128}:{aes256}");
    let tls = |extra: &str| {
        tls_auth_config(
            &c,
            &format!(
                "  cipher_suites:\n    - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\n\
                 \x20   - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n\
                 \x20 curve_preferences: [CurveP384, X25519]\n{extra}"
            ),
        )
    };
    let cfg = tls("");
    let agent = Agent::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let a = agent.addr.as_str();
    let (cipher, group) = negotiated(a, &["-tls1_2", "-cipher", &both]).expect("handshake");
    assert_eq!(cipher, aes256, "the server's order by default");
    assert!(group.contains("X25519") || group.contains("384"), "{group}");
    assert_eq!(
        negotiated(a, &["-tls1_2", "-cipher", chacha]),
        None,
        "not listed"
    );
    // P-256 offered too: in TLS 1.2 the client's groups also cover the
    // curve of the server's ECDSA certificate (P-256).
    let (_, group) =
        negotiated(a, &["-tls1_2", "-cipher", aes128, "-groups", "P-384:P-256"]).expect("P-384");
    assert!(group.contains("384"), "{group}");
    assert_eq!(
        negotiated(a, &["-tls1_2", "-cipher", aes128, "-groups", "P-256"]),
        None,
        "P-256 is not listed"
    );
    // TLS 1.3 suites are not narrowed.
    let (cipher, _) = negotiated(
        a,
        &["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
    )
    .expect("TLS 1.3");
    assert_eq!(cipher, "TLS_CHACHA20_POLY1305_SHA256");
    agent.stop();

    let cfg = tls("  prefer_server_cipher_suites: false\n");
    let agent = Agent::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let (cipher, _) = negotiated(&agent.addr, &["-tls1_2", "-cipher", &both]).expect("handshake");
    assert_eq!(cipher, aes128, "the client's order");
}

#[test]
#[ignore = "needs openssl and curl: ./scripts/test runs it"]
fn extra_headers_on_the_401_and_the_200() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs::make(dir.path());
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let cfg = write_config(
        &c.dir,
        "headers.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             http_server_config:\n  headers:\n\
             \x20   Strict-Transport-Security: max-age=31536000\n\
             \x20   X-Content-Type-Options: nosniff\n\
             \x20   X-Frame-Options: deny\n\
             basic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    );
    let agent = Agent::start(&["--web.config.file", cfg.to_str().unwrap()]);
    let url = format!("https://{}/metrics", agent.addr);
    let ca = c.ca.to_str().unwrap();
    let right = format!("prometheus:{PASSWORD}");
    for (args, want) in [
        (vec!["--cacert", ca, url.as_str()], "401"),
        (vec!["--cacert", ca, "-u", &right, url.as_str()], "200"),
    ] {
        let (code, h, _) = curl(&args);
        assert_eq!(code, want);
        for line in [
            "strict-transport-security: max-age=31536000",
            "x-content-type-options: nosniff",
            "x-frame-options: deny",
        ] {
            assert!(h.contains(line), "{want}: {line} in {h}");
        }
    }
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
        (
            "curve.yml",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  curve_preferences: [CurveP521]\n".to_owned(),
            "tls_server_config.curve_preferences: CurveP521 is not supported by rustls",
        ),
        (
            "header.yml",
            "http_server_config:\n  headers:\n    Server: sockscope\n".to_owned(),
            "http_server_config.headers: header \"Server\" cannot be configured",
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

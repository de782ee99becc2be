use super::*;

fn hash() -> String {
    bcrypt::hash("secret", 4).unwrap()
}

fn parse(text: &str) -> Result<WebConfig, String> {
    WebConfig::parse(text, Path::new("/etc/sockscope"))
}

#[test]
fn node_exporter_file_with_tls_and_users() {
    let h = hash();
    let cfg = parse(&format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: /abs/server.key\n\
         \x20 client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n\
         \x20 min_version: TLS13\nhttp_server_config:\n  http2: false\n\
         basic_auth_users:\n  prometheus: '{h}'\n"
    ))
    .unwrap();
    let tls = cfg.tls.unwrap();
    assert_eq!(tls.cert_file, Path::new("/etc/sockscope/server.crt"));
    assert_eq!(tls.key_file, Path::new("/abs/server.key"));
    assert_eq!(
        tls.client_ca_file.unwrap(),
        Path::new("/etc/sockscope/ca.crt")
    );
    assert_eq!(tls.client_auth, ClientAuth::RequireAndVerify);
    assert_eq!(tls.min_version, TlsVersion::Tls13);
    assert_eq!(tls.max_version, TlsVersion::Tls13);
    assert_eq!(cfg.users["prometheus"], h);
}

#[test]
fn defaults_empty_file_and_auth_without_tls() {
    assert_eq!(parse("").unwrap(), WebConfig::default());
    let cfg = parse(&format!("basic_auth_users:\n  a: '{}'\n", hash())).unwrap();
    assert!(cfg.tls.is_none());
    let cfg = parse("tls_server_config:\n  cert_file: c\n  key_file: k\n").unwrap();
    let tls = cfg.tls.unwrap();
    assert_eq!(
        tls.min_version,
        TlsVersion::Tls12,
        "TLS 1.2 minimum by default"
    );
    assert_eq!(tls.client_auth, ClientAuth::None);
}

#[test]
fn problems_are_one_line_and_name_the_key() {
    for (text, want) in [
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  bogus: 1\n",
            "bogus",
        ),
        ("basic_auth_user:\n  a: b\n", "basic_auth_user"),
        (
            "basic_auth_users:\n  alice: plaintext\n",
            "basic_auth_users.alice: not a bcrypt hash",
        ),
        (
            "basic_auth_users:\n  bob: $2y$10$short\n",
            "basic_auth_users.bob: not a bcrypt hash",
        ),
        (
            "tls_server_config:\n  cert_file: c\n",
            "cert_file without key_file",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS10\n",
            "TLS10 is not supported",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS13\n  max_version: TLS12\n",
            "min_version is above max_version",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n",
            "needs client_ca_file",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n",
            "client_auth_type is NoClientCert",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAnyClientCert\n",
            "not supported",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            "cipher_suites is not supported",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
            "headers is not supported",
        ),
        ("tls_server_config: [\n", ""),
    ] {
        let e = parse(text).expect_err(text);
        assert!(e.contains(want), "{text:?}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
}

#[test]
fn load_names_the_file() {
    let e = WebConfig::load(Path::new("/nonexistent/web.yml")).unwrap_err();
    let line = e.to_string();
    assert!(
        line.starts_with("--web.config.file /nonexistent/web.yml: cannot read"),
        "{line}"
    );
}

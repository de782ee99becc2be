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
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireSomeCert\n",
            "client_auth_type: unknown value \"RequireSomeCert\"",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequestClientCert\n  client_allowed_sans: [a]\n",
            "client_allowed_sans needs client_auth_type RequireAnyClientCert or RequireAndVerifyClientCert",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca\n  client_allowed_sans: [a]\n",
            "client_allowed_sans needs client_auth_type",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: []\n",
            "client_allowed_sans is empty",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n",
            "tls_server_config.cipher_suites: TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA is not supported by rustls",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
            "tls_server_config.cipher_suites: unknown cipher suite \"TLS_RSA_WITH_RC4_128_SHA\"",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            "cipher_suites: no TLS 1.2 suite",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: TLS_AES_128_GCM_SHA256\n",
            "cipher_suites",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  curve_preferences: [CurveP521]\n",
            "tls_server_config.curve_preferences: CurveP521 is not supported by rustls",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  curve_preferences: [SecP256r1MLKEM768]\n",
            "SecP256r1MLKEM768 is not supported by rustls",
        ),
        (
            "tls_server_config:\n  curve_preferences: [P256]\n",
            "tls_server_config.curve_preferences: unknown curve \"P256\"",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  prefer_server_cipher_suites: maybe\n",
            "prefer_server_cipher_suites",
        ),
        (
            "tls_server_config:\n  cert: '-----BEGIN CERTIFICATE-----'\n  key_file: k\n",
            "tls_server_config.cert (inline PEM) is not supported by sockscope; use cert_file",
        ),
        (
            "rate_limit:\n  interval: 1s\n  burst: 5\n",
            "rate_limit is not supported",
        ),
        (
            "http_server_config:\n  headers:\n    X-Powered-By: sockscope\n",
            "http_server_config.headers: header \"X-Powered-By\" cannot be configured",
        ),
        (
            "http_server_config:\n  headers:\n    x-frame-options: deny\n",
            "header \"x-frame-options\" cannot be configured",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow-from\n",
            "http_server_config.headers.X-Frame-Options: invalid value \"allow-from\" (expected one of deny, sameorigin)",
        ),
        (
            "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
            "X-Content-Type-Options: invalid value",
        ),
        (
            "http_server_config:\n  headers:\n    Content-Security-Policy: \"a\\nb\"\n",
            "http_server_config.headers.Content-Security-Policy: \"a\\nb\" is not a valid header value",
        ),
        (
            "basic_auth_users:\n  \"eve\\nil\": plaintext\n",
            "basic_auth_users.eve\\nil: not a bcrypt hash",
        ),
        (
            "basic_auth_users:\n  carol: $2y$99$sockscope.dummy.salt.Ono.user.has.this.password.hash.\n",
            "basic_auth_users.carol: bcrypt cost 99 is outside 4..31",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  \"a\\rb\": 1\n",
            "unknown field",
        ),
        ("tls_server_config: [\n", ""),
    ] {
        let e = parse(text).expect_err(text);
        assert!(e.contains(want), "{text:?}: {e}");
        assert!(!e.contains(['\n', '\r']), "one line: {e}");
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

#[test]
fn client_auth_types_as_in_go() {
    let tls = |auth: &str, extra: &str| {
        parse(&format!(
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: {auth}\n{extra}"
        ))
        .unwrap()
        .tls
        .unwrap()
    };
    for (name, want, verifies, mandatory) in [
        ("RequestClientCert", ClientAuth::Request, false, false),
        ("RequireAnyClientCert", ClientAuth::RequireAny, false, true),
        ("RequireClientCert", ClientAuth::RequireAny, false, true),
    ] {
        let t = tls(name, "");
        assert_eq!(t.client_auth, want, "{name}");
        assert_eq!(t.client_auth.verifies(), verifies, "{name}");
        assert_eq!(t.client_auth.mandatory(), mandatory, "{name}");
        assert_eq!(t.client_ca_file, None, "{name}: no CA needed");
    }
    // A CA with an unverified type is allowed (its names are hints).
    let t = tls("RequestClientCert", "  client_ca_file: ca.crt\n");
    assert_eq!(
        t.client_ca_file.unwrap(),
        Path::new("/etc/sockscope/ca.crt")
    );
    assert!(ClientAuth::RequireAndVerify.verifies() && ClientAuth::RequireAndVerify.mandatory());
    assert!(ClientAuth::VerifyIfGiven.verifies() && !ClientAuth::VerifyIfGiven.mandatory());
    let t = tls(
        "RequireAnyClientCert",
        "  client_allowed_sans: [prometheus.example, 10.0.0.7]\n",
    );
    assert_eq!(t.client_allowed_sans, ["prometheus.example", "10.0.0.7"]);
}

#[test]
fn cipher_suites_curves_and_server_order() {
    let cfg = parse(
        "tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites:\n\
         \x20   - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\n\
         \x20   - TLS_AES_128_GCM_SHA256\n\
         \x20   - TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256\n\
         \x20   - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\n\
         \x20 curve_preferences: [X25519, CurveP384, CurveP256]\n\
         \x20 prefer_server_cipher_suites: false\n",
    )
    .unwrap();
    let tls = cfg.tls.unwrap();
    use rustls::{CipherSuite as C, NamedGroup as G};
    assert_eq!(
        tls.cipher_suites,
        [
            C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            C::TLS13_AES_128_GCM_SHA256,
            C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        "in the order given, once each"
    );
    assert!(is_tls13(C::TLS13_AES_128_GCM_SHA256));
    assert!(!is_tls13(C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384));
    assert_eq!(
        tls.curve_preferences,
        [G::X25519, G::secp384r1, G::secp256r1]
    );
    assert!(!tls.prefer_server_cipher_suites);
    // Defaults: rustls' suites and groups, the server's order (Go's
    // default prefer_server_cipher_suites: true).
    let tls = parse("tls_server_config:\n  cert_file: c\n  key_file: k\n")
        .unwrap()
        .tls
        .unwrap();
    assert!(tls.cipher_suites.is_empty() && tls.curve_preferences.is_empty());
    assert!(tls.prefer_server_cipher_suites);
    // TLS 1.3 names only: fine when TLS 1.2 is off.
    let tls = parse(
        "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS13\n\
         \x20 cipher_suites: [TLS_AES_256_GCM_SHA384]\n",
    )
    .unwrap()
    .tls
    .unwrap();
    assert_eq!(tls.cipher_suites, [C::TLS13_AES_256_GCM_SHA384]);
    // Every name Go accepts either maps or is refused as rustls lacking it.
    for (name, _, supported) in GO_CIPHER_SUITES {
        let r = cipher_suites(&[name.to_owned()]);
        assert_eq!(r.is_ok(), supported, "{name}: {r:?}");
    }
    // ...and every suite it maps to is one the ring provider has.
    let ring = rustls::crypto::ring::default_provider();
    for (name, code, _) in GO_CIPHER_SUITES.iter().filter(|c| c.2) {
        assert!(
            ring.cipher_suites
                .iter()
                .any(|s| u16::from(s.suite()) == *code),
            "{name}"
        );
    }
    for (name, code, supported) in GO_CURVES {
        let has = ring.kx_groups.iter().any(|g| u16::from(g.name()) == code);
        assert_eq!(has, supported, "{name}");
    }
}

#[test]
fn extra_headers() {
    let cfg = parse(
        "http_server_config:\n  http2: true\n  headers:\n\
         \x20   Strict-Transport-Security: max-age=31536000; includeSubDomains\n\
         \x20   X-Content-Type-Options: nosniff\n\
         \x20   X-Frame-Options: sameorigin\n\
         \x20   X-XSS-Protection: '1; mode=block'\n\
         \x20   Content-Security-Policy: ''\n",
    )
    .unwrap();
    let got: Vec<(&str, &str)> = cfg
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "strict-transport-security",
                "max-age=31536000; includeSubDomains"
            ),
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "sameorigin"),
            ("x-xss-protection", "1; mode=block"),
        ],
        "a blank value is left out"
    );
    assert!(cfg.tls.is_none(), "headers apply without TLS too");
}

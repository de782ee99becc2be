//! Handshakes in memory (a rustls client over `tokio::io::duplex`) against
//! the acceptor, with the certificates of `tests/fixtures/web/` (made by
//! its `make.sh`): which client certificates each `client_auth_type`
//! takes, the SAN check, the cipher suites and groups negotiated.

use std::path::PathBuf;

use rustls::client::ResolvesClientCert;
use rustls::crypto::ring;
use rustls::{ClientConfig, SupportedProtocolVersion};

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/web")
        .join(name)
}

fn settings(auth: ClientAuth) -> TlsSettings {
    TlsSettings {
        cert_file: fixture("server.crt"),
        key_file: fixture("server.key"),
        client_auth: auth,
        client_ca_file: auth.verifies().then(|| fixture("ca.crt")),
        client_allowed_sans: Vec::new(),
        min_version: TlsVersion::Tls12,
        max_version: TlsVersion::Tls13,
        cipher_suites: Vec::new(),
        prefer_server_cipher_suites: true,
        curve_preferences: Vec::new(),
    }
}

/// What the client presents.
#[derive(Clone, Copy, Debug)]
enum Cert {
    Absent,
    /// `client.crt`, signed by the CA, with one SAN of each kind.
    Signed,
    /// `self.crt`, self-signed (SAN `prometheus.monitoring.svc`).
    SelfSigned,
    /// `client.crt` with the key `other.key`: the handshake signature
    /// cannot verify.
    WrongKey,
}

/// A client certificate and key, whatever the server asks.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesClientCert for Fixed {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn client(
    cert: Cert,
    version: &'static SupportedProtocolVersion,
    provider: CryptoProvider,
) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for c in read_certs(&fixture("ca.crt"), "CA").unwrap() {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots);
    let (crt, key) = match cert {
        Cert::Absent => return builder.with_no_client_auth(),
        Cert::Signed => ("client.crt", "client.key"),
        Cert::SelfSigned => ("self.crt", "self.key"),
        Cert::WrongKey => ("client.crt", "other.key"),
    };
    let chain = read_certs(&fixture(crt), "client certificate").unwrap();
    let der = PrivateKeyDer::from_pem_file(fixture(key)).unwrap();
    let signer = provider.key_provider.load_private_key(der).unwrap();
    builder.with_client_cert_resolver(Arc::new(Fixed(Arc::new(CertifiedKey::new(chain, signer)))))
}

/// The negotiated suite and group, as the server saw them, or the
/// server's handshake error.
type Outcome = Result<(rustls::CipherSuite, rustls::NamedGroup), String>;

async fn handshake(settings: &TlsSettings, client: ClientConfig) -> Outcome {
    let (acceptor, _) = acceptor(settings).unwrap();
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let server = async move {
        let tls = acceptor
            .accept(server_io)
            .await
            .map_err(|e| e.to_string())?;
        let conn = tls.get_ref().1;
        Ok((
            conn.negotiated_cipher_suite().unwrap().suite(),
            conn.negotiated_key_exchange_group().unwrap().name(),
        ))
    };
    // The client's own result says little (in TLS 1.3 it finishes before
    // the server has checked its certificate); the server's decides.
    let (outcome, _client) = tokio::join!(server, connector.connect(name, client_io));
    outcome
}

async fn with_cert(settings: &TlsSettings, cert: Cert) -> [Outcome; 2] {
    let mut out = Vec::new();
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        out.push(handshake(settings, client(cert, v, ring::default_provider())).await);
    }
    out.try_into().unwrap()
}

fn accepted(outcomes: &[Outcome; 2]) -> bool {
    match outcomes {
        [Ok(_), Ok(_)] => true,
        [Err(_), Err(_)] => false,
        other => panic!("TLS 1.2 and 1.3 disagree: {other:?}"),
    }
}

#[tokio::test]
async fn which_client_certificates_each_client_auth_type_takes() {
    use Cert::{Absent, SelfSigned, Signed, WrongKey};
    use ClientAuth as A;
    for (auth, cert, want) in [
        (A::None, Absent, true),
        (A::None, Signed, true),
        // Asked for, accepted whatever it is, or absent.
        (A::Request, Absent, true),
        (A::Request, Signed, true),
        (A::Request, SelfSigned, true),
        // Required, not verified.
        (A::RequireAny, Absent, false),
        (A::RequireAny, Signed, true),
        (A::RequireAny, SelfSigned, true),
        (A::VerifyIfGiven, Absent, true),
        (A::VerifyIfGiven, Signed, true),
        (A::VerifyIfGiven, SelfSigned, false),
        (A::RequireAndVerify, Absent, false),
        (A::RequireAndVerify, Signed, true),
        (A::RequireAndVerify, SelfSigned, false),
        // A certificate whose key the client does not hold: the handshake
        // signature does not verify, whatever the type.
        (A::Request, WrongKey, false),
        (A::RequireAny, WrongKey, false),
        (A::RequireAndVerify, WrongKey, false),
    ] {
        let got = with_cert(&settings(auth), cert).await;
        assert_eq!(accepted(&got), want, "{auth:?} with {cert:?}: {got:?}");
    }
}

#[tokio::test]
async fn client_allowed_sans_after_verification() {
    let with_sans = |auth, sans: &[&str]| TlsSettings {
        client_allowed_sans: sans.iter().map(|s| (*s).to_owned()).collect(),
        ..settings(auth)
    };
    for san in [
        "prometheus.monitoring.svc",
        "10.0.0.7",
        "2001:db8::7",
        "192.0.2.1",
        "prometheus@example.com",
        "spiffe://cluster.local/ns/monitoring/sa/prometheus",
    ] {
        let s = with_sans(ClientAuth::RequireAndVerify, &["nope.example", san]);
        let got = with_cert(&s, Cert::Signed).await;
        assert!(accepted(&got), "{san}: {got:?}");
    }
    // None of them; a prefix or another case is no match (exact, as Go).
    let s = with_sans(
        ClientAuth::RequireAndVerify,
        &["prometheus", "Prometheus.Monitoring.Svc", "10.0.0.8"],
    );
    let got = with_cert(&s, Cert::Signed).await;
    assert!(!accepted(&got), "{got:?}");
    // Verification comes first: the self-signed certificate carries an
    // allowed SAN but is refused with RequireAndVerifyClientCert ...
    let s = with_sans(ClientAuth::RequireAndVerify, &["prometheus.monitoring.svc"]);
    assert!(!accepted(&with_cert(&s, Cert::SelfSigned).await));
    // ... and taken with RequireAnyClientCert (only the SAN is checked).
    let s = with_sans(ClientAuth::RequireAny, &["prometheus.monitoring.svc"]);
    assert!(accepted(&with_cert(&s, Cert::SelfSigned).await));
    assert!(!accepted(&with_cert(&s, Cert::Absent).await));
    let s = with_sans(ClientAuth::RequireAny, &["other.example"]);
    assert!(!accepted(&with_cert(&s, Cert::SelfSigned).await));
}

#[test]
fn subject_alt_names_as_go_lists_them() {
    let der = read_certs(&fixture("client.crt"), "client").unwrap();
    assert_eq!(
        subject_alt_names(&der[0]).unwrap(),
        [
            "prometheus.monitoring.svc",
            "10.0.0.7",
            "2001:db8::7",
            // An IPv4-mapped IPv6 address prints as IPv4, as net.IP does.
            "192.0.2.1",
            "prometheus@example.com",
            "spiffe://cluster.local/ns/monitoring/sa/prometheus",
        ]
    );
    let ca = read_certs(&fixture("ca.crt"), "ca").unwrap();
    assert!(subject_alt_names(&ca[0]).unwrap().is_empty());
    assert!(subject_alt_names(b"not a certificate").is_err());
}

/// A client offering exactly `suites` (in that order) and `groups`.
fn offering(
    suites: &[rustls::CipherSuite],
    groups: &[rustls::NamedGroup],
    version: &'static SupportedProtocolVersion,
) -> ClientConfig {
    let mut p = ring::default_provider();
    p.cipher_suites = suites
        .iter()
        .map(|s| {
            *ring::ALL_CIPHER_SUITES
                .iter()
                .find(|c| c.suite() == *s)
                .unwrap()
        })
        .collect();
    if !groups.is_empty() {
        p.kx_groups = groups
            .iter()
            .map(|g| *ring::ALL_KX_GROUPS.iter().find(|k| k.name() == *g).unwrap())
            .collect();
    }
    client(Cert::Absent, version, p)
}

#[tokio::test]
async fn cipher_suites_server_order_and_curves() {
    use rustls::{CipherSuite as C, NamedGroup as G};
    let tls12 = &rustls::version::TLS12;
    let tls13 = &rustls::version::TLS13;
    let (aes128, aes256, chacha) = (
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    );
    let s = TlsSettings {
        cipher_suites: vec![aes256, aes128],
        ..settings(ClientAuth::None)
    };
    // The server's order by default (prefer_server_cipher_suites: true).
    let got = handshake(&s, offering(&[aes128, aes256], &[], tls12)).await;
    assert_eq!(got.unwrap().0, aes256);
    let client_order = TlsSettings {
        prefer_server_cipher_suites: false,
        ..s.clone()
    };
    let got = handshake(&client_order, offering(&[aes128, aes256], &[], tls12)).await;
    assert_eq!(got.unwrap().0, aes128);
    // A TLS 1.2 suite not listed is refused.
    assert!(
        handshake(&s, offering(&[chacha], &[], tls12))
            .await
            .is_err()
    );
    // TLS 1.3 suites are not narrowed (as in Go).
    let got = handshake(
        &s,
        offering(&[C::TLS13_CHACHA20_POLY1305_SHA256], &[], tls13),
    )
    .await;
    assert_eq!(got.unwrap().0, C::TLS13_CHACHA20_POLY1305_SHA256);

    let s = TlsSettings {
        curve_preferences: vec![G::secp384r1],
        ..settings(ClientAuth::None)
    };
    for v in [tls12, tls13] {
        let suite = if v == tls12 {
            aes128
        } else {
            C::TLS13_AES_128_GCM_SHA256
        };
        let got = handshake(&s, offering(&[suite], &[G::secp384r1, G::X25519], v)).await;
        assert_eq!(got.unwrap().1, G::secp384r1, "{v:?}");
        let got = handshake(&s, offering(&[suite], &[G::X25519, G::secp256r1], v)).await;
        assert!(got.is_err(), "{v:?}: a group not listed: {got:?}");
    }
    // Among the listed groups, rustls takes the client's first (the list
    // is a set to rustls, whatever its order).
    let s = TlsSettings {
        curve_preferences: vec![G::X25519, G::secp256r1],
        ..settings(ClientAuth::None)
    };
    for v in [tls12, tls13] {
        let suite = if v == tls12 {
            aes128
        } else {
            C::TLS13_AES_128_GCM_SHA256
        };
        let got = handshake(&s, offering(&[suite], &[G::secp256r1, G::X25519], v)).await;
        assert_eq!(got.unwrap().1, G::secp256r1, "{v:?}");
    }
}

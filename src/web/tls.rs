//! TLS for the web server: rustls (ring) through tokio-rustls, configured
//! from `tls_server_config`.
//!
//! The certificate and key are re-read **when their files change** (a
//! handshake checks their modification time and size, at most once a
//! second, so a Kubernetes Secret update or cert-manager renewal is picked
//! up without a restart) and **on SIGHUP** (forced re-read). A re-read that
//! fails keeps the previous certificate and logs a warning. The client CA
//! and the rest of the file are read at start only.
//!
//! Client certificates: `VerifyClientCertIfGiven` and
//! `RequireAndVerifyClientCert` are rustls' [`WebPkiClientVerifier`];
//! `RequestClientCert` and `RequireAnyClientCert` are [`AnyClientCert`],
//! which accepts any chain but still checks the handshake signature (the
//! client holds the certificate's key). `client_allowed_sans` wraps either
//! in [`AllowedSans`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use x509_parser::extensions::GeneralName;

use super::config::{ClientAuth, TlsSettings, TlsVersion, is_tls13};

/// How often a handshake may look at the files' modification times.
const CHECK_EVERY: Duration = Duration::from_secs(1);

fn pem_error(path: &Path, what: &str, e: pem::Error) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read {what} {}: {e}", path.display()),
        pem::Error::NoItemsFound => format!("{what} {}: no PEM {what} found", path.display()),
        e => format!("{what} {}: not a valid PEM file: {e}", path.display()),
    }
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, what, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, what, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, what, pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// Modification time and length of the certificate and the key file.
type Stamp = [(SystemTime, u64); 2];

fn stamp(cert: &Path, key: &Path) -> Option<Stamp> {
    let one = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    Some([one(cert)?, one(key)?])
}

/// Reads the certificate chain and the key and checks that they belong
/// together.
///
/// # Errors
/// One line naming the file and the problem.
pub(crate) fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = read_certs(cert, "certificate")?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, "private key", e))?;
    let signer = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("private key {}: unusable: {e}", key.display()))?;
    let ck = CertifiedKey::new(chain, signer);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(_) => Err(format!(
            "private key {} does not match the certificate {}",
            key.display(),
            cert.display()
        )),
    }
}

struct Current {
    key: Arc<CertifiedKey>,
    stamp: Option<Stamp>,
    checked: Instant,
}

/// The server certificate, re-read when its files change or on
/// [`Reloader::reload`].
struct Resolver {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<Current>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    fn refresh(&self, force: bool) -> Arc<CertifiedKey> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let c = &mut *cur;
        if !force && c.checked.elapsed() < CHECK_EVERY {
            return Arc::clone(&c.key);
        }
        c.checked = Instant::now();
        let now = stamp(&self.cert, &self.key);
        if !force && now == c.stamp {
            return Arc::clone(&c.key);
        }
        match load_certified_key(&self.cert, &self.key, &self.provider) {
            Ok(k) => {
                tracing::info!(cert = %self.cert.display(), "TLS certificate (re)loaded");
                c.key = Arc::new(k);
                c.stamp = now;
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate reload failed; keeping the previous one");
                // Not again until the files change once more.
                c.stamp = now;
            }
        }
        Arc::clone(&c.key)
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.refresh(false))
    }
}

/// Forces a re-read of the certificate and key (SIGHUP).
#[derive(Clone)]
pub struct Reloader(Arc<Resolver>);

impl Reloader {
    pub fn reload(&self) {
        self.0.refresh(true);
    }
}

fn versions(s: &TlsSettings) -> Vec<&'static rustls::SupportedProtocolVersion> {
    [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (s.min_version..=s.max_version).contains(v))
    .map(|(_, p)| p)
    .collect()
}

/// `RequestClientCert` / `RequireAnyClientCert`: asks for a client
/// certificate (required when `mandatory`) and accepts any chain without
/// verifying it, as Go's `tls.RequestClientCert` and
/// `tls.RequireAnyClientCert` do. The handshake signature is still
/// checked with the provider's algorithms, so a client must hold the key
/// of the certificate it sends.
#[derive(Debug)]
pub struct AnyClientCert {
    mandatory: bool,
    /// Issuer names sent to the client (from `client_ca_file`, if any).
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyClientCert {
    /// The verifier; `hints` are the acceptable issuers announced to the
    /// client (they are not checked).
    pub fn new(
        mandatory: bool,
        hints: Vec<DistinguishedName>,
        provider: &CryptoProvider,
    ) -> AnyClientCert {
        AnyClientCert {
            mandatory,
            hints,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Not verified, by definition of these client_auth_types.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The subject alternative names of a DER certificate as strings, the way
/// Go's `crypto/x509` lists them for exporter-toolkit's
/// `client_allowed_sans`: DNS names, e-mail addresses, IP addresses
/// (`net.IP.String()`: an IPv4-mapped IPv6 address as IPv4) and URIs, as
/// written in the certificate.
///
/// # Errors
/// The certificate or its SAN extension does not parse.
pub(crate) fn subject_alt_names(der: &[u8]) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("client certificate does not parse: {e}"))?;
    let Some(ext) = cert
        .subject_alternative_name()
        .map_err(|e| format!("client certificate's subjectAltName: {e}"))?
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for name in &ext.value.general_names {
        match name {
            GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                out.push((*s).to_owned());
            }
            GeneralName::IPAddress(b) => {
                let ip = match b.len() {
                    4 => <[u8; 4]>::try_from(*b).map(|a| std::net::IpAddr::from(a).to_string()),
                    16 => <[u8; 16]>::try_from(*b).map(|a| {
                        let v6 = std::net::Ipv6Addr::from(a);
                        match v6.to_ipv4_mapped() {
                            Some(v4) => v4.to_string(),
                            None => v6.to_string(),
                        }
                    }),
                    n => return Err(format!("client certificate: IP SAN of {n} bytes")),
                };
                out.extend(ip.ok());
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `client_allowed_sans`: after `inner` accepted the client certificate,
/// it must also carry one of `allowed` among its subject alternative
/// names ([`subject_alt_names`]), else the handshake fails. With
/// `RequireAnyClientCert` the certificate is not verified, so the SAN is
/// only what the client claims (as in Go).
#[derive(Debug)]
pub struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl AllowedSans {
    /// `inner` wrapped with the SAN check against `allowed`.
    pub fn new(inner: Arc<dyn ClientCertVerifier>, allowed: Vec<String>) -> AllowedSans {
        AllowedSans { inner, allowed }
    }

    /// Whether the DER certificate `der` carries one of the allowed SANs.
    ///
    /// # Errors
    /// The certificate does not parse, or carries none of them.
    pub fn check(&self, der: &[u8]) -> Result<(), String> {
        let sans = subject_alt_names(der)?;
        if sans.iter().any(|s| self.allowed.contains(s)) {
            Ok(())
        } else {
            Err(format!(
                "client certificate SANs {sans:?} include none of client_allowed_sans {:?}",
                self.allowed
            ))
        }
    }
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match self.check(end_entity) {
            Ok(()) => Ok(verified),
            Err(e) => {
                tracing::debug!(error = %e, "client certificate refused");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The *ring* provider narrowed to `settings`' `cipher_suites` (TLS 1.2
/// ones, in that order, after every TLS 1.3 suite, which Go does not let
/// one configure either) and `curve_preferences` (rustls picks among the
/// groups by the client's order, so theirs does not matter).
/// [`crate::web::config`] already refused names rustls lacks.
fn provider(settings: &TlsSettings) -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    if !settings.cipher_suites.is_empty() {
        let all = std::mem::take(&mut provider.cipher_suites);
        let tls13 = all.iter().filter(|s| is_tls13(s.suite()));
        let tls12 = settings
            .cipher_suites
            .iter()
            .filter_map(|want| all.iter().find(|s| s.suite() == *want && !is_tls13(*want)));
        provider.cipher_suites = tls13.chain(tls12).copied().collect();
    }
    if !settings.curve_preferences.is_empty() {
        let all = std::mem::take(&mut provider.kx_groups);
        provider.kx_groups = settings
            .curve_preferences
            .iter()
            .filter_map(|want| all.iter().find(|g| g.name() == *want))
            .copied()
            .collect();
    }
    provider
}

/// The client certificate verifier of `settings` (`None`: no client
/// certificate asked for).
fn client_verifier(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, String> {
    let auth = settings.client_auth;
    if auth == ClientAuth::None {
        return Ok(None);
    }
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &settings.client_ca_file {
        for c in read_certs(ca, "client CA certificate")? {
            roots
                .add(c)
                .map_err(|e| format!("client CA certificate {}: unusable: {e}", ca.display()))?;
        }
    }
    let verifier: Arc<dyn ClientCertVerifier> = if auth.verifies() {
        let ca = settings
            .client_ca_file
            .as_deref()
            .unwrap_or(Path::new("(client_ca_file)"));
        let mut v =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
        if !auth.mandatory() {
            v = v.allow_unauthenticated();
        }
        v.build()
            .map_err(|e| format!("client CA certificate {}: {e}", ca.display()))?
    } else {
        Arc::new(AnyClientCert::new(
            auth.mandatory(),
            roots.subjects(),
            provider,
        ))
    };
    if settings.client_allowed_sans.is_empty() {
        Ok(Some(verifier))
    } else {
        Ok(Some(Arc::new(AllowedSans::new(
            verifier,
            settings.client_allowed_sans.clone(),
        ))))
    }
}

/// The acceptor for `settings`, and its [`Reloader`].
///
/// # Errors
/// A missing or invalid certificate, key or client CA: one line naming
/// the file and the problem.
pub fn acceptor(settings: &TlsSettings) -> Result<(tokio_rustls::TlsAcceptor, Reloader), String> {
    let provider = Arc::new(provider(settings));
    let first = load_certified_key(&settings.cert_file, &settings.key_file, &provider)?;
    let resolver = Arc::new(Resolver {
        cert: settings.cert_file.clone(),
        key: settings.key_file.clone(),
        provider: Arc::clone(&provider),
        current: Mutex::new(Current {
            key: Arc::new(first),
            stamp: stamp(&settings.cert_file, &settings.key_file),
            checked: Instant::now(),
        }),
    });
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions(settings))
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match client_verifier(settings, &provider)? {
        None => builder.with_no_client_auth(),
        Some(v) => builder.with_client_cert_verifier(v),
    };
    let mut cfg = builder.with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
    // prefer_server_cipher_suites: rustls' default is the client's order;
    // ignore_client_order picks by the server's (cipher_suites' order,
    // else the provider's). Go 1.17+ ignores the field and orders by its
    // own heuristics; the documented meaning is kept here.
    cfg.ignore_client_order = settings.prefer_server_cipher_suites;
    // HTTP/1.1 only: the server speaks no HTTP/2.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
        Reloader(resolver),
    ))
}

#[cfg(test)]
#[path = "tls/tests.rs"]
mod tests;

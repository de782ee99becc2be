//! TLS for the web server: rustls (ring) through tokio-rustls, configured
//! from `tls_server_config`.
//!
//! The certificate and key are re-read **when their files change** (a
//! handshake checks their modification time and size, at most once a
//! second, so a Kubernetes Secret update or cert-manager renewal is picked
//! up without a restart) and **on SIGHUP** (forced re-read). A re-read that
//! fails keeps the previous certificate and logs a warning. The client CA
//! and the rest of the file are read at start only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use super::config::{ClientAuth, TlsSettings, TlsVersion};

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
pub fn load_certified_key(
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

/// The acceptor for `settings`, and its [`Reloader`].
///
/// # Errors
/// A missing or invalid certificate, key or client CA: one line naming
/// the file and the problem.
pub fn acceptor(settings: &TlsSettings) -> Result<(tokio_rustls::TlsAcceptor, Reloader), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
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
    let builder = match (settings.client_auth, &settings.client_ca_file) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca, "client CA certificate")? {
                roots.add(c).map_err(|e| {
                    format!("client CA certificate {}: unusable: {e}", ca.display())
                })?;
            }
            let mut v =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            if auth == ClientAuth::VerifyIfGiven {
                v = v.allow_unauthenticated();
            }
            let v = v
                .build()
                .map_err(|e| format!("client CA certificate {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(v)
        }
    };
    let mut cfg = builder.with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
    // HTTP/1.1 only: the server speaks no HTTP/2.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
        Reloader(resolver),
    ))
}

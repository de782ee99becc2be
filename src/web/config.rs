//! `--web.config.file`: the YAML of prometheus/exporter-toolkit
//! (`docs/web-configuration.md`), so one file serves node_exporter and
//! sockscope alike. Read here: `tls_server_config` (`cert_file`,
//! `key_file`, `client_auth_type`, `client_ca_file`, `client_allowed_sans`,
//! `min_version`, `max_version`, `cipher_suites`,
//! `prefer_server_cipher_suites`, `curve_preferences`),
//! `http_server_config` (`http2`, `headers`) and `basic_auth_users` (bcrypt
//! hashes). Paths are relative to the file's directory. Unknown keys are an
//! error, and so is a value that rustls cannot honour (a cipher suite or
//! curve it lacks), rather than silently meaning something else. The
//! inline `cert`, `key` and `client_ca` and `rate_limit` are refused by
//! name.
//!
//! Parsing does no I/O beyond reading the file ([`WebConfig::parse`] takes
//! the text); the certificate and key are loaded by [`crate::web::tls`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;

/// A `--web.config.file` problem: the file and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "--web.config.file {}: {}",
            self.file.display(),
            self.problem
        )
    }
}

impl std::error::Error for ConfigError {}

/// exporter-toolkit's `client_auth_type` values (Go's `tls.ClientAuthType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert` (the default): no client certificate is asked for.
    None,
    /// `RequestClientCert`: a certificate is asked for; none, or any, is
    /// accepted and it is not verified (only that the client holds its
    /// key, through the handshake signature).
    Request,
    /// `RequireAnyClientCert` (or its old name `RequireClientCert`): a
    /// certificate is required, but not verified against any CA.
    RequireAny,
    /// `VerifyClientCertIfGiven`: a certificate, if sent, must verify
    /// against `client_ca_file`.
    VerifyIfGiven,
    /// `RequireAndVerifyClientCert`: a certificate that verifies against
    /// `client_ca_file` is required.
    RequireAndVerify,
}

impl ClientAuth {
    /// Whether a client certificate is checked against `client_ca_file`.
    pub fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify
        )
    }

    /// Whether a client without a certificate is refused.
    pub fn mandatory(self) -> bool {
        matches!(self, ClientAuth::RequireAny | ClientAuth::RequireAndVerify)
    }
}

/// A TLS protocol version of `min_version` / `max_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// `tls_server_config`, paths resolved against the file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_auth: ClientAuth,
    /// With a verifying [`ClientAuth`], the CAs a client certificate must
    /// chain to; with `Request`/`RequireAny` only the names sent to the
    /// client as acceptable issuers (as Go does).
    pub client_ca_file: Option<PathBuf>,
    /// `client_allowed_sans`: the client certificate must carry one of
    /// these subject alternative names (DNS, IP, e-mail or URI, compared
    /// exactly); empty = no such check.
    pub client_allowed_sans: Vec<String>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// `cipher_suites`: the TLS 1.2 suites, in preference order; empty =
    /// rustls' defaults. TLS 1.3 suites are not configurable (as in Go):
    /// TLS 1.3 names are accepted and leave them all enabled.
    pub cipher_suites: Vec<rustls::CipherSuite>,
    /// `prefer_server_cipher_suites` (default true): choose by the
    /// server's order of suites rather than the client's.
    pub prefer_server_cipher_suites: bool,
    /// `curve_preferences`: the key-exchange groups allowed; empty =
    /// rustls' defaults. rustls takes the client's preferred one among
    /// them, so their order here has no effect.
    pub curve_preferences: Vec<rustls::NamedGroup>,
}

/// The whole file: TLS when `tls_server_config` names a certificate, the
/// basic-auth users (empty: no authentication) and the extra response
/// headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebConfig {
    pub tls: Option<TlsSettings>,
    /// User name → bcrypt hash (checked to be one).
    pub users: BTreeMap<String, String>,
    /// `http_server_config.headers`: added to every response; names among
    /// [`EXTRA_HEADERS`], blank values left out.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The headers `http_server_config.headers` may set, each with the values
/// it may take (empty: any), as exporter-toolkit allows (the names are
/// matched exactly, as there).
pub const EXTRA_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Go's names of the cipher suites (`tls.CipherSuites()`, the ones
/// exporter-toolkit accepts) with their IANA code, and whether rustls
/// (the *ring* provider) implements them.
const GO_CIPHER_SUITES: [(&str, u16, bool); 13] = [
    ("TLS_AES_128_GCM_SHA256", 0x1301, true),
    ("TLS_AES_256_GCM_SHA384", 0x1302, true),
    ("TLS_CHACHA20_POLY1305_SHA256", 0x1303, true),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 0xc009, false),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", 0xc00a, false),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0xc013, false),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", 0xc014, false),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0xc02b, true),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 0xc02c, true),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xc02f, true),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 0xc030, true),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0xcca8, true),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        0xcca9,
        true,
    ),
];

/// Go's curve names that exporter-toolkit accepts, with the TLS named
/// group, and whether rustls (*ring*) implements it.
const GO_CURVES: [(&str, u16, bool); 6] = [
    ("CurveP256", 0x0017, true),
    ("CurveP384", 0x0018, true),
    ("CurveP521", 0x0019, false),
    ("X25519", 0x001d, true),
    // Go 1.26's hybrid post-quantum groups.
    ("SecP256r1MLKEM768", 0x11eb, false),
    ("SecP384r1MLKEM1024", 0x11ed, false),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    // Known to exporter-toolkit, not implemented here: refused by name.
    rate_limit: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    // Inline PEM: refused by name (sockscope re-reads files).
    cert: Option<serde_yaml_ng::Value>,
    key: Option<serde_yaml_ng::Value>,
    client_ca: Option<serde_yaml_ng::Value>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// Accepted and without effect: sockscope serves HTTP/1.1 only.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

fn version(key: &str, v: Option<&str>, default: TlsVersion) -> Result<TlsVersion, String> {
    match v {
        None => Ok(default),
        Some("TLS12") => Ok(TlsVersion::Tls12),
        Some("TLS13") => Ok(TlsVersion::Tls13),
        Some(old @ ("TLS10" | "TLS11")) => Err(format!(
            "tls_server_config.{key}: {old} is not supported (rustls speaks TLS12 and TLS13)"
        )),
        Some(other) => Err(format!(
            "tls_server_config.{key}: unknown TLS version {other:?} (expected TLS12 or TLS13)"
        )),
    }
}

fn client_auth(v: Option<&str>) -> Result<ClientAuth, String> {
    match v.unwrap_or("NoClientCert") {
        "" | "NoClientCert" => Ok(ClientAuth::None),
        "RequestClientCert" => Ok(ClientAuth::Request),
        // exporter-toolkit keeps the old name too.
        "RequireAnyClientCert" | "RequireClientCert" => Ok(ClientAuth::RequireAny),
        "VerifyClientCertIfGiven" => Ok(ClientAuth::VerifyIfGiven),
        "RequireAndVerifyClientCert" => Ok(ClientAuth::RequireAndVerify),
        other => Err(format!(
            "tls_server_config.client_auth_type: unknown value {other:?} (expected NoClientCert, \
             RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or \
             RequireAndVerifyClientCert)"
        )),
    }
}

/// `cipher_suites`: Go names to IANA codes, in the order given.
fn cipher_suites(names: &[String]) -> Result<Vec<rustls::CipherSuite>, String> {
    let mut out = Vec::new();
    for name in names {
        match GO_CIPHER_SUITES.iter().find(|(n, _, _)| n == name) {
            Some((_, code, true)) => {
                let suite = rustls::CipherSuite::from(*code);
                if !out.contains(&suite) {
                    out.push(suite);
                }
            }
            Some((_, _, false)) => {
                return Err(format!(
                    "tls_server_config.cipher_suites: {name} is not supported by rustls (TLS 1.2: \
                     the ECDHE suites with AES-GCM or ChaCha20-Poly1305)"
                ));
            }
            None => {
                return Err(format!(
                    "tls_server_config.cipher_suites: unknown cipher suite {name:?} (expected a \
                     name of Go's tls.CipherSuites(), e.g. TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)"
                ));
            }
        }
    }
    Ok(out)
}

/// `curve_preferences`: Go names to TLS named groups, in the order given.
fn curves(names: &[String]) -> Result<Vec<rustls::NamedGroup>, String> {
    let mut out = Vec::new();
    for name in names {
        match GO_CURVES.iter().find(|(n, _, _)| n == name) {
            Some((_, code, true)) => {
                let group = rustls::NamedGroup::from(*code);
                if !out.contains(&group) {
                    out.push(group);
                }
            }
            Some((_, _, false)) => {
                return Err(format!(
                    "tls_server_config.curve_preferences: {name} is not supported by rustls \
                     (expected CurveP256, CurveP384 or X25519)"
                ));
            }
            None => {
                return Err(format!(
                    "tls_server_config.curve_preferences: unknown curve {name:?} (expected \
                     CurveP256, CurveP384 or X25519)"
                ));
            }
        }
    }
    Ok(out)
}

/// `http_server_config.headers`: only [`EXTRA_HEADERS`], with their
/// allowed values; blank values are left out (exporter-toolkit: "unset if
/// blank").
fn headers(map: BTreeMap<String, String>) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut out = Vec::new();
    for (name, value) in map {
        let Some((_, allowed)) = EXTRA_HEADERS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = EXTRA_HEADERS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "http_server_config.headers: header {name:?} cannot be configured (expected one \
                 of {})",
                names.join(", ")
            ));
        };
        if value.is_empty() {
            continue;
        }
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(format!(
                "http_server_config.headers.{name}: invalid value {value:?} (expected one of {})",
                allowed.join(", ")
            ));
        }
        let Ok(value) = HeaderValue::from_str(&value) else {
            return Err(format!(
                "http_server_config.headers.{name}: {value:?} is not a valid header value"
            ));
        };
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("http_server_config.headers: {name:?}: {e}"))?;
        out.push((name, value));
    }
    Ok(out)
}

impl RawTls {
    fn settings(self, dir: &Path) -> Result<Option<TlsSettings>, String> {
        for (key, set) in [
            ("cert", self.cert.is_some()),
            ("key", self.key.is_some()),
            ("client_ca", self.client_ca.is_some()),
        ] {
            if set {
                return Err(format!(
                    "tls_server_config.{key} (inline PEM) is not supported by sockscope; use \
                     {key}_file"
                ));
            }
        }
        // Values are checked even without a certificate (plain HTTP), as
        // exporter-toolkit checks them when it reads the file.
        let client_auth = client_auth(self.client_auth_type.as_deref())?;
        let min_version = version(
            "min_version",
            self.min_version.as_deref(),
            TlsVersion::Tls12,
        )?;
        let max_version = version(
            "max_version",
            self.max_version.as_deref(),
            TlsVersion::Tls13,
        )?;
        let cipher_suites = cipher_suites(self.cipher_suites.as_deref().unwrap_or_default())?;
        let curve_preferences = curves(self.curve_preferences.as_deref().unwrap_or_default())?;
        let path = |p: &str| dir.join(p);
        let cert = self.cert_file.filter(|s| !s.is_empty());
        let key = self.key_file.filter(|s| !s.is_empty());
        let ca = self.client_ca_file.filter(|s| !s.is_empty());
        let (cert, key) = match (cert, key) {
            (None, None) => {
                // exporter-toolkit: no certificate means plain HTTP.
                if ca.is_some() || client_auth != ClientAuth::None {
                    return Err("tls_server_config: client certificates need cert_file and \
                                key_file"
                        .into());
                }
                if self.client_allowed_sans.is_some() {
                    return Err(
                        "tls_server_config.client_allowed_sans needs cert_file and key_file".into(),
                    );
                }
                return Ok(None);
            }
            (Some(_), None) => return Err("tls_server_config: cert_file without key_file".into()),
            (None, Some(_)) => return Err("tls_server_config: key_file without cert_file".into()),
            (Some(c), Some(k)) => (c, k),
        };
        match (client_auth, &ca) {
            (ClientAuth::None, Some(_)) => {
                return Err(
                    "tls_server_config: client_ca_file is set but client_auth_type is \
                            NoClientCert"
                        .into(),
                );
            }
            (auth, None) if auth.verifies() => {
                return Err(
                    "tls_server_config: client_auth_type verifies client certificates and \
                     needs client_ca_file"
                        .into(),
                );
            }
            _ => {}
        }
        let client_allowed_sans = match self.client_allowed_sans {
            None => Vec::new(),
            // As exporter-toolkit: a client that may send no certificate
            // leaves no SAN to match.
            Some(_) if !client_auth.mandatory() => {
                return Err(
                    "tls_server_config.client_allowed_sans needs client_auth_type \
                            RequireAnyClientCert or RequireAndVerifyClientCert"
                        .into(),
                );
            }
            Some(sans) if sans.is_empty() => {
                return Err(
                    "tls_server_config.client_allowed_sans is empty: no client certificate \
                     would be accepted"
                        .into(),
                );
            }
            Some(sans) => sans,
        };
        if min_version > max_version {
            return Err("tls_server_config: min_version is above max_version".into());
        }
        if !cipher_suites.is_empty()
            && min_version == TlsVersion::Tls12
            && cipher_suites.iter().all(|s| is_tls13(*s))
        {
            // Go ignores TLS 1.3 names there: TLS 1.2 would have no suite.
            return Err(
                "tls_server_config.cipher_suites: no TLS 1.2 suite (TLS 1.3 suites are not \
                 configurable; set min_version: TLS13 to allow TLS 1.3 only)"
                    .into(),
            );
        }
        Ok(Some(TlsSettings {
            cert_file: path(&cert),
            key_file: path(&key),
            client_auth,
            client_ca_file: ca.as_deref().map(path),
            client_allowed_sans,
            min_version,
            max_version,
            cipher_suites,
            prefer_server_cipher_suites: self.prefer_server_cipher_suites.unwrap_or(true),
            curve_preferences,
        }))
    }
}

/// Whether `suite` is a TLS 1.3 suite (`TLS_AES_*`, `TLS_CHACHA20_*`).
pub(crate) fn is_tls13(suite: rustls::CipherSuite) -> bool {
    (0x1301..=0x1305).contains(&u16::from(suite))
}

/// Checks that `hash` is a bcrypt hash (`$2a$`, `$2b$`, `$2x$`, `$2y$`,
/// a cost of 4 to 31 and 53 characters of salt and digest).
fn check_bcrypt(user: &str, hash: &str) -> Result<(), String> {
    let prefix_ok = ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|p| hash.starts_with(p));
    let parts = hash.parse::<bcrypt::HashParts>().ok().filter(|_| prefix_ok);
    if let Some(cost) = parts.as_ref().map(|p| p.get_cost())
        && !(4..=31).contains(&cost)
    {
        return Err(format!(
            "basic_auth_users.{}: bcrypt cost {cost} is outside 4..31",
            user.escape_debug()
        ));
    }
    if parts.is_none() {
        return Err(format!(
            "basic_auth_users.{}: not a bcrypt hash (expected $2y$<cost>$…, 60 characters, \
             e.g. from htpasswd -nBC 10 \"\" or Python's bcrypt.hashpw)",
            // A name may hold any character: escaped, the line stays one.
            user.escape_debug()
        ));
    }
    Ok(())
}

impl WebConfig {
    /// Parses the text of a web config file whose relative paths are
    /// relative to `dir`.
    ///
    /// # Errors
    /// The problem, in one line (YAML syntax, an unknown key, a value out
    /// of range or that rustls lacks, a header that may not be set, a hash
    /// that is not bcrypt).
    pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, String> {
        if text.trim().is_empty() {
            return Ok(WebConfig::default());
        }
        let raw: RawFile =
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string().replace(['\n', '\r'], " "))?;
        if raw.rate_limit.is_some() {
            return Err("rate_limit is not supported by sockscope (see --web.max-requests)".into());
        }
        let headers = match raw.http_server_config.and_then(|h| h.headers) {
            Some(h) => headers(h)?,
            None => Vec::new(),
        };
        let tls = match raw.tls_server_config {
            Some(t) => t.settings(dir)?,
            None => None,
        };
        let users = raw.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            check_bcrypt(user, hash)?;
        }
        Ok(WebConfig {
            tls,
            users,
            headers,
        })
    }

    /// Reads and parses `file` ([`WebConfig::parse`], paths relative to
    /// its directory).
    ///
    /// # Errors
    /// The file cannot be read, or [`WebConfig::parse`] fails.
    pub fn load(file: &Path) -> Result<WebConfig, ConfigError> {
        let err = |problem: String| ConfigError {
            file: file.to_owned(),
            problem,
        };
        let text = std::fs::read_to_string(file).map_err(|e| err(format!("cannot read: {e}")))?;
        let dir = file.parent().unwrap_or(Path::new("."));
        WebConfig::parse(&text, dir).map_err(err)
    }
}

#[cfg(test)]
#[path = "config/tests.rs"]
mod tests;

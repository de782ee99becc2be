//! `--web.config.file`: the YAML of prometheus/exporter-toolkit
//! (`docs/web-configuration.md`), so one file serves node_exporter and
//! sockscope alike. Read here: `tls_server_config` (`cert_file`,
//! `key_file`, `client_auth_type`, `client_ca_file`, `min_version`,
//! `max_version`) and `basic_auth_users` (bcrypt hashes). Paths are
//! relative to the file's directory. Unknown keys are an error; keys of the
//! format that sockscope does not implement (`cipher_suites`,
//! `curve_preferences`, `client_allowed_sans`, `http_server_config.headers`,
//! …) are an error that says so, rather than silently meaning something
//! else.
//!
//! Parsing does no I/O beyond reading the file ([`WebConfig::parse`] takes
//! the text); the certificate and key are loaded by [`crate::web::tls`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

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

/// exporter-toolkit's `client_auth_type` values that sockscope serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert` (the default): no client certificate is asked for.
    None,
    /// `VerifyClientCertIfGiven`: a certificate, if sent, must verify
    /// against `client_ca_file`.
    VerifyIfGiven,
    /// `RequireAndVerifyClientCert`: a certificate that verifies against
    /// `client_ca_file` is required.
    RequireAndVerify,
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
    pub client_ca_file: Option<PathBuf>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
}

/// The whole file: TLS when `tls_server_config` names a certificate, and
/// the basic-auth users (empty: no authentication).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebConfig {
    pub tls: Option<TlsSettings>,
    /// User name → bcrypt hash (checked to be one).
    pub users: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    // Known to exporter-toolkit, not implemented here: refused by name.
    cipher_suites: Option<serde_yaml_ng::Value>,
    prefer_server_cipher_suites: Option<serde_yaml_ng::Value>,
    curve_preferences: Option<serde_yaml_ng::Value>,
    client_allowed_sans: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// Accepted and without effect: sockscope serves HTTP/1.1 only.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<serde_yaml_ng::Value>,
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
        "VerifyClientCertIfGiven" => Ok(ClientAuth::VerifyIfGiven),
        "RequireAndVerifyClientCert" => Ok(ClientAuth::RequireAndVerify),
        t @ ("RequestClientCert" | "RequireAnyClientCert") => Err(format!(
            "tls_server_config.client_auth_type: {t} (a client certificate that is not \
             verified) is not supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
        )),
        other => Err(format!(
            "tls_server_config.client_auth_type: unknown value {other:?} (expected NoClientCert, \
             VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
        )),
    }
}

impl RawTls {
    fn settings(self, dir: &Path) -> Result<Option<TlsSettings>, String> {
        let unsupported = [
            ("cipher_suites", self.cipher_suites.is_some()),
            (
                "prefer_server_cipher_suites",
                self.prefer_server_cipher_suites.is_some(),
            ),
            ("curve_preferences", self.curve_preferences.is_some()),
            ("client_allowed_sans", self.client_allowed_sans.is_some()),
        ];
        if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(format!(
                "tls_server_config.{key} is not supported by sockscope (rustls' defaults apply)"
            ));
        }
        let path = |p: &str| dir.join(p);
        let cert = self.cert_file.filter(|s| !s.is_empty());
        let key = self.key_file.filter(|s| !s.is_empty());
        let ca = self.client_ca_file.filter(|s| !s.is_empty());
        let client_auth = client_auth(self.client_auth_type.as_deref())?;
        let (cert, key) = match (cert, key) {
            (None, None) => {
                // exporter-toolkit: no certificate means plain HTTP.
                if ca.is_some() || client_auth != ClientAuth::None {
                    return Err("tls_server_config: client certificates need cert_file and \
                                key_file"
                        .into());
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
            (ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify, None) => {
                return Err(
                    "tls_server_config: client_auth_type verifies client certificates and \
                     needs client_ca_file"
                        .into(),
                );
            }
            _ => {}
        }
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
        if min_version > max_version {
            return Err("tls_server_config: min_version is above max_version".into());
        }
        Ok(Some(TlsSettings {
            cert_file: path(&cert),
            key_file: path(&key),
            client_auth,
            client_ca_file: ca.as_deref().map(path),
            min_version,
            max_version,
        }))
    }
}

/// Checks that `hash` is a bcrypt hash (`$2a$`, `$2b$`, `$2x$`, `$2y$`,
/// cost and 53 characters of salt and digest).
fn check_bcrypt(user: &str, hash: &str) -> Result<(), String> {
    let prefix_ok = ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|p| hash.starts_with(p));
    if !prefix_ok || hash.parse::<bcrypt::HashParts>().is_err() {
        return Err(format!(
            "basic_auth_users.{user}: not a bcrypt hash (expected $2y$<cost>$…, 60 characters, \
             e.g. from htpasswd -nBC 10 \"\" or Python's bcrypt.hashpw)"
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
    /// of range, a hash that is not bcrypt).
    pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, String> {
        if text.trim().is_empty() {
            return Ok(WebConfig::default());
        }
        let raw: RawFile =
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string().replace('\n', " "))?;
        if let Some(http) = raw.http_server_config
            && http.headers.is_some()
        {
            return Err("http_server_config.headers is not supported by sockscope".into());
        }
        let tls = match raw.tls_server_config {
            Some(t) => t.settings(dir)?,
            None => None,
        };
        let users = raw.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            check_bcrypt(user, hash)?;
        }
        Ok(WebConfig { tls, users })
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

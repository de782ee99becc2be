//! The agent's web server, hardened the way exporters are expected to be:
//! `--web.config.file` ([`config`]: exporter-toolkit's TLS and basic-auth
//! YAML), TLS through rustls ([`tls`]), basic auth with bcrypt ([`auth`]),
//! the accept loop with its header timeout and connection cap ([`conn`]),
//! the server's own families ([`stats`]), and the memory of closed
//! connections handed back ([`trim`]).

pub mod auth;
pub mod config;
pub mod conn;
pub mod stats;
pub mod tls;
pub mod trim;

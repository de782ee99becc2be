//! sockscope: socket-state observability for reverse-proxy hosts.
//!
//! `source` reads the kernel (sock_diag netlink, `/proc`), `collector`
//! classifies what it read, `exporter` serves it on `/metrics`, `snapshot`
//! prints it for humans.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod collector;
pub mod exporter;
pub mod model;
pub mod signal;
pub mod snapshot;
pub mod source;

//! The sockscope lab: a reference reverse proxy ([`proxy`], `sockscope
//! proxy`) and fault-injecting upstreams ([`upstream`], `sockscope
//! upstream`) that reproduce, on one machine, the failures of the README's
//! lab section (ephemeral-port exhaustion, an upstream that stops
//! accepting, more pools).
//!
//! The library installs no signal handler: [`proxy::run`] and
//! [`upstream::run_workers`] serve until the stop future they are given
//! resolves (the binary passes its SIGTERM/SIGINT future).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod addr;
pub mod proxy;
mod serve;
pub mod upstream;

pub use addr::{Addr, Listener, Stream, listen};

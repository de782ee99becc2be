//! sockscope: socket-state observability for reverse-proxy hosts.
//!
//! `source` reads the kernel (sock_diag netlink, `/proc`) and nginx;
//! `collector` holds the analyses, each owning its metric families
//! (`metrics` is their shared vocabulary); `poller` decides what one poll
//! of one network namespace reads (through the fallback chains of
//! `source::chain`); `events` is the home of sources that aggregate
//! between polls (eBPF); `agent` runs the poll loop; `exporter`
//! serves `/metrics`; `snapshot` prints a sample for humans; `logging`
//! checks `--log.level`.
// One exception, with its SAFETY note: `web::trim` (malloc_trim).
#![deny(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod agent;
pub mod collector;
pub mod events;
pub mod exporter;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod namespaces;
pub mod poller;
pub mod signal;
pub mod snapshot;
pub mod source;
pub mod web;

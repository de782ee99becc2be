//! Test support shared by the integration tests: each test crate declares
//! `mod common;` and imports the modules it uses. Not every crate uses
//! every helper, hence `dead_code` is allowed here.
//!
//! - [`prereq`]: the one skip policy (what a test needs, and how to get it);
//! - [`netns`]: re-executing a test in a private network namespace, CPU
//!   pinning, sysctls;
//! - [`agent`], [`scrape`]: the `sockscope agent` child and one persistent
//!   scrape connection to it;
//! - [`process`], [`nginx`]: lab children (`sockscope proxy`/`upstream`,
//!   Prometheus, nginx), signals, /proc of a process;
//! - [`http`], [`load`]: an HTTP/1.1 response reader, clients and load;
//! - [`metrics`]: the Prometheus text format and its reference checkers;
//! - [`truth`]: `ss` and /proc readers, and assertions against them;
//! - [`wait`]: bounded polling.

#![allow(dead_code)]

pub mod agent;
pub mod certs;
pub mod churn;
pub mod http;
pub mod load;
pub mod metrics;
pub mod netns;
pub mod nginx;
pub mod prereq;
pub mod process;
pub mod prometheus;
pub mod scrape;
pub mod truth;
pub mod wait;

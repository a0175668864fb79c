//! The Shoal node agent: its [`session`] with the cluster's leader, the
//! [`worker`] that runs tasks as Docker containers, the [`network`] overlay
//! it plugs them into, the [`dns`] server that names services for them, the
//! node's eBPF data plane ([`datapath`]), and a simulated executor ([`sim`])
//! for manager tests and benchmarks.
pub mod datapath;
pub mod dns;
pub mod identity;
pub mod leave;
pub mod metrics;
pub mod network;
pub mod relay;
pub mod session;
pub mod sim;
pub mod worker;

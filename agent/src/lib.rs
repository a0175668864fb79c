//! The Shoal node agent: its [`session`] with the cluster's leader, the
//! node's eBPF data plane ([`datapath`]), and a simulated executor ([`sim`])
//! for manager tests and benchmarks. Docker execution, overlay plumbing and
//! DNS join it as the agent grows (see README's architecture picture).
pub mod datapath;
pub mod session;
pub mod sim;
pub mod worker;

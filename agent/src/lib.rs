//! The Shoal node agent. Today it owns the node's eBPF data plane
//! ([`datapath`]); task execution, overlay plumbing and DNS join it as the
//! agent grows (see README's architecture picture).
pub mod datapath;

//! Shoal's manager. Today: the daemon's shell (one manager per data
//! directory, the local control socket). The Raft store, control API,
//! scheduler, orchestrators, allocator and dispatcher arrive in [2/6].

pub mod daemon;

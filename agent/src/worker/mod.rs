//! The worker: turns assignments into Docker containers ([`docker`]) and
//! describes the node to the manager ([`describe`]).

pub mod describe;
pub mod docker;
pub mod files;

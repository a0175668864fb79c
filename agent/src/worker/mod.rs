//! The worker: turns assignments into Docker containers ([`docker`]), no
//! more than the node holds ([`admission`]), and describes the node to the
//! manager ([`describe`]).

pub mod admission;
mod attachments;
mod container_body;
pub mod describe;
pub mod docker;
mod engine_options;
pub mod files;
pub mod logs;
pub mod task_dir;
mod templated;

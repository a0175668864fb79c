//! The gRPC services every manager serves, and who may call them.

pub mod attachments;
pub mod authz;
pub mod autolock;
pub mod ca_service;
mod certificates;
mod cluster_settings;
pub mod control;
mod forward;
mod jobs;
pub mod leave;
pub mod membership;
mod names;
mod networks;
mod secrets_configs;
mod service_logs;
mod services;
pub(crate) mod validate;

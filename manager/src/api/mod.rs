//! The gRPC services every manager serves.

pub mod control;
mod forward;
pub mod membership;
mod validate;

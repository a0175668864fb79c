//! The gRPC services every manager serves.

pub mod control;
pub mod membership;
mod validate;

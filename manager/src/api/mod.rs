//! The gRPC services every manager serves.

pub mod autolock;
pub mod control;
mod forward;
pub mod membership;
mod validate;

//! `cargo xtask chaos`: faults in a seeded order on a 5-node lab cluster
//! (3 managers) while clients write to the store and load flows through the
//! mesh; then the checks (linearizable history, no address handed out
//! twice) and the figures (failover, node loss, failed requests).

pub mod addresses;
pub mod control;
pub mod failures;
pub mod faults;
pub mod linearize;
pub mod model;
pub mod report;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod setup;
pub mod stats;
pub mod store_ops;
pub mod traffic;
pub mod view;
pub mod workload;

//! Shoal's manager, laid out as swarmkit's: the replicated [`store`] on
//! [`raft`], the control API and manager membership in [`api`], the
//! [`scheduler`], the [`orchestrator`]s and the [`dispatcher`] that speaks
//! to agents, wired together by [`daemon`].

pub mod allocator;
pub mod api;
pub mod ca;
pub mod certificates;
pub mod daemon;
pub mod demotion;
pub mod dispatcher;
pub mod encryption;
pub mod events;
pub mod group_commit;
pub mod limits;
pub mod logs;
pub mod manager;
pub mod metrics;
pub mod orchestrator;
pub mod raft;
pub mod scheduler;
pub mod store;
#[cfg(test)]
mod test_rng;
pub mod web;

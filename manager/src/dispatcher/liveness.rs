//! When a node has missed its heartbeats, as the leader's monitor decides
//! it.
//!
//! The dispatcher's sessions live in the manager's memory, not in the
//! store, and outlive a term: a manager that led, lost the lead without
//! restarting (cut off from the others, then healed) and leads again still
//! holds the sessions of its earlier term. Their last heartbeat dates from
//! then and says nothing about the node now, which has been beating to
//! another leader since. Counted as they were, every node that had not
//! registered again within the monitor's first check was marked `Down` at
//! once, its tasks replaced, and the mesh stopped sending new connections
//! to them on every node (chaos seed 12: refusals through every node
//! seconds after such a leader took over). So, as swarmkit's dispatcher
//! gives every node a grace period when a term begins, nothing heard before
//! this term counts: a node's heartbeats are missed only from the later of
//! its last one and the start of the term.

use std::time::Duration;

use tokio::time::Instant;

/// Heartbeats a node may miss before it is down (Swarm's 3).
pub const MISSED_HEARTBEATS: u32 = 3;

/// The most heartbeats a second the leader asks of all its nodes together,
/// by default. Each costs the leader a TLS record and an HTTP/2 stream each
/// way: at 1,000 nodes on Swarm's 5 s (200 a second) they were nearly all
/// of an idle leader's 6.5% of a core. Nomad bounds its servers the same
/// way (`max_heartbeats_per_second`, 50 there). Up to 500 nodes nothing
/// changes at 5 s; past that a node's loss takes longer to notice (30 s at
/// 1,000 nodes), in exchange for heartbeat work that stops growing with the
/// cluster. The nodes counted are the Ready ones whose session beats (the
/// monitor counts them at each check).
pub const MAX_HEARTBEATS_PER_SECOND: u32 = 100;

/// The heartbeat period a node is told: the cluster's `period`, or longer
/// when `nodes` beating at it would exceed `max_per_second`, in whole
/// seconds so that nodes joining one by one do not change it at each join.
pub fn spread(period: Duration, nodes: usize, max_per_second: u32) -> Duration {
    let max_per_second = max_per_second.max(1) as usize;
    if nodes <= max_per_second.saturating_mul(period.as_millis() as usize) / 1000 {
        return period;
    }
    period.max(Duration::from_secs(nodes.div_ceil(max_per_second) as u64))
}

/// What the leader last heard of a node's session.
#[derive(Debug, Clone, Copy)]
pub struct Heard {
    /// Its last registration or heartbeat.
    pub last_seen: Instant,
    /// The heartbeat period it was last told: it beats at that pace until
    /// its next answer tells it another.
    pub told: Duration,
}

/// Whether a node has missed its heartbeats at `now`, under a leader whose
/// term began at `term_began` and whose heartbeat period is `period`;
/// `heard` is None for a node with no session here.
pub fn missed(heard: Option<Heard>, term_began: Instant, now: Instant, period: Duration) -> bool {
    let limit = period * MISSED_HEARTBEATS;
    let (last, limit) = match heard {
        Some(h) => (
            h.last_seen.max(term_began),
            // A lowered period reaches the node with its next answer.
            limit.max(h.told * MISSED_HEARTBEATS),
        ),
        None => (term_began, limit),
    };
    now.saturating_duration_since(last) > limit
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(2);

    fn heard(last_seen: Instant) -> Option<Heard> {
        Some(Heard {
            last_seen,
            told: PERIOD,
        })
    }

    #[test]
    fn periods_spread_only_past_the_bound_in_whole_seconds() {
        let swarm = Duration::from_secs(5);
        // 500 nodes at 5 s are 100 a second: unchanged.
        assert_eq!(spread(swarm, 1, 100), swarm);
        assert_eq!(spread(swarm, 500, 100), swarm);
        // One more: whole seconds, never below the cluster's period.
        assert_eq!(spread(swarm, 501, 100), Duration::from_secs(6));
        assert_eq!(spread(swarm, 1000, 100), Duration::from_secs(10));
        assert_eq!(spread(swarm, 2384, 100), Duration::from_secs(24));
        // A short period spreads as soon as the nodes need it.
        let short = Duration::from_millis(100);
        assert_eq!(spread(short, 10, 100), short);
        assert_eq!(spread(short, 11, 100), Duration::from_secs(1));
        assert_eq!(spread(short, 12, 5), Duration::from_secs(3));
        // No bound of zero: one a second at least.
        assert_eq!(spread(swarm, 6, 0), Duration::from_secs(6));
    }

    #[test]
    fn a_session_from_an_earlier_term_gets_the_grace_of_this_one() {
        let base = Instant::now();
        // Heard from 100 s ago, in this manager's earlier term; this term
        // began 1 s ago: the node beats to whichever leader it knew.
        let (last, term, now) = (
            base,
            base + Duration::from_secs(99),
            base + Duration::from_secs(100),
        );
        assert!(!missed(heard(last), term, now, PERIOD));
        // Silent for three periods since the term began: down.
        let later = term + PERIOD * MISSED_HEARTBEATS + Duration::from_millis(1);
        assert!(missed(heard(last), term, later, PERIOD));
    }

    #[test]
    fn heartbeats_of_this_term_count_from_the_last_one() {
        let term = Instant::now();
        let last = term + Duration::from_secs(10);
        let limit = PERIOD * MISSED_HEARTBEATS;
        assert!(!missed(heard(last), term, last + limit, PERIOD));
        assert!(missed(
            heard(last),
            term,
            last + limit + Duration::from_millis(1),
            PERIOD
        ));
    }

    #[test]
    fn a_node_never_heard_from_gets_the_grace_from_the_term_start() {
        let term = Instant::now();
        let limit = PERIOD * MISSED_HEARTBEATS;
        assert!(!missed(None, term, term + limit, PERIOD));
        assert!(missed(
            None,
            term,
            term + limit + Duration::from_millis(1),
            PERIOD
        ));
    }

    #[test]
    fn a_node_told_a_longer_period_has_that_long() {
        let term = Instant::now();
        let told_long = Some(Heard {
            last_seen: term,
            told: Duration::from_secs(5),
        });
        // Lowered to 2 s since: the node beats every 5 s until told.
        assert!(!missed(
            told_long,
            term,
            term + Duration::from_secs(14),
            PERIOD
        ));
        assert!(missed(
            told_long,
            term,
            term + Duration::from_secs(16),
            PERIOD
        ));
    }
}

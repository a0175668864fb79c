//! The fault schedule: rounds of every fault kind in an order drawn from
//! the seed, each held a bounded time, then recovered and given time to
//! settle. The schedule is fixed before the run starts; only the concrete
//! target of "the leader" depends on the cluster.

use std::{fmt, time::Duration};

use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the leading manager's process (its agent keeps running).
    KillLeader,
    /// SIGKILL a manager that does not lead.
    KillFollower,
    /// SIGKILL a node's agent (its task containers keep running).
    KillAgent,
    /// What a node sees when its Docker engine restarts: every task
    /// container stopped at once (see README: the lab shares one engine).
    RestartEngine,
    /// Cut the node's underlay link (`lab isolate`), then heal it.
    Isolate,
}

pub const ALL: [Fault; 5] = [
    Fault::KillLeader,
    Fault::KillFollower,
    Fault::KillAgent,
    Fault::RestartEngine,
    Fault::Isolate,
];

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::KillLeader => "kill-leader",
            Fault::KillFollower => "kill-follower",
            Fault::KillAgent => "kill-agent",
            Fault::RestartEngine => "restart-engine",
            Fault::Isolate => "isolate",
        })
    }
}

/// One fault of the schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub fault: Fault,
    /// Picks the target among the candidates the fault has when it starts
    /// (followers, nodes): `candidates[pick % len]`.
    pub pick: u64,
    /// How long the fault lasts before it is recovered.
    pub hold: Duration,
}

/// Times of one step.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Shortest and longest hold.
    pub hold: (Duration, Duration),
    /// Quiet time after each recovery before the next fault.
    pub settle: Duration,
}

/// Rounds of all five faults, each round in its own seeded order, until
/// `budget` is spent (at least one round: every fault happens).
pub fn plan(seed: u64, budget: Duration, timing: Timing) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut steps = Vec::new();
    let mut spent = Duration::ZERO;
    loop {
        let mut round = ALL;
        rng.shuffle(&mut round);
        for fault in round {
            let (lo, hi) = timing.hold;
            let spread = hi.saturating_sub(lo).as_millis() as u64;
            let hold = lo + Duration::from_millis(rng.below(spread + 1));
            let pick = rng.next_u64();
            spent += hold + timing.settle;
            steps.push(Step { fault, pick, hold });
        }
        if spent >= budget {
            return steps;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        hold: (Duration::from_secs(8), Duration::from_secs(12)),
        settle: Duration::from_secs(10),
    };

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_a_different_one() {
        let budget = Duration::from_secs(600);
        assert_eq!(plan(7, budget, TIMING), plan(7, budget, TIMING));
        assert_ne!(plan(7, budget, TIMING), plan(8, budget, TIMING));
    }

    #[test]
    fn every_round_has_every_fault_once_and_holds_are_bounded() {
        let steps = plan(42, Duration::from_secs(300), TIMING);
        assert_eq!(steps.len() % ALL.len(), 0);
        for round in steps.chunks(ALL.len()) {
            for fault in ALL {
                assert_eq!(round.iter().filter(|s| s.fault == fault).count(), 1);
            }
        }
        for step in &steps {
            assert!(step.hold >= TIMING.hold.0 && step.hold <= TIMING.hold.1);
        }
    }

    #[test]
    fn a_short_budget_still_runs_one_whole_round() {
        assert_eq!(plan(1, Duration::ZERO, TIMING).len(), ALL.len());
    }
}

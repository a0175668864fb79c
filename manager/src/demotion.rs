//! A manager that the cluster demoted (`shoal node demote`) or removed
//! (`shoal node rm`) erases what only managers may hold and stops, as
//! swarmkit's managers clear their Raft data on demotion. Its data
//! directory holds the Raft log and state with the root CA's key and the
//! join tokens' secrets, sealed with a data key that sits next to them
//! (unless autolock is on): left in place, a host that is no longer
//! trusted as a manager could still mint manager certificates.
//!
//! How a manager learns it: demotion takes it out of the Raft
//! configuration first, and the cluster's managers refuse its certificate
//! from then on (`api::authz`, with `shoal-refusal` metadata). A manager
//! that no longer finds itself in the configuration it last saw, or has
//! heard from no leader for a while (it was down when it was demoted, or
//! never saw the entry that removed it), asks its peers with
//! `Membership.CheckManager`. It concludes only on two rounds in a row
//! where at least one peer refused it as demoted or removed and none
//! accepted it: one lagging peer cannot make a manager erase itself, and a
//! partitioned manager, which reaches no one, keeps its state.

use openraft::async_runtime::WatchReceiver as _;
use std::{
    collections::BTreeMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use shoal_api::pb::{Empty, membership_client::MembershipClient};

use crate::manager::Manager;

/// How often the manager looks at its membership.
const TICK: Duration = Duration::from_secs(2);
/// How long without a leader before the manager asks its peers.
const LEADERLESS: Duration = Duration::from_secs(10);
/// How long one peer has to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// Rounds in a row that must say "demoted" before the manager acts.
const ROUNDS: u32 = 2;

/// What the peers said in one round.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    /// Peers that still take this manager's certificate as a manager's.
    pub accepted: usize,
    /// Peers that refused it, with the reason they gave (`demoted`,
    /// `removed`) and their message.
    pub refused: Vec<(String, String)>,
}

impl Round {
    /// The refusal to act on, if this round says the manager is out.
    fn verdict(&self) -> Option<&(String, String)> {
        (self.accepted == 0).then(|| self.refused.first()).flatten()
    }
}

/// Waits until this manager has been demoted or removed, and says why.
/// Never returns for a manager that stays one.
pub async fn watch(manager: Arc<Manager>) -> String {
    let me = manager.raft_id;
    let mut was_member = false;
    let mut leader_seen = Instant::now();
    let mut strikes = 0;
    let mut ticker = tokio::time::interval(TICK);
    loop {
        ticker.tick().await;
        let (in_config, leader, peers) = {
            let metrics = manager.raft.metrics().borrow_watched().clone();
            let membership = metrics.membership_config.membership();
            let in_config = membership.nodes().any(|(id, _)| *id == me);
            let peers: BTreeMap<u64, String> = membership
                .nodes()
                .filter(|(id, _)| **id != me)
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect();
            (in_config, metrics.current_leader, peers)
        };
        // A joining manager is outside the configuration until the leader
        // adds it: only one that was in it can be taken out.
        was_member |= in_config;
        if leader.is_some() && in_config {
            leader_seen = Instant::now();
        }
        let suspect = was_member && (!in_config || leader_seen.elapsed() >= LEADERLESS);
        if !suspect || peers.is_empty() {
            strikes = 0;
            continue;
        }
        let round = ask(&manager, peers.values()).await;
        match round.verdict() {
            Some((why, message)) => {
                strikes += 1;
                tracing::warn!(%why, %message, round = strikes, "the cluster's managers refuse this manager");
                if strikes >= ROUNDS {
                    return message.clone();
                }
            }
            None => strikes = 0,
        }
    }
}

/// Asks every peer at once whether this manager is still one.
async fn ask<'a>(manager: &Manager, peers: impl Iterator<Item = &'a String>) -> Round {
    let mut calls = tokio::task::JoinSet::new();
    for addr in peers {
        let Ok(channel) = manager.channel(addr) else {
            continue;
        };
        calls.spawn(tokio::time::timeout(ASK_TIMEOUT, async move {
            MembershipClient::new(channel).check_manager(Empty {}).await
        }));
    }
    let mut round = Round::default();
    while let Some(answer) = calls.join_next().await {
        match answer {
            Ok(Ok(Ok(_))) => round.accepted += 1,
            Ok(Ok(Err(status))) => {
                if let Some(why) = status
                    .metadata()
                    .get(shoal_api::REFUSAL_METADATA)
                    .and_then(|v| v.to_str().ok())
                {
                    round
                        .refused
                        .push((why.to_owned(), status.message().to_owned()));
                }
                // Any other error (unreachable, not the cluster's manager
                // yet, overloaded) says nothing either way.
            }
            // Timed out or the call panicked: no answer.
            Ok(Err(_)) | Err(_) => {}
        }
    }
    round
}

/// Removes everything in `data_dir` but its lock file: the Raft log and
/// state, the data key file and the manager's certificates. The directory
/// stays, empty, for a later `shoal-manager join`.
pub fn erase(data_dir: &Path, lock_name: &str) -> Result<()> {
    for entry in
        std::fs::read_dir(data_dir).with_context(|| format!("reading {}", data_dir.display()))?
    {
        let entry = entry?;
        if entry.file_name() == lock_name {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(why: &str) -> (String, String) {
        (why.to_owned(), format!("node x {why}"))
    }

    #[test]
    fn one_peer_that_still_accepts_outweighs_refusals() {
        let round = Round {
            accepted: 1,
            refused: vec![refused("demoted")],
        };
        assert_eq!(round.verdict(), None);
    }

    #[test]
    fn refusals_with_no_acceptance_are_a_verdict() {
        let round = Round {
            accepted: 0,
            refused: vec![refused("removed"), refused("demoted")],
        };
        assert_eq!(round.verdict().map(|r| r.0.as_str()), Some("removed"));
    }

    #[test]
    fn silence_is_no_verdict() {
        assert_eq!(Round::default().verdict(), None);
    }

    #[test]
    fn erase_keeps_only_the_lock_file() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("LOCK"), "")?;
        std::fs::write(dir.path().join("raft-log.redb"), "log")?;
        std::fs::write(dir.path().join("keys.json"), "{}")?;
        std::fs::create_dir_all(dir.path().join("certificates/v1"))?;
        std::fs::write(dir.path().join("certificates/v1/node.crt"), "x")?;
        erase(dir.path(), "LOCK")?;
        let left: Vec<_> = std::fs::read_dir(dir.path())?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        assert_eq!(left, vec![std::ffi::OsString::from("LOCK")]);
        Ok(())
    }
}

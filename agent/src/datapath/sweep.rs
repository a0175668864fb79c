//! The sweeper: the mesh's connection tables lose the entries of TCP
//! connections that ended (both sides sent a FIN, or one reset it; on the
//! entry node of direct server return, which never sees the task's side,
//! the client's FIN; see `shoal_agent_common::close`, whose marks the eBPF
//! programs set) once they have lingered, as TIME_WAIT does: retransmitted FINs and the last ACKs
//! still find their entry meanwhile. Live connections, idle or not, are
//! never touched; the LRU tables still evict the longest idle entries when
//! they fill.
//!
//! An entry is removed once two sweeps at least `linger` apart saw it
//! closed and unchanged (the same connection: a new one on its ports has
//! another initial sequence number or clean flags), and read again just
//! before: an ended connection's entries stay at least `linger`, and go
//! within `linger` plus two sweep periods.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use shoal_agent_common::{CtEntry, CtKey, close::same_closed};

use super::{BpfRoot, DatapathError, conntrack::PinnedTable};

/// How long an ended connection's entries stay by default.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(10);

/// The shortest and longest lingers the agent accepts.
pub const LINGER_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));

/// How often the tables are swept for a linger: a quarter of it, at least
/// every second and at most every minute.
pub fn period(linger: Duration) -> Duration {
    (linger / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// One of the mesh's connection tables, as the sweeper reads it.
pub trait ConnectionTable {
    /// Every entry of an ended connection now.
    fn closed(&self) -> Result<Vec<(CtKey, CtEntry)>, DatapathError>;
    /// The entry under `key` now, if any.
    fn get(&self, key: &CtKey) -> Option<CtEntry>;
    /// Removes `key`'s entry; whether it was there.
    fn remove(&mut self, key: &CtKey) -> bool;
}

/// Which table an entry was seen in (the unconfirmed one, or the other).
type Seen = HashMap<(usize, CtKey), (Instant, CtEntry)>;

/// What the sweeper remembers between sweeps: the ended connections' entries
/// it saw, and when it first did.
pub struct Sweeper {
    linger: Duration,
    seen: Seen,
}

impl Sweeper {
    pub fn new(linger: Duration) -> Self {
        Self {
            linger,
            seen: HashMap::new(),
        }
    }

    /// One sweep of `tables` at `now`: removes the entries that lingered
    /// long enough and returns how many.
    pub fn sweep(
        &mut self,
        tables: &mut [&mut dyn ConnectionTable],
        now: Instant,
    ) -> Result<usize, DatapathError> {
        let mut next: Seen = HashMap::new();
        let mut removed = 0;
        for (index, table) in tables.iter_mut().enumerate() {
            for (key, entry) in table.closed()? {
                let first = match self.seen.get(&(index, key)) {
                    Some((since, before)) if same_closed(before, &entry) => *since,
                    _ => now,
                };
                if now.duration_since(first) < self.linger {
                    next.insert((index, key), (first, entry));
                    continue;
                }
                // Read again: a new connection may have taken the ports
                // since the listing.
                let still = table.get(&key).is_some_and(|now| same_closed(&entry, &now));
                if still && table.remove(&key) {
                    removed += 1;
                }
            }
        }
        self.seen = next;
        Ok(removed)
    }

    /// Ended connections' entries waiting for their linger to pass.
    pub fn waiting(&self) -> usize {
        self.seen.len()
    }
}

/// The sweeper and the tables it sweeps, opened once and kept while
/// their pins stay (a stat a tick, not two maps opened).
struct Sweeping {
    sweeper: Sweeper,
    tables: Option<[PinnedTable; 2]>,
}

impl Sweeping {
    /// One sweep of the node's tables (none while the data plane has not
    /// pinned them).
    fn tick(&mut self, root: &BpfRoot) -> Result<usize, DatapathError> {
        let kept = self
            .tables
            .take()
            .filter(|tables| tables.iter().all(|t| t.still_pinned(root)));
        self.tables = match kept {
            Some(tables) => Some(tables),
            None => PinnedTable::open_both(root)?,
        };
        let Some([confirmed, embryonic]) = self.tables.as_mut() else {
            return Ok(0);
        };
        self.sweeper
            .sweep(&mut [confirmed, embryonic], Instant::now())
    }
}

/// Sweeps the node's tables every [`period`] for as long as the agent
/// runs (nothing while the data plane has not pinned them yet), counting
/// what it removes in `/metrics`.
pub async fn keep_sweeping(root: BpfRoot, linger: Duration) {
    let mut sweeping = Some(Sweeping {
        sweeper: Sweeper::new(linger),
        tables: None,
    });
    let mut tick = tokio::time::interval(period(linger));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(mut owned) = sweeping.take() else {
            return;
        };
        let root = root.clone();
        let done = tokio::task::spawn_blocking(move || {
            let result = owned.tick(&root);
            (owned, result)
        })
        .await;
        match done {
            Ok((owned, result)) => {
                match result {
                    Ok(0) => {}
                    Ok(removed) => {
                        crate::metrics::connections_removed(removed as u64);
                        tracing::debug!(removed, "ended connections' entries removed");
                    }
                    Err(error) => tracing::warn!(%error, "sweeping the mesh's connection tables"),
                }
                sweeping = Some(owned);
            }
            Err(error) => {
                tracing::error!(%error, "the connection sweeper failed; starting it afresh");
                sweeping = Some(Sweeping {
                    sweeper: Sweeper::new(linger),
                    tables: None,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_agent_common::{
        CT_CLOSING, CT_DSR, CT_ESTABLISHED, CT_FIN_CLIENT, CT_FIN_TASK, CT_RESET, CT_RETURN,
        close::has_ended_here,
    };

    #[derive(Default)]
    struct Fake(HashMap<CtKey, CtEntry>);

    impl ConnectionTable for Fake {
        fn closed(&self) -> Result<Vec<(CtKey, CtEntry)>, DatapathError> {
            Ok(self
                .0
                .iter()
                .filter(|(_, e)| has_ended_here(e.flags))
                .map(|(k, e)| (*k, *e))
                .collect())
        }
        fn get(&self, key: &CtKey) -> Option<CtEntry> {
            self.0.get(key).copied()
        }
        fn remove(&mut self, key: &CtKey) -> bool {
            self.0.remove(key).is_some()
        }
    }

    fn key(port: u16) -> CtKey {
        CtKey {
            saddr: 1,
            daddr: 2,
            sport: port,
            dport: 80,
            proto: 6,
            _pad: [0; 3],
        }
    }

    fn entry(flags: u32, syn_seq: u32) -> CtEntry {
        CtEntry {
            addr: 3,
            port: 80,
            nat_port: 1000,
            service: 1,
            flags,
            syn_seq,
            client_seq: 0,
        }
    }

    const LINGER: Duration = Duration::from_secs(10);
    const CLOSED: u32 = CT_ESTABLISHED | CT_CLOSING | CT_FIN_CLIENT | CT_FIN_TASK;

    #[test]
    fn an_ended_connection_goes_after_its_linger_and_a_live_one_stays() {
        let mut table = Fake::default();
        table.0.insert(key(1), entry(CLOSED, 7));
        table.0.insert(key(2), entry(CT_ESTABLISHED, 8)); // live, idle
        table.0.insert(
            key(3),
            entry(CT_ESTABLISHED | CT_CLOSING | CT_FIN_CLIENT, 9),
        ); // half closed
        table.0.insert(key(4), entry(CT_CLOSING | CT_RESET, 10));
        let mut sweeper = Sweeper::new(LINGER);
        let t0 = Instant::now();
        assert_eq!(sweeper.sweep(&mut [&mut table], t0).unwrap(), 0);
        assert_eq!(sweeper.waiting(), 2);
        let early = t0 + LINGER - Duration::from_millis(1);
        assert_eq!(sweeper.sweep(&mut [&mut table], early).unwrap(), 0);
        assert_eq!(table.0.len(), 4);
        assert_eq!(sweeper.sweep(&mut [&mut table], t0 + LINGER).unwrap(), 2);
        let mut left: Vec<u16> = table.0.keys().map(|k| k.sport).collect();
        left.sort_unstable();
        assert_eq!(left, [2, 3]);
        assert_eq!(sweeper.waiting(), 0);
    }

    #[test]
    fn a_direct_connection_the_client_closed_goes_from_its_entry_node_only() {
        let half = CT_ESTABLISHED | CT_CLOSING | CT_FIN_CLIENT;
        let mut table = Fake::default();
        // The entry node's entry: the task's FIN never passes there.
        table.0.insert(key(1), entry(CT_DSR | half, 7));
        // The task's node's entry of a direct connection: it sees both.
        table.0.insert(key(2), entry(CT_DSR | CT_RETURN | half, 8));
        // A direct connection still open.
        table.0.insert(key(3), entry(CT_DSR | CT_ESTABLISHED, 9));
        let mut sweeper = Sweeper::new(LINGER);
        let t0 = Instant::now();
        assert_eq!(sweeper.sweep(&mut [&mut table], t0).unwrap(), 0);
        assert_eq!(sweeper.sweep(&mut [&mut table], t0 + LINGER).unwrap(), 1);
        let mut left: Vec<u16> = table.0.keys().map(|k| k.sport).collect();
        left.sort_unstable();
        assert_eq!(left, [2, 3]);
    }

    #[test]
    fn a_new_connection_on_the_same_ports_starts_the_linger_again() {
        let mut table = Fake::default();
        table.0.insert(key(1), entry(CLOSED, 7));
        let mut sweeper = Sweeper::new(LINGER);
        let t0 = Instant::now();
        sweeper.sweep(&mut [&mut table], t0).unwrap();
        // The ports served another connection, which ended too.
        table.0.insert(key(1), entry(CLOSED, 99));
        assert_eq!(sweeper.sweep(&mut [&mut table], t0 + LINGER).unwrap(), 0);
        assert_eq!(
            sweeper
                .sweep(&mut [&mut table], t0 + LINGER + LINGER)
                .unwrap(),
            1
        );
    }

    #[test]
    fn a_connection_reopened_between_listing_and_removal_stays() {
        struct Reopens(Fake);
        impl ConnectionTable for Reopens {
            fn closed(&self) -> Result<Vec<(CtKey, CtEntry)>, DatapathError> {
                self.0.closed()
            }
            fn get(&self, _key: &CtKey) -> Option<CtEntry> {
                Some(entry(CT_ESTABLISHED, 7)) // a SYN cleared the ending bits
            }
            fn remove(&mut self, key: &CtKey) -> bool {
                self.0.remove(key)
            }
        }
        let mut table = Reopens(Fake::default());
        table.0.0.insert(key(1), entry(CLOSED, 7));
        let mut sweeper = Sweeper::new(LINGER);
        let t0 = Instant::now();
        sweeper.sweep(&mut [&mut table], t0).unwrap();
        assert_eq!(sweeper.sweep(&mut [&mut table], t0 + LINGER).unwrap(), 0);
        assert_eq!(table.0.0.len(), 1);
    }

    #[test]
    fn both_tables_are_swept_and_kept_apart() {
        let mut confirmed = Fake::default();
        let mut embryonic = Fake::default();
        confirmed.0.insert(key(1), entry(CLOSED, 7));
        embryonic.0.insert(key(1), entry(CT_CLOSING | CT_RESET, 7));
        let mut sweeper = Sweeper::new(LINGER);
        let t0 = Instant::now();
        sweeper
            .sweep(&mut [&mut confirmed, &mut embryonic], t0)
            .unwrap();
        assert_eq!(sweeper.waiting(), 2);
        let n = sweeper
            .sweep(&mut [&mut confirmed, &mut embryonic], t0 + LINGER)
            .unwrap();
        assert_eq!(n, 2);
        assert!(confirmed.0.is_empty() && embryonic.0.is_empty());
    }

    #[test]
    fn the_period_is_a_quarter_of_the_linger_within_bounds() {
        assert_eq!(period(Duration::from_secs(10)), Duration::from_millis(2500));
        assert_eq!(period(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(period(Duration::from_secs(3600)), Duration::from_secs(60));
    }
}

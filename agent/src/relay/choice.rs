//! Which task a relayed connection goes to: the choice the eBPF mesh
//! makes for a connection's first packet (`agent-ebpf/src/pick.rs`), made
//! here in userspace with the same parts: round-robin by default; with
//! `--lb maglev` the Maglev table `datapath::maglev` builds (the one the
//! agent writes for the mesh, over the same backend identities) indexed by
//! the same flow hash (`shoal_agent_common::flow_hash`); with
//! `--endpoint-affinity client-ip` a client keeps its task while it comes
//! back within the timeout, a new one is picked by `client_hash`. So a
//! flow entering at any node reaches the same task, as with the mesh.
//! The backends are the running, healthy, non-draining tasks of the push:
//! a task stopping or failing its check gets no new connection.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use shoal_agent_common::{Backend, MESH_MAX_AFFINITY, client_hash, flow_hash};

use crate::datapath::{
    maglev,
    mesh::{be_addr, be_port},
    pick::{PickPolicy, identity},
};

const PROTO_TCP: u8 = 6;

/// One relayed port's backends and how to pick among them.
#[derive(Debug, Default)]
pub struct Choice {
    published: u16,
    backends: Vec<SocketAddrV4>,
    policy: PickPolicy,
    /// Round-robin's next turn.
    next: usize,
    /// Maglev table (indices into `backends`): with maglev or affinity.
    table: Vec<u32>,
    /// Affinity: each client's task and when it last opened a connection.
    clients: HashMap<Ipv4Addr, (SocketAddrV4, Instant)>,
}

impl Choice {
    pub fn new(published: u16) -> Self {
        Self {
            published,
            ..Default::default()
        }
    }

    /// The push's backends (in a stable order) and policy.
    pub fn update(&mut self, backends: Vec<SocketAddrV4>, policy: PickPolicy) {
        if policy.affinity_timeout_s == 0 {
            self.clients.clear();
        }
        let wants_table = policy.maglev || policy.affinity_timeout_s > 0;
        let had_table = !self.table.is_empty();
        if backends != self.backends || wants_table != had_table {
            self.table = if wants_table {
                let identities: Vec<[u8; 6]> =
                    backends.iter().map(|b| identity(&mapped(*b))).collect();
                maglev::build(&identities, maglev::table_size(backends.len()))
            } else {
                Vec::new()
            };
        }
        self.backends = backends;
        self.policy = policy;
    }

    /// The task for a new connection from `client`, none of `avoid` (tasks
    /// this connection already failed to reach) if another is left.
    pub fn pick(
        &mut self,
        client: SocketAddrV4,
        now: Instant,
        avoid: &[SocketAddrV4],
    ) -> Option<SocketAddrV4> {
        let chosen = if self.policy.affinity_timeout_s > 0 {
            self.affine(client, now)
        } else if self.policy.maglev {
            self.table_pick(flow_hash(
                be_addr(*client.ip()),
                be_port(client.port()),
                be_port(self.published),
                PROTO_TCP,
            ))
        } else {
            None
        };
        match chosen {
            Some(b) if !avoid.contains(&b) => Some(b),
            _ => self.round_robin(avoid),
        }
    }

    fn round_robin(&mut self, avoid: &[SocketAddrV4]) -> Option<SocketAddrV4> {
        for _ in 0..self.backends.len() {
            let b = self.backends[self.next % self.backends.len()];
            self.next = self.next.wrapping_add(1);
            if !avoid.contains(&b) {
                return Some(b);
            }
        }
        None
    }

    fn table_pick(&self, hash: u32) -> Option<SocketAddrV4> {
        if self.table.is_empty() {
            return None;
        }
        let index = self.table[hash as usize % self.table.len()];
        self.backends.get(index as usize).copied()
    }

    /// As `agent-ebpf/src/pick.rs`'s `affine`: the remembered task while
    /// the client comes back within the timeout and the task is still a
    /// backend; else the table's pick for the client's address.
    fn affine(&mut self, client: SocketAddrV4, now: Instant) -> Option<SocketAddrV4> {
        let timeout = Duration::from_secs(u64::from(self.policy.affinity_timeout_s));
        if let Some((task, used)) = self.clients.get_mut(client.ip())
            && now.saturating_duration_since(*used) < timeout
            && self.backends.contains(task)
        {
            *used = now;
            return Some(*task);
        }
        let task = self.table_pick(client_hash(be_addr(*client.ip())))?;
        if self.clients.len() >= MESH_MAX_AFFINITY as usize {
            // Full, as the mesh's LRU: the expired go first; if none has,
            // this client is picked by its hash but not remembered.
            self.clients
                .retain(|_, (_, used)| now.saturating_duration_since(*used) < timeout);
        }
        if self.clients.len() < MESH_MAX_AFFINITY as usize {
            self.clients.insert(*client.ip(), (task, now));
        }
        Some(task)
    }
}

/// A backend as the mesh's maps hold it (network order), whose identity
/// seeds its Maglev permutation.
fn mapped(b: SocketAddrV4) -> Backend {
    Backend {
        addr: be_addr(*b.ip()),
        port: be_port(b.port()),
        _pad: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks(n: u8) -> Vec<SocketAddrV4> {
        (0..n)
            .map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 255, 0, 10 + i), 80))
            .collect()
    }

    fn client(last: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, last), port)
    }

    #[test]
    fn round_robin_takes_turns_and_skips_what_failed() {
        let mut c = Choice::new(8080);
        c.update(tasks(3), PickPolicy::default());
        let now = Instant::now();
        let picked: Vec<_> = (0..6)
            .map(|i| c.pick(client(100, 40000 + i), now, &[]).unwrap())
            .collect();
        assert_eq!(picked, [tasks(3), tasks(3)].concat());
        let failed = [tasks(3)[0]];
        for i in 0..4 {
            assert_ne!(c.pick(client(100, i), now, &failed), Some(failed[0]));
        }
        assert_eq!(c.pick(client(100, 1), now, &tasks(3)), None);
    }

    #[test]
    fn a_task_that_leaves_the_backends_gets_no_new_connection() {
        // Draining and unhealthy tasks are not in the push's backends.
        let mut c = Choice::new(8080);
        c.update(tasks(3), PickPolicy::default());
        let gone = tasks(3)[1];
        c.update(vec![tasks(3)[0], tasks(3)[2]], PickPolicy::default());
        let now = Instant::now();
        for i in 0..100 {
            assert_ne!(c.pick(client(100, i), now, &[]), Some(gone));
        }
        c.update(Vec::new(), PickPolicy::default());
        assert_eq!(c.pick(client(100, 1), now, &[]), None);
    }

    #[test]
    fn maglev_picks_what_the_mesh_table_picks_for_the_flow() {
        let policy = PickPolicy {
            maglev: true,
            affinity_timeout_s: 0,
        };
        let mut c = Choice::new(8080);
        // Listed in another order than the table's sort: the same table.
        let mut backends = tasks(5);
        backends.reverse();
        c.update(backends.clone(), policy);
        // The table the agent writes for the mesh (`PickMaps`), built here
        // from the maps' form of the same backends.
        let ids: Vec<[u8; 6]> = backends.iter().map(|b| identity(&mapped(*b))).collect();
        let table = maglev::build(&ids, maglev::table_size(5));
        let now = Instant::now();
        for port in 40000..40200u16 {
            let from = client(100, port);
            let hash = flow_hash(
                u32::from_ne_bytes([192, 0, 2, 100]),
                port.to_be(),
                8080u16.to_be(),
                6,
            );
            let expected = backends[table[hash as usize % table.len()] as usize];
            assert_eq!(c.pick(from, now, &[]), Some(expected), "client port {port}");
            // And again: a flow's task does not depend on turns.
            assert_eq!(c.pick(from, now, &[]), Some(expected));
        }
    }

    #[test]
    fn affinity_keeps_a_client_until_its_timeout_or_its_task_goes() {
        let policy = PickPolicy {
            maglev: false,
            affinity_timeout_s: 30,
        };
        let mut c = Choice::new(8080);
        c.update(tasks(4), policy);
        let t0 = Instant::now();
        let first = c.pick(client(100, 40000), t0, &[]).unwrap();
        for port in 40001..40050 {
            assert_eq!(c.pick(client(100, port), t0, &[]), Some(first));
        }
        // A new client goes by its address's hash, as on every node.
        let ids: Vec<[u8; 6]> = tasks(4).iter().map(|b| identity(&mapped(*b))).collect();
        let table = maglev::build(&ids, maglev::table_size(4));
        let by_hash = |last: u8| {
            tasks(4)[table
                [client_hash(u32::from_ne_bytes([192, 0, 2, last])) as usize % table.len()]
                as usize]
        };
        assert_eq!(first, by_hash(100));
        // Its task leaves: it moves, and stays with the new one.
        let rest: Vec<_> = tasks(4).into_iter().filter(|t| *t != first).collect();
        c.update(rest.clone(), policy);
        let moved = c.pick(client(100, 41000), t0, &[]).unwrap();
        assert_ne!(moved, first);
        assert_eq!(c.pick(client(100, 41001), t0, &[]), Some(moved));
        // Idle past the timeout: picked again by its hash.
        let later = t0 + Duration::from_secs(31);
        let ids: Vec<[u8; 6]> = rest.iter().map(|b| identity(&mapped(*b))).collect();
        let table = maglev::build(&ids, maglev::table_size(3));
        let again = rest[table
            [client_hash(u32::from_ne_bytes([192, 0, 2, 100])) as usize % table.len()]
            as usize];
        assert_eq!(c.pick(client(100, 42000), later, &[]), Some(again));
    }
}

//! The maps of service-name DNS answered at each task's veth (the eBPF
//! side is `agent-ebpf/src/dns.rs`, inside `vip_out`), kept from the same
//! [`Records`] the agent's server answers from.
//!
//! A veth's task sees the names of all its networks, the first network
//! that has a name winning ([`Records::lookup`]): each distinct list of
//! networks is a *view* with a number of its own, and a name's key is
//! (view, its wire format in lowercase). Every name of the view that fits
//! the key ([`DNS_MAX_NAME`] bytes on the wire) goes in: with its records
//! when the server's plain path ([`crate::dns::plain_a`]) would answer it
//! so (1 to [`DNS_MAX_ADDRS`] addresses, an answer within 512 bytes),
//! empty otherwise (no address, too many: the program leaves those to the
//! server). The view being whole is what lets the program answer NXDOMAIN
//! for a bare name it does not hold, as the server does; dotted names it
//! does not hold (upstream, denied) go to the server.
//!
//! Updates never expose a wrong answer: names are written before the
//! askers that point at their view, askers removed before names, and view
//! numbers are not reused while the agent runs.

use std::{collections::HashMap, net::Ipv4Addr, path::PathBuf};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use shoal_agent_common::{
    DNS_ANSWERED, DNS_MAX_ADDRS, DNS_MAX_NAME, DNS_PASSED, DNS_UDP_LIMIT, DnsAnswer, DnsAsker,
    DnsNameKey, names,
};

use super::{
    BpfRoot, DatapathError,
    counters::is_missing_key,
    mesh::{be_addr, open_hash, open_map},
};
use crate::dns::{Entry, Records};

/// DNS header, and the question's type and class after its name.
const HEADER: usize = 12;
const TYPE_CLASS: usize = 4;
/// One A record with a pointer to the question's name.
const RECORD: usize = 16;

/// A task's host-side veth on one network, as a DNS asker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asker {
    pub ifindex: u32,
    /// The task's address on that network.
    pub addr: Ipv4Addr,
    /// The network's gateway: the resolver the agent's server listens on.
    pub gateway: Ipv4Addr,
}

/// `name` (dotted, no trailing dot) in a view, as the program looks it up:
/// lowercase labels in wire format with the root label. None for what the
/// plain path does not answer (non-ASCII, empty or over-long labels) and
/// for names longer than the key holds.
pub fn name_key(view: u32, name: &str) -> Option<DnsNameKey> {
    let mut key = DnsNameKey {
        view,
        ..Default::default()
    };
    let mut at = 0;
    for label in name.split('.') {
        let bytes = label.as_bytes();
        if bytes.is_empty() || bytes.len() > 63 || !bytes.is_ascii() {
            return None;
        }
        let end = at + 1 + bytes.len();
        // The root label still has to fit after this one.
        if end + 1 > DNS_MAX_NAME {
            return None;
        }
        key.name[at] = bytes.len() as u8;
        for (slot, b) in key.name[at + 1..end].iter_mut().zip(bytes) {
            *slot = b.to_ascii_lowercase();
        }
        at = end;
    }
    key.len = (at + 1) as u32;
    Some(key)
}

/// The records the program writes for `entry` (a name of `wire_len` bytes
/// on the wire), when it is one the program answers.
pub fn answer_of(entry: &Entry, wire_len: usize) -> Option<DnsAnswer> {
    let addrs: &[Ipv4Addr] = match entry {
        Entry::Vip(vip) => std::slice::from_ref(vip),
        Entry::Tasks(tasks) => tasks,
    };
    if addrs.is_empty()
        || addrs.len() > DNS_MAX_ADDRS
        || HEADER + wire_len + TYPE_CLASS + addrs.len() * RECORD > DNS_UDP_LIMIT
    {
        return None;
    }
    let mut answer = DnsAnswer {
        turn: 0,
        ttl: entry.ttl().to_be(),
        count: addrs.len() as u32,
        addrs: [0; DNS_MAX_ADDRS],
    };
    for (slot, addr) in answer.addrs.iter_mut().zip(addrs) {
        *slot = be_addr(*addr);
    }
    Some(answer)
}

/// What the program did, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsCounts {
    /// Queries answered at the veth.
    pub answered: u64,
    /// Queries of known askers to their resolver left to the server.
    pub passed: u64,
}

/// The pinned DNS maps of one node and what this agent wrote to them.
pub struct DnsMaps {
    root: PathBuf,
    askers: BpfHashMap<MapData, u32, DnsAsker>,
    names: BpfHashMap<MapData, DnsNameKey, DnsAnswer>,
    stats: PerCpuArray<MapData, u64>,
    written_askers: HashMap<u32, DnsAsker>,
    written_names: HashMap<DnsNameKey, DnsAnswer>,
    /// Each list of networks an asker is on → its view.
    views: HashMap<Vec<String>, u32>,
    next_view: u32,
    /// The view of each of this node's task addresses (for [`Self::plugged`]).
    view_of: HashMap<Ipv4Addr, u32>,
}

impl DnsMaps {
    /// Opens the maps the object pinned (`mesh::ensure_maps` loads it).
    pub fn open(root: &BpfRoot) -> Result<Self, DatapathError> {
        let (askers, written_askers) = open_hash::<u32, DnsAsker>(root, names::DNS_ASKERS)?;
        let (names_map, written_names) =
            open_hash::<DnsNameKey, DnsAnswer>(root, names::DNS_NAMES)?;
        let stats = PerCpuArray::try_from(open_map(root, names::DNS_STATS)?).map_err(|source| {
            DatapathError::Map {
                path: root.map(names::DNS_STATS),
                source,
            }
        })?;
        // Views an earlier agent numbered are not known here: new ones
        // start past them, and the first sync removes theirs.
        let next_view = written_names
            .keys()
            .map(|k| k.view)
            .chain(written_askers.values().map(|a| a.view))
            .max()
            .map_or(0, |v| v + 1);
        Ok(Self {
            root: root.maps_dir(),
            askers,
            names: names_map,
            stats,
            written_askers,
            written_names,
            views: HashMap::new(),
            next_view,
            view_of: HashMap::new(),
        })
    }

    fn error(&self, source: aya::maps::MapError) -> DatapathError {
        DatapathError::Map {
            path: self.root.clone(),
            source,
        }
    }

    /// Makes the maps answer what `records` answer, for the veths in
    /// `askers` (those whose address is not one of this node's tasks in
    /// `records` are left out: the server would not answer them either).
    ///
    /// On failure the names of views numbered in this attempt are taken out
    /// again (the next attempt numbers them anew, and the map would fill
    /// with leftovers), and the caller clears the askers.
    pub fn sync(&mut self, records: &Records, askers: &[Asker]) -> Result<(), DatapathError> {
        let mut fresh = Vec::new();
        let result = self.try_sync(records, askers, &mut fresh);
        if result.is_err() && !fresh.is_empty() {
            let leftovers: Vec<DnsNameKey> = self
                .written_names
                .keys()
                .filter(|k| fresh.contains(&k.view))
                .copied()
                .collect();
            for key in leftovers {
                // Best effort: the error being returned says what failed.
                let _ = self.names.remove(&key);
                self.written_names.remove(&key);
            }
        }
        result
    }

    fn try_sync(
        &mut self,
        records: &Records,
        askers: &[Asker],
        fresh: &mut Vec<u32>,
    ) -> Result<(), DatapathError> {
        let mut views = HashMap::new();
        let mut view_of = HashMap::new();
        let mut names_wanted = HashMap::new();
        for addr in records.local_askers() {
            let Some(networks) = records.networks_of(addr) else {
                continue;
            };
            let view = match views.get(networks) {
                Some(view) => *view,
                None => {
                    let view = match self.views.get(networks) {
                        Some(view) => *view,
                        None => {
                            let view = self.next_view;
                            self.next_view = self.next_view.wrapping_add(1);
                            fresh.push(view);
                            view
                        }
                    };
                    views.insert(networks.to_vec(), view);
                    for (name, entry) in records.found_on(networks) {
                        if let Some(key) = name_key(view, name) {
                            // Held even when not answered here: a bare
                            // name missing from its view is NXDOMAIN.
                            let answer = answer_of(entry, key.len as usize).unwrap_or_default();
                            names_wanted.insert(key, answer);
                        }
                    }
                    view
                }
            };
            view_of.insert(addr, view);
        }
        let askers_wanted: HashMap<u32, DnsAsker> = askers
            .iter()
            .filter_map(|a| {
                Some((
                    a.ifindex,
                    DnsAsker {
                        addr: be_addr(a.addr),
                        gateway: be_addr(a.gateway),
                        view: *view_of.get(&a.addr)?,
                        _pad: 0,
                    },
                ))
            })
            .collect();
        // Names first (a changed answer replaces the old one whole), then
        // the askers that point at them; the gone go in the other order.
        for (key, answer) in &names_wanted {
            let same = self
                .written_names
                .get(key)
                .is_some_and(|held| held.same_records(answer));
            if !same {
                self.names
                    .insert(key, answer, 0)
                    .map_err(|e| self.error(e))?;
                self.written_names.insert(*key, *answer);
            }
        }
        for (ifindex, asker) in &askers_wanted {
            if self.written_askers.get(ifindex) != Some(asker) {
                self.askers
                    .insert(ifindex, asker, 0)
                    .map_err(|e| self.error(e))?;
                self.written_askers.insert(*ifindex, *asker);
            }
        }
        let gone: Vec<u32> = self
            .written_askers
            .keys()
            .filter(|k| !askers_wanted.contains_key(k))
            .copied()
            .collect();
        for ifindex in gone {
            self.remove_asker(ifindex)?;
        }
        let gone: Vec<DnsNameKey> = self
            .written_names
            .keys()
            .filter(|k| !names_wanted.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            match self.names.remove(&key) {
                Err(e) if !is_missing_key(&e) => return Err(self.error(e)),
                _ => {}
            }
            self.written_names.remove(&key);
        }
        self.views = views;
        self.view_of = view_of;
        Ok(())
    }

    fn remove_asker(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        match self.askers.remove(&ifindex) {
            Err(e) if !is_missing_key(&e) => return Err(self.error(e)),
            _ => {}
        }
        self.written_askers.remove(&ifindex);
        Ok(())
    }

    /// A veth plugged in since the last sync: answered at once if its
    /// address is one the last sync knew. Returns whether it is.
    pub fn plugged(&mut self, asker: Asker) -> Result<bool, DatapathError> {
        let Some(view) = self.view_of.get(&asker.addr).copied() else {
            return Ok(false);
        };
        let entry = DnsAsker {
            addr: be_addr(asker.addr),
            gateway: be_addr(asker.gateway),
            view,
            _pad: 0,
        };
        self.askers
            .insert(asker.ifindex, entry, 0)
            .map_err(|e| self.error(e))?;
        self.written_askers.insert(asker.ifindex, entry);
        Ok(true)
    }

    /// Sends every query to the server (when the maps could not be brought
    /// in line with its records), veths plugged later too until a sync
    /// succeeds: their views may lack names the server has.
    pub fn clear_askers(&mut self) -> Result<(), DatapathError> {
        self.view_of.clear();
        let all: Vec<u32> = self.askers.keys().filter_map(Result::ok).collect();
        for ifindex in all
            .into_iter()
            .chain(self.written_askers.keys().copied().collect::<Vec<_>>())
        {
            self.remove_asker(ifindex)?;
        }
        Ok(())
    }

    /// How many names the maps hold (all views, empty ones too), for logs
    /// and tests.
    pub fn names_held(&self) -> usize {
        self.written_names.len()
    }

    /// The program's counters, summed over CPUs.
    pub fn counts(&self) -> Result<DnsCounts, DatapathError> {
        counts_of(&self.stats).map_err(|e| self.error(e))
    }
}

fn counts_of(stats: &PerCpuArray<MapData, u64>) -> Result<DnsCounts, aya::maps::MapError> {
    let sum = |slot: u32| -> Result<u64, aya::maps::MapError> {
        let values = stats.get(&slot, 0)?;
        Ok(values.iter().fold(0u64, |a, b| a.wrapping_add(*b)))
    };
    Ok(DnsCounts {
        answered: sum(DNS_ANSWERED)?,
        passed: sum(DNS_PASSED)?,
    })
}

/// The counters pinned under `root`, read by another process (tests).
pub fn read_counts(root: &BpfRoot) -> Result<DnsCounts, DatapathError> {
    let error = |source| DatapathError::Map {
        path: root.map(names::DNS_STATS),
        source,
    };
    let stats = PerCpuArray::try_from(open_map(root, names::DNS_STATS)?).map_err(error)?;
    counts_of(&stats).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_encode_as_lowercase_wire_format() {
        let key = name_key(7, "Tasks.WEB").unwrap();
        assert_eq!(key.view, 7);
        assert_eq!(key.len, 11);
        assert_eq!(&key.name[..11], b"\x05tasks\x03web\x00");
        assert!(key.name[11..].iter().all(|b| *b == 0));
        // What the plain path would not answer, or the key cannot hold.
        assert!(name_key(0, "").is_none());
        assert!(name_key(0, "a..b").is_none());
        assert!(name_key(0, "caf\u{e9}").is_none());
        assert!(name_key(0, &"x".repeat(64)).is_none());
        let longest = ["a".repeat(63), "b".repeat(62)].join(".");
        assert_eq!(name_key(0, &longest).unwrap().len as usize, DNS_MAX_NAME);
        let one_more = ["a".repeat(63), "b".repeat(63)].join(".");
        assert!(name_key(0, &one_more).is_none());
    }

    #[test]
    fn answers_hold_what_fits_the_plain_path() {
        let vip = Entry::Vip(Ipv4Addr::new(198, 18, 1, 2));
        let a = answer_of(&vip, 5).unwrap();
        assert_eq!((a.count, u32::from_be(a.ttl)), (1, vip.ttl()));
        assert_eq!(a.addrs[0], u32::from_ne_bytes([198, 18, 1, 2]));
        let tasks = |n: u8| Entry::Tasks((0..n).map(|i| Ipv4Addr::new(198, 18, 2, i)).collect());
        let t = answer_of(&tasks(3), 11).unwrap();
        assert_eq!(t.count, 3);
        assert_eq!(t.addrs[2], u32::from_ne_bytes([198, 18, 2, 2]));
        assert_eq!(&t.addrs[3..], &[0; DNS_MAX_ADDRS - 3]);
        // Empty answers, too many addresses, past 512 bytes: the server's.
        assert!(answer_of(&tasks(0), 11).is_none());
        assert!(answer_of(&tasks(17), 11).is_none());
        assert!(answer_of(&tasks(16), 11).is_some());
        assert!(answer_of(&tasks(16), 240).is_some(), "512 bytes exactly");
        assert!(answer_of(&tasks(16), 241).is_none());
    }
}

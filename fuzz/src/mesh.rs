//! One simulated node's data plane for the eBPF fuzz target, and the
//! checks run after every packet:
//!
//! - the verdict is one a TC program may give (`TCX_NEXT`, `TC_ACT_OK`,
//!   `TC_ACT_SHOT`, `TC_ACT_REDIRECT`);
//! - a packet that is not for the mesh (not an IPv4 TCP/UDP packet it can
//!   read ports from; on the underlay, not for the node's address) and
//!   every packet through the counters passes untouched, with no
//!   connection tracked;
//! - every tracked connection leads to a backend the agent wrote, in a
//!   slot the agent gave out, and a confirmed one has its reply direction
//!   confirmed too;
//! - counters (per service, drops, per interface) only grow;
//! - on a device with a task source written, `vip_out` drops exactly the
//!   frames that claim another address (an IPv4 source, an ARP sender
//!   other than 0.0.0.0) and counts each as `spoofed-source`.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    sync::{Mutex, OnceLock},
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuHashMap};
use shoal_agent::datapath::{
    BpfRoot,
    guard::{GuardMaps, GuardTables},
    mesh::{MeshMaps, MeshService, VipService, be_addr},
    pick::PickPolicy,
    unattached::{RunResult, Unattached},
};
use shoal_agent_common::{
    ADDR_CLUSTER_NODE, ADDR_DNS, ADDR_LOCAL, CtEntry, CtKey, DROP_REASONS, DROP_SPOOFED_SOURCE,
    IfaceCounters, MODE_HOST, MODE_INGRESS, PortEntry, PortKey, ServiceStats, names,
};

pub const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const OTHER_NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
pub const INGRESS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 2);
/// The VIP network's gateway, where the node's DNS server answers.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 1);
/// Tasks on the ingress network: the first runs here.
pub const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 255, 0, 5),
    Ipv4Addr::new(10, 255, 0, 6),
    Ipv4Addr::new(10, 255, 0, 7),
];
pub const DRAINING: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 8);
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 2);
pub const VIP_BACKENDS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 9, 5), Ipv4Addr::new(10, 0, 9, 6)];
/// The source the agent writes for the test device when a packet is
/// judged (a VIP task's address).
pub const TASK_SOURCE: Ipv4Addr = VIP_BACKENDS[0];
/// The test device `BPF_PROG_TEST_RUN` runs TC programs on (loopback).
const TEST_DEVICE: u32 = 1;
pub const PUBLISHED_TCP: u16 = 8080;
pub const PUBLISHED_UDP: u16 = 5353;
pub const TARGET_PORT: u16 = 80;

/// `TCX_NEXT`, `TC_ACT_OK`, `TC_ACT_SHOT`, `TC_ACT_REDIRECT`.
const VERDICTS: [i32; 4] = [-1, 0, 2, 7];
/// Room for what a program adds (VXLAN, outer IPv4, UDP, Ethernet).
const HEADROOM: usize = 512;
/// What `BPF_PROG_TEST_RUN` takes: an Ethernet header, at most a page.
const FRAME_LEN: std::ops::RangeInclusive<usize> = 14..=1500;

pub struct Node {
    programs: Unattached,
    /// Addresses (network order) a forward entry may lead to.
    backends: HashSet<u32>,
    /// Service slots the agent gave out.
    slots: HashSet<u32>,
    /// Addresses (network order) forward entries are keyed by.
    fronts: HashSet<u32>,
    last: Mutex<Counters>,
    /// Handles of their own on the connection tables, to empty them.
    tables: Mutex<Vec<CtTable>>,
    /// A handle of its own on `TASK_SOURCES`, written around a judged packet.
    sources: Mutex<BpfHashMap<MapData, u32, u32>>,
}

type CtTable = BpfHashMap<MapData, CtKey, CtEntry>;

#[derive(Default, Clone, PartialEq, Eq, Debug)]
struct Counters {
    stats: HashMap<u32, ServiceStats>,
    drops: Vec<u64>,
    ifaces: HashMap<u32, IfaceCounters>,
}

impl Node {
    /// The node, set up once per process.
    pub fn get() -> &'static Node {
        static NODE_ONCE: OnceLock<Node> = OnceLock::new();
        NODE_ONCE
            .get_or_init(|| Node::set_up().unwrap_or_else(|e| panic!("setting the node up: {e}")))
    }

    fn set_up() -> Result<Node, Box<dyn std::error::Error>> {
        let root = BpfRoot::new(format!("/sys/fs/bpf/shoal-fuzz-{}", std::process::id()));
        let programs = Unattached::load(&root)?;
        let mut maps = MeshMaps::open(&root)?;
        let mut guard = GuardMaps::open(&root)?;
        let tables = [names::MESH_CT, names::MESH_SYN]
            .into_iter()
            .map(|name| -> Result<CtTable, Box<dyn std::error::Error>> {
                let data = MapData::from_pin(root.map(name))?;
                Ok(CtTable::try_from(Map::from_map_data(data)?)?)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let sources = BpfHashMap::try_from(Map::from_map_data(MapData::from_pin(
            root.map(names::TASK_SOURCES),
        )?)?)?;
        // The pins go at once: the loaded object holds the maps, and a
        // fuzzer killed mid-run leaves nothing behind in the kernel.
        let _ = std::fs::remove_dir_all(root.root());
        maps.update_config(|c| {
            c.node_addr = be_addr(NODE);
            c.ingress_addr = be_addr(INGRESS_ADDR);
            c.underlay_ifindex = 1;
            c.bridge_ifindex = 1;
            c.bridge_mac = [0x02, 0x42, 10, 255, 0, 2];
            c.mss = 1410;
            c.ingress_vni = 4096;
        })?;
        maps.set_tunnels(&BACKENDS[1..].iter().map(|b| (*b, OTHER_NODE)).collect())?;
        maps.set_local_tasks(&[(BACKENDS[0], 1)].into_iter().collect())?;
        let pick = PickPolicy::default();
        maps.sync(
            &[
                MeshService {
                    service_id: "web".into(),
                    proto: 6,
                    port: PUBLISHED_TCP,
                    mode: MODE_INGRESS,
                    backends: BACKENDS.iter().map(|b| (*b, TARGET_PORT)).collect(),
                    draining: vec![(DRAINING, TARGET_PORT)],
                    pick,
                },
                MeshService {
                    service_id: "dns".into(),
                    proto: 17,
                    port: PUBLISHED_UDP,
                    mode: MODE_HOST,
                    backends: vec![(BACKENDS[0], 53)],
                    draining: vec![],
                    pick,
                },
            ],
            &[VipService {
                key: "api@net".into(),
                vip: VIP,
                backends: VIP_BACKENDS.to_vec(),
                draining: vec![],
                pick,
            }],
        )?;
        drop(maps);
        // The node's own addresses, as the agent writes them (`ADDR_LOCAL`:
        // never a source from the wire, never a container's destination
        // but the gateway's DNS), and the other node.
        guard.sync(&GuardTables {
            addrs: [
                (NODE, ADDR_CLUSTER_NODE | ADDR_LOCAL),
                (INGRESS_ADDR, ADDR_LOCAL),
                (GATEWAY, ADDR_LOCAL | ADDR_DNS),
                (OTHER_NODE, ADDR_CLUSTER_NODE),
            ]
            .into_iter()
            .collect(),
            ..GuardTables::default()
        })?;
        drop(guard);
        let mut slots = HashSet::new();
        for entry in entries::<PortKey, PortEntry>(programs.ebpf().map(names::MESH_PORTS)) {
            slots.insert(entry.1.service);
        }
        for entry in entries::<u32, PortEntry>(programs.ebpf().map(names::MESH_VIPS)) {
            slots.insert(entry.1.service);
        }
        assert_eq!(
            slots.len(),
            3,
            "the agent gave {slots:?} for three services"
        );
        let backends = BACKENDS
            .iter()
            .chain(&VIP_BACKENDS)
            .chain([&DRAINING])
            .map(|a| be_addr(*a))
            .collect();
        let fronts = [NODE, VIP].iter().map(|a| be_addr(*a)).collect();
        let node = Node {
            programs,
            backends,
            slots,
            fronts,
            last: Mutex::default(),
            tables: Mutex::new(tables),
            sources: Mutex::new(sources),
        };
        let counters = node.counters();
        *node.last.lock().unwrap_or_else(|e| e.into_inner()) = counters;
        Ok(node)
    }

    /// Empties the connection tables (and affinity), so that each input
    /// starts from the same state.
    pub fn forget_connections(&self) {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        for table in tables.iter_mut() {
            let keys: Vec<CtKey> = table.keys().filter_map(Result::ok).collect();
            for key in keys {
                let _ = table.remove(&key);
            }
        }
    }

    /// Runs one frame through `program` (`judged`: with a task source
    /// written for the test device) and checks everything above.
    pub fn run_and_check(&self, program: &'static str, frame: &[u8], judged: bool) {
        if !FRAME_LEN.contains(&frame.len()) {
            return;
        }
        let before = self.connections();
        let spoofed_before = self.counters().drops[DROP_SPOOFED_SOURCE as usize];
        let mut out = vec![0u8; frame.len() + HEADROOM];
        let ran = {
            let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
            if judged {
                sources
                    .insert(TEST_DEVICE, be_addr(TASK_SOURCE), 0)
                    .unwrap_or_else(|e| panic!("writing TASK_SOURCES: {e}"));
            }
            let ran = self.programs.run(program, frame, &mut out);
            if judged {
                sources
                    .remove(&TEST_DEVICE)
                    .unwrap_or_else(|e| panic!("removing from TASK_SOURCES: {e}"));
            }
            ran
        };
        let RunResult { verdict, len } = match ran {
            Ok(result) => result,
            // The kernel builds no skb from an IPv4 (or IPv6) frame too
            // short for its header: no program ran.
            Err(error) if refused_frame(&error) => return,
            Err(error) => panic!("{program}: BPF_PROG_TEST_RUN failed: {error:?}"),
        };
        assert!(VERDICTS.contains(&verdict), "{program}: verdict {verdict}");
        let after = self.connections();
        let spoofed = judged && program == names::VIP_OUT && claims_another(frame, TASK_SOURCE);
        let spoofed_count = self.counters().drops[DROP_SPOOFED_SOURCE as usize] - spoofed_before;
        assert_eq!(
            spoofed_count,
            u64::from(spoofed),
            "{program}: spoofed-source counted {spoofed_count} for a frame that {} another address",
            if spoofed { "claims" } else { "claims no" }
        );
        if spoofed {
            assert_eq!(
                verdict, 2,
                "{program}: a spoofed frame got verdict {verdict}"
            );
            assert_eq!(before, after, "{program}: a spoofed frame was tracked");
        } else if !for_the_mesh(program, frame) {
            assert_eq!(
                verdict, -1,
                "{program}: a packet not for the mesh got verdict {verdict}"
            );
            assert_eq!(
                &out[..len],
                frame,
                "{program}: a packet not for the mesh was changed"
            );
            assert_eq!(
                before, after,
                "{program}: a packet not for the mesh was tracked"
            );
        }
        self.check_connections(program, &after);
        self.check_counters(program);
    }

    fn check_connections(&self, program: &str, tables: &Tables) {
        for (table, confirmed) in [(&tables.confirmed, true), (&tables.new, false)] {
            for (key, entry) in table {
                if !self.fronts.contains(&key.daddr) {
                    continue; // a reply direction
                }
                assert!(
                    self.backends.contains(&entry.addr),
                    "{program}: {key:?} leads to {entry:?}, no backend"
                );
                assert!(
                    self.slots.contains(&entry.service),
                    "{program}: {key:?} is in slot {}, not given out",
                    entry.service
                );
                let reply = CtKey {
                    saddr: entry.addr,
                    daddr: key.saddr,
                    sport: entry.port,
                    dport: entry.nat_port,
                    proto: key.proto,
                    _pad: [0; 3],
                };
                if confirmed {
                    assert!(
                        tables.confirmed.contains_key(&reply),
                        "{program}: confirmed {key:?} has no confirmed reply {reply:?}"
                    );
                }
            }
        }
    }

    fn check_counters(&self, program: &str) {
        let now = self.counters();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, stats) in &now.stats {
            let was = last.stats.get(slot).copied().unwrap_or_default();
            assert!(
                stats.connections >= was.connections
                    && stats.packets >= was.packets
                    && stats.bytes >= was.bytes
                    && stats.drops >= was.drops,
                "{program}: slot {slot}'s counters went from {was:?} to {stats:?}"
            );
        }
        for (i, (now_drops, was)) in now.drops.iter().zip(&last.drops).enumerate() {
            assert!(
                now_drops >= was,
                "{program}: drops[{i}] went from {was} to {now_drops}"
            );
        }
        for (ifindex, count) in &now.ifaces {
            let was = last.ifaces.get(ifindex).copied().unwrap_or_default();
            assert!(
                count.rx_packets >= was.rx_packets
                    && count.rx_bytes >= was.rx_bytes
                    && count.tx_packets >= was.tx_packets
                    && count.tx_bytes >= was.tx_bytes,
                "{program}: interface {ifindex}'s counters went from {was:?} to {count:?}"
            );
        }
        *last = now;
    }

    fn map(&self, name: &str) -> &Map {
        self.programs
            .ebpf()
            .map(name)
            .unwrap_or_else(|| panic!("the object has no map {name}"))
    }

    fn connections(&self) -> Tables {
        Tables {
            confirmed: entries(Some(self.map(names::MESH_CT))).collect(),
            new: entries(Some(self.map(names::MESH_SYN))).collect(),
        }
    }

    fn counters(&self) -> Counters {
        let stats = PerCpuArray::<&MapData, ServiceStats>::try_from(self.map(names::MESH_STATS))
            .unwrap_or_else(|e| panic!("MESH_STATS: {e}"));
        let drops = PerCpuArray::<&MapData, u64>::try_from(self.map(names::DROPS))
            .unwrap_or_else(|e| panic!("DROPS: {e}"));
        let ifaces = PerCpuHashMap::<&MapData, u32, IfaceCounters>::try_from(
            self.map(names::IFACE_COUNTERS),
        )
        .unwrap_or_else(|e| panic!("IFACE_COUNTERS: {e}"));
        Counters {
            stats: self
                .slots
                .iter()
                .map(|slot| {
                    let mut total = ServiceStats::default();
                    for cpu in stats
                        .get(slot, 0)
                        .unwrap_or_else(|e| panic!("MESH_STATS[{slot}]: {e}"))
                        .iter()
                    {
                        total.add(cpu);
                    }
                    (*slot, total)
                })
                .collect(),
            drops: (0..DROP_REASONS)
                .map(|i| {
                    drops
                        .get(&i, 0)
                        .unwrap_or_else(|e| panic!("DROPS[{i}]: {e}"))
                        .iter()
                        .fold(0u64, |sum, v| sum.wrapping_add(*v))
                })
                .collect(),
            ifaces: ifaces
                .iter()
                .filter_map(Result::ok)
                .map(|(ifindex, cpus)| {
                    let mut total = IfaceCounters::default();
                    for cpu in cpus.iter() {
                        total.add(cpu);
                    }
                    (ifindex, total)
                })
                .collect(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Tables {
    confirmed: HashMap<CtKey, CtEntry>,
    new: HashMap<CtKey, CtEntry>,
}

/// Whether `frame` is one a task holding `source` (and its MAC) may not
/// send: from another MAC; IPv4 from another source; ARP from another
/// sender (MAC, or address but 0.0.0.0); anything else (IPv6, a VLAN tag,
/// other EtherTypes); a frame too short to say.
pub fn claims_another(frame: &[u8], source: Ipv4Addr) -> bool {
    let (own, probe) = (source.octets(), [0u8; 4]);
    let mac = shoal_agent::network::mac_of(source);
    if frame.get(6..12) != Some(&mac[..]) {
        return true;
    }
    match frame.get(12..14) {
        Some([0x08, 0x00]) => frame.get(26..30) != Some(&own[..]),
        Some([0x08, 0x06]) => {
            frame.get(22..28) != Some(&mac[..])
                || frame.get(28..32).is_none_or(|s| s != own && s != probe)
        }
        _ => true,
    }
}

/// EINVAL from `BPF_PROG_TEST_RUN` itself: the frame, not the program.
fn refused_frame(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // EINVAL
            return io.kind() == std::io::ErrorKind::InvalidInput;
        }
        source = e.source();
    }
    false
}

/// Whether `program` may act on `frame` at all: the mesh reads IPv4
/// TCP/UDP packets without options or fragments whose ports are there;
/// on the underlay, only those for the node's own address. The counters
/// never act.
pub fn for_the_mesh(program: &str, frame: &[u8]) -> bool {
    if program == names::COUNT_INGRESS || program == names::COUNT_EGRESS {
        return false;
    }
    const IP: usize = 14;
    let readable = frame.len() >= IP + 24
        && frame[12..14] == [0x08, 0x00]
        && frame[IP] == 0x45
        && u16::from_be_bytes([frame[IP + 6], frame[IP + 7]]) & 0x3fff == 0
        && matches!(frame[IP + 9], 6 | 17);
    if !readable {
        return false;
    }
    program != names::MESH_INGRESS || frame[IP + 16..IP + 20] == NODE.octets()
}

fn entries<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(
    map: Option<&Map>,
) -> impl Iterator<Item = (K, V)> + '_ {
    let map = map.expect("a map of the object");
    BpfHashMap::<&MapData, K, V>::try_from(map)
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .filter_map(Result::ok)
        .collect::<Vec<_>>()
        .into_iter()
}

//! What an agent tells Prometheus (`/metrics`, served by [`endpoint`]):
//! the routing mesh's counters per published port and per VIP, read from
//! the eBPF maps at each scrape; packets the data plane's guards dropped,
//! by reason; DNS answers by response code; task starts and failures this
//! agent reported; and how many entries the mesh's maps hold.
//!
//! Everything read from the kernel or the DNS server goes into a registry
//! made for that scrape (a port unpublished since leaves no series).

pub mod endpoint;

use std::sync::{Arc, LazyLock};

use prometheus_client::{
    encoding::{EncodeLabelSet, text},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use shoal_agent_common::ServiceStats;
use shoal_api::pb::TaskState;

use crate::{datapath::BpfRoot, dns::DnsServer, network::Overlay};

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Task reports by state, for the process's life. A static rather than a
/// value handed down: reports are made deep inside the session loop, and
/// one process is one agent.
static TASK_REPORTS: LazyLock<Family<StateLabel, Counter>> = LazyLock::new(Family::default);
/// Reports of a task running (it started).
static TASK_STARTS: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Reports of a task failed or rejected.
static TASK_FAILURES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Entries of ended connections the sweeper removed from the mesh's
/// connection tables (`datapath::sweep`).
static CONNECTIONS_REMOVED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Counts entries of ended connections removed from the mesh's tables.
pub fn connections_removed(entries: u64) {
    CONNECTIONS_REMOVED.inc_by(entries);
}

/// Counts a task status this agent reported to the cluster.
pub fn task_reported(state: TaskState) {
    TASK_REPORTS
        .get_or_create(&StateLabel {
            state: state.word(),
        })
        .inc();
    match state {
        TaskState::Running => {
            TASK_STARTS.inc();
        }
        TaskState::Failed | TaskState::Rejected => {
            TASK_FAILURES.inc();
        }
        _ => {}
    }
}

/// What a scrape reads from.
#[derive(Clone)]
pub struct Sources {
    pub overlay: Arc<Overlay>,
    pub dns: Arc<DnsServer>,
    /// Where the data plane is pinned (its drop counters).
    pub bpf: BpfRoot,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    service: String,
    port: String,
    protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VipLabels {
    service: String,
    network: String,
}

/// One label of a name chosen per family (`map`, `reason`, `rcode`).
type OneLabel = Vec<(&'static str, String)>;

/// A mesh slot's key as labels: `SERVICE:PORT/PROTO` is a published port,
/// `SERVICE/NETWORK` a VIP.
enum Slot {
    Port(PortLabels),
    Vip(VipLabels),
}

fn slot(key: &str) -> Option<Slot> {
    if let Some((service, rest)) = key.split_once(':') {
        let (port, proto) = rest.split_once('/')?;
        let protocol = match proto {
            "6" => "tcp".to_owned(),
            "17" => "udp".to_owned(),
            other => other.to_owned(),
        };
        return Some(Slot::Port(PortLabels {
            service: service.to_owned(),
            port: port.to_owned(),
            protocol,
        }));
    }
    let (service, network) = key.split_once('/')?;
    Some(Slot::Vip(VipLabels {
        service: service.to_owned(),
        network: network.to_owned(),
    }))
}

/// Per-slot totals as three counter families per kind of slot.
struct Traffic<L> {
    connections: Family<L, Counter>,
    packets: Family<L, Counter>,
    bytes: Family<L, Counter>,
    drops: Family<L, Counter>,
}

impl<L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static>
    Traffic<L>
{
    fn new() -> Self {
        Self {
            connections: Family::default(),
            packets: Family::default(),
            bytes: Family::default(),
            drops: Family::default(),
        }
    }

    fn add(&self, labels: &L, stats: &ServiceStats) {
        self.connections
            .get_or_create(labels)
            .inc_by(stats.connections);
        self.packets.get_or_create(labels).inc_by(stats.packets);
        self.bytes.get_or_create(labels).inc_by(stats.bytes);
        self.drops.get_or_create(labels).inc_by(stats.drops);
    }

    fn register(self, registry: &mut Registry, prefix: &str, what: &str) {
        registry.register(
            format!("{prefix}_connections"),
            format!("Connections the routing mesh balanced {what}"),
            self.connections,
        );
        registry.register(
            format!("{prefix}_packets"),
            format!("Packets of connections balanced {what}"),
            self.packets,
        );
        registry.register(
            format!("{prefix}_bytes"),
            format!("Bytes of connections balanced {what}"),
            self.bytes,
        );
        registry.register(
            format!("{prefix}_drops"),
            format!("Packets dropped {what} (clients its allow-lists do not admit)"),
            self.drops,
        );
    }
}

/// What the mesh's maps said at one scrape.
#[derive(Default)]
pub struct MeshReading {
    /// Totals per slot key (see [`slot`]).
    pub slots: Vec<(String, ServiceStats)>,
    /// Entries per map.
    pub occupancy: Vec<(&'static str, usize)>,
}

/// Everything one scrape reads, gathered before encoding (and testable
/// without a kernel).
#[derive(Default)]
pub struct Reading {
    pub mesh: MeshReading,
    /// Drops by reason; None if the guards are not attached (yet).
    pub drops: Option<Vec<(&'static str, u64)>>,
    pub dns_answers: Vec<(&'static str, u64)>,
    pub dns_refused: u64,
    pub dns_shed: u64,
    /// What the veths' DNS program answered and left to the server;
    /// None before the first push set its maps up.
    pub dns_ebpf: Option<crate::datapath::dns::DnsCounts>,
}

impl Sources {
    /// Reads the maps and counters now.
    pub fn read(&self) -> Reading {
        let mesh = self
            .overlay
            .read_mesh(|maps| MeshReading {
                slots: maps.slot_stats(),
                occupancy: maps.occupancy().to_vec(),
            })
            .unwrap_or_default();
        let drops = match crate::datapath::guard::drops(&self.bpf) {
            Ok(drops) => Some(drops),
            Err(error) => {
                tracing::debug!(%error, "reading the data plane's drop counters");
                None
            }
        };
        let stats = self.dns.stats();
        Reading {
            mesh,
            drops,
            dns_answers: self.dns.answers_by_code(),
            dns_refused: stats.refused,
            dns_shed: stats.shed,
            dns_ebpf: self.overlay.dns_counts(),
        }
    }
}

fn labelled(pairs: Vec<(&'static str, String)>) -> OneLabel {
    pairs
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

/// The text exposition of `reading` and the task counters (OpenMetrics).
pub fn render(reading: &Reading) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    let ports = Traffic::<PortLabels>::new();
    let vips = Traffic::<VipLabels>::new();
    for (key, stats) in &reading.mesh.slots {
        match slot(key) {
            Some(Slot::Port(labels)) => ports.add(&labels, stats),
            Some(Slot::Vip(labels)) => vips.add(&labels, stats),
            None => tracing::debug!(key, "a mesh slot key of no known shape"),
        }
    }
    ports.register(
        &mut registry,
        "shoal_mesh",
        "to a published port entering this node",
    );
    vips.register(
        &mut registry,
        "shoal_vip",
        "to a service VIP from this node's tasks",
    );
    let occupancy: Family<OneLabel, Gauge> = Family::default();
    for (map, entries) in &reading.mesh.occupancy {
        occupancy
            .get_or_create(&labelled(vec![("map", (*map).to_owned())]))
            .set(*entries as i64);
    }
    registry.register(
        "shoal_datapath_map_entries",
        "Entries in each of the routing mesh's eBPF maps",
        occupancy,
    );
    if let Some(drops) = &reading.drops {
        let family: Family<OneLabel, Counter> = Family::default();
        for (reason, n) in drops {
            family
                .get_or_create(&labelled(vec![("reason", (*reason).to_owned())]))
                .inc_by(*n);
        }
        registry.register(
            "shoal_datapath_drops",
            "Packets the data plane's guards dropped, by reason",
            family,
        );
    }
    let answers: Family<OneLabel, Counter> = Family::default();
    for (code, n) in &reading.dns_answers {
        answers
            .get_or_create(&labelled(vec![("rcode", (*code).to_owned())]))
            .inc_by(*n);
    }
    registry.register(
        "shoal_dns_answers",
        "Answers this node's DNS server sent, by response code",
        answers,
    );
    counter(
        &mut registry,
        "shoal_dns_refused",
        "DNS datagrams left unanswered: not from this node's tasks",
        reading.dns_refused,
    );
    counter(
        &mut registry,
        "shoal_dns_shed",
        "DNS queries for upstream answered SERVFAIL: too many in flight",
        reading.dns_shed,
    );
    if let Some(ebpf) = &reading.dns_ebpf {
        counter(
            &mut registry,
            "shoal_dns_ebpf_answers",
            "DNS queries answered in eBPF at the tasks' veths (never reaching the server)",
            ebpf.answered,
        );
        counter(
            &mut registry,
            "shoal_dns_ebpf_passed",
            "DNS queries of this node's tasks the veths' program left to the server",
            ebpf.passed,
        );
    }
    registry.register(
        "shoal_mesh_closed_entries_removed",
        "Connection-table entries of ended TCP connections (both FINs, or a reset) removed after their linger",
        CONNECTIONS_REMOVED.clone(),
    );
    registry.register(
        "shoal_task_starts",
        "Tasks this agent reported running",
        TASK_STARTS.clone(),
    );
    registry.register(
        "shoal_task_failures",
        "Tasks this agent reported failed or rejected",
        TASK_FAILURES.clone(),
    );
    registry.register(
        "shoal_task_reports",
        "Task states this agent reported to the cluster",
        TASK_REPORTS.clone(),
    );
    let mut out = String::new();
    text::encode_registry(&mut out, &registry)?;
    text::encode_eof(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests;

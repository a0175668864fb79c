//! The allocator: gives networks their VXLAN ids and subnets, services their
//! VIPs and new tasks their addresses, on the leader. A task leaves NEW for
//! PENDING (and so reaches the scheduler) only once it holds an address on
//! every network it needs.

pub mod ipam;
pub mod pools;

use std::{sync::Arc, time::Duration};

use shoal_api::pb::{
    Endpoint, NetworkAttachment, Service, ServiceSpec, Task, TaskState, TaskStatus, VirtualIp,
};

use crate::{
    manager::{Manager, WriteError},
    store::{Batch, State},
};
pub use ipam::{AllocError, Ipam, LazyIpam};

/// The networks a service's tasks attach to, with their aliases: `ingress`
/// first when the service publishes a port (in host mode too: the task
/// needs an address the node can hand connections to), then the ones its
/// spec names.
pub fn service_networks(state: &State, spec: &ServiceSpec) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let publishes = spec.endpoint.as_ref().is_some_and(|e| !e.ports.is_empty());
    if publishes
        && let Some((id, _)) = state
            .networks
            .iter()
            .find(|(_, n)| n.spec.as_ref().is_some_and(|s| s.ingress))
    {
        out.push((id.clone(), Vec::new()));
    }
    for attachment in spec.task.iter().flat_map(|t| &t.networks) {
        if !out.iter().any(|(id, _)| *id == attachment.target) {
            out.push((attachment.target.clone(), attachment.aliases.clone()));
        }
    }
    out
}

/// The service's VIPs (endpoint mode vip): kept on networks it still uses,
/// new ones on networks it joins; none in dnsrr mode.
pub fn service_endpoint(
    state: &State,
    ipam: &mut LazyIpam,
    spec: &ServiceSpec,
    current: Option<&Endpoint>,
) -> Result<Endpoint, AllocError> {
    let mode = spec
        .endpoint
        .as_ref()
        .map(|e| e.mode.as_str())
        .unwrap_or("vip");
    if mode == "dnsrr" {
        return Ok(Endpoint::default());
    }
    let mut virtual_ips = Vec::new();
    let ingress = ingress_network(state);
    for (network_id, _) in service_networks(state, spec) {
        // The routing mesh answers on the nodes' addresses: a VIP on the
        // ingress network would only use up its addresses (one per
        // published service, as Swarm spends them).
        if Some(network_id.as_str()) == ingress {
            continue;
        }
        let kept = current
            .into_iter()
            .flat_map(|e| &e.virtual_ips)
            .find(|v| v.network_id == network_id)
            .cloned();
        let vip = match kept {
            Some(vip) => vip,
            None => VirtualIp {
                addr: ipam.get().address(&network_id)?,
                network_id,
            },
        };
        virtual_ips.push(vip);
    }
    Ok(Endpoint { virtual_ips })
}

/// The ingress network's id, if the cluster has one.
pub fn ingress_network(state: &State) -> Option<&str> {
    state
        .networks
        .iter()
        .find(|(_, n)| n.spec.as_ref().is_some_and(|s| s.ingress))
        .map(|(id, _)| id.as_str())
}

/// Addresses for every NEW task that is meant to run (such a task then
/// moves to PENDING; one that cannot get one stays NEW with the reason),
/// and for every node its own address on the ingress network.
pub fn allocate_tasks(state: &State) -> Batch {
    let mut batch = Batch::default();
    let mut ipam = LazyIpam::new(state);
    if let Some(ingress) = ingress_network(state) {
        let mut without = state.nodes.values().filter(|n| n.ingress_addr.is_empty());
        for node in without.by_ref() {
            match ipam.get().address(ingress) {
                Ok(addr) => batch.put_node(shoal_api::pb::Node {
                    ingress_addr: addr,
                    ..node.clone()
                }),
                Err(error) => {
                    // A full ingress subnet is full for the next node too:
                    // trying each of them (and saying so) on every write
                    // was most of a 1,000-node leader's work once the /24
                    // default ran out.
                    warn_no_ingress_address(&error, 1 + without.count());
                    break;
                }
            }
        }
    }
    // Only tasks not yet on a node can be New: a scan of every task per
    // write was O(tasks) on the leader's write path.
    for task in state.tasks_waiting() {
        if batch.is_full() {
            break;
        }
        let observed = task.status.as_ref().map(|s| s.state()).unwrap_or_default();
        if observed != TaskState::New || task.desired_state() > TaskState::Running {
            continue;
        }
        let Some(service) = state.services.get(&task.service_id) else {
            continue;
        };
        match attachments(state, &mut ipam, service) {
            Ok(networks) => batch.put_task(Task {
                networks,
                status: Some(TaskStatus {
                    timestamp: shoal_api::now_ms(),
                    state: TaskState::Pending as i32,
                    message: "pending task scheduling".into(),
                    ..Default::default()
                }),
                ..task.clone()
            }),
            Err(error) => {
                let err = format!("allocating: {error}");
                if task.status.as_ref().is_some_and(|s| s.err == err) {
                    continue;
                }
                let mut task = task.clone();
                let status = task.status.get_or_insert_with(Default::default);
                status.err = err;
                status.timestamp = shoal_api::now_ms();
                batch.put_task(task);
            }
        }
    }
    batch
}

/// Says that nodes got no ingress address, at most once a minute (the
/// allocator runs on every write).
fn warn_no_ingress_address(error: &AllocError, nodes: usize) {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST_MS: AtomicI64 = AtomicI64::new(0);
    let now = shoal_api::now_ms();
    let last = LAST_MS.load(Ordering::Relaxed);
    if now - last >= 60_000
        && LAST_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(%error, nodes, "no ingress address for these nodes (said at most once a minute)");
    }
}

fn attachments(
    state: &State,
    ipam: &mut LazyIpam,
    service: &Service,
) -> Result<Vec<NetworkAttachment>, AllocError> {
    let Some(spec) = service.spec.as_ref() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (network_id, aliases) in service_networks(state, spec) {
        let addr = ipam.get().address(&network_id)?;
        out.push(NetworkAttachment {
            network_id,
            addresses: vec![addr],
            aliases,
        });
    }
    Ok(out)
}

/// Allocates for new tasks until leadership is lost (the caller aborts it,
/// and starts it only once this leader has applied the whole log: the
/// addresses it reads as taken are then all that are).
pub async fn run(manager: Arc<Manager>) {
    let mut applied = manager.store.applied();
    loop {
        let written = manager
            .update(|state| Ok::<_, WriteError>(Some((allocate_tasks(state), ()))))
            .await;
        if let Err(error) = written {
            tracing::warn!(%error, "allocator write failed");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}

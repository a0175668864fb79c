//! A fingerprint, per node, of everything its assignment set is cut from,
//! taken in the shared scan: a stream whose node's fingerprint did not move
//! since the set it last computed has nothing new to send (but a changed
//! node list, which travels apart), so it neither rebuilds, clones nor
//! compares that set. Without it every change made each of a thousand
//! streams rebuild and compare its whole set: O(tasks) per change.
//!
//! What a set holds (see [`super::assignment_set_from`]): the node's live
//! tasks (their id and the version at which they last changed in anything
//! but their status: the node reports that status, it is not sent back;
//! see [`crate::store::State::assignment_version`]), the secrets and configs they name (id and version), the node
//! itself (role, ingress address and allow-list), the networks its tasks
//! use plus the ingress network while a port is published (the network
//! object's version and the content of every endpoint and name record on
//! it), and what every set shares (published ports, load-balancing
//! policies, the roots, the ingress network's id). A 64-bit SipHash of
//! these: two different inputs share a fingerprint with odds of 2^-64.

use std::{
    collections::{BTreeSet, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
};

use prost::Message;
use shoal_api::pb::{LbPolicy, PublishedPort};

use crate::store::State;

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// An order-free fingerprint of `items` (each hashed by its encoding, so a
/// field added to the message later counts too): maps iterate in orders
/// that may differ between two scans of equal content.
pub fn of_messages<'a, M: Message + 'a>(items: impl IntoIterator<Item = &'a M>) -> u64 {
    let mut buf = Vec::new();
    let mut sum = 0u64;
    let mut count = 0u64;
    for item in items {
        buf.clear();
        // A Vec grows as needed: encoding into it cannot fail.
        if item.encode(&mut buf).is_ok() {
            sum = sum.wrapping_add(hash_of(&buf));
        }
        count += 1;
    }
    hash_of((sum, count))
}

/// What every node's set shares.
pub fn global(
    published: &[PublishedPort],
    lb_policies: &std::collections::BTreeMap<String, LbPolicy>,
    trust_pem: &str,
    root_issuer: &str,
    ingress: Option<&str>,
) -> u64 {
    hash_of((
        of_messages(published),
        lb_policies,
        trust_pem,
        root_issuer,
        ingress,
    ))
}

fn version(meta: Option<&shoal_api::pb::Meta>) -> u64 {
    meta.map(|m| m.version).unwrap_or(0)
}

/// Node `node_id`'s fingerprint: `networks` is each network's endpoint
/// and record fingerprint, `global` what every set shares, `ingress` the
/// ingress network when a port is published (every node then has it).
pub fn of_node(
    state: &State,
    node_id: &str,
    node: &shoal_api::pb::Node,
    networks: &HashMap<String, u64>,
    global: u64,
    ingress: Option<&str>,
) -> u64 {
    let mut tasks = 0u64;
    let mut count = 0usize;
    let mut secrets = BTreeSet::new();
    let mut configs = BTreeSet::new();
    let mut nets: BTreeSet<&str> = BTreeSet::new();
    for task in state
        .tasks_on_node(node_id)
        .filter(|t| super::shared::live(t))
    {
        count += 1;
        tasks = tasks.wrapping_add(hash_of((
            task.meta.as_ref().map(|m| m.id.as_str()),
            state.assignment_version(task),
        )));
        if let Some(c) = task.spec.as_ref().and_then(|s| s.container.as_ref()) {
            let secret = |id: &str| version(state.secrets.get(id).and_then(|s| s.meta.as_ref()));
            let config = |id: &str| version(state.configs.get(id).and_then(|c| c.meta.as_ref()));
            secrets.extend(
                c.secrets
                    .iter()
                    .map(|r| (r.secret_id.as_str(), secret(&r.secret_id))),
            );
            configs.extend(
                c.configs
                    .iter()
                    .map(|r| (r.config_id.as_str(), config(&r.config_id))),
            );
        }
        nets.extend(task.networks.iter().map(|n| n.network_id.as_str()));
    }
    nets.extend(ingress);
    let nets: Vec<(&str, u64, u64)> = nets
        .into_iter()
        .map(|id| {
            let object = version(state.networks.get(id).and_then(|n| n.meta.as_ref()));
            (id, object, networks.get(id).copied().unwrap_or(0))
        })
        .collect();
    hash_of((
        global,
        version(node.meta.as_ref()),
        (tasks, count),
        secrets,
        configs,
        nets,
    ))
}

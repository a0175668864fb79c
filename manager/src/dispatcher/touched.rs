//! What the writes since the last shared scan touched, from the store's
//! change events: the nodes whose fingerprint must be taken again, whether
//! the network index (endpoints, name records, published ports, policies)
//! or the node list must be rebuilt, or everything (a write no event names
//! well enough: a deleted task, a secret, a config, a network, the cluster
//! object, a reset of the whole state, or events missed).
//!
//! The events may lag the state a scan reads (they are sent after the
//! write lock is released): a change a scan already saw is then redone at
//! the next one, which costs a fingerprint but never misses one.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
};

use shoal_api::pb::{Kind, Service, object::Object as O};
use tokio::sync::{
    broadcast::{self, error::TryRecvError},
    watch,
};

use super::networks::NetworkIndex;
use crate::store::{Change, State, Store, StoreEvent};

#[derive(Debug, Default, PartialEq)]
pub struct Touched {
    pub everything: bool,
    pub networks: bool,
    pub node_list: bool,
    pub nodes: BTreeSet<String>,
}

/// Whether a service's writes can move the network index: it publishes
/// ports, names a load-balancing policy, joins networks or holds VIPs.
fn on_networks(service: &Service) -> bool {
    let spec = service.spec.as_ref();
    service.endpoint.is_some()
        || spec.is_some_and(|s| {
            s.endpoint.is_some() || s.task.as_ref().is_some_and(|t| !t.networks.is_empty())
        })
}

pub struct Tracker {
    events: broadcast::Receiver<Arc<StoreEvent>>,
    resets: watch::Receiver<u64>,
    /// Services [`on_networks`] when last seen: a write that takes a
    /// service off its networks moves the index too.
    network_services: HashSet<String>,
    touched: Touched,
}

impl Tracker {
    /// Follows `store` from `state`, read under its read lock (so no write
    /// lands between the read and the subscription).
    pub fn new(store: &Store, state: &State) -> Self {
        let mut resets = store.resets();
        resets.mark_unchanged();
        Self {
            events: store.subscribe(),
            resets,
            network_services: state
                .services
                .iter()
                .filter(|(_, s)| on_networks(s))
                .map(|(id, _)| id.clone())
                .collect(),
            touched: Touched::default(),
        }
    }

    /// What the events received so far touched; `networks` is the index
    /// the last scan holds (a node's address is in its endpoints).
    pub fn take(&mut self, state: &State, networks: &NetworkIndex) -> Touched {
        if self.resets.has_changed().unwrap_or(true) {
            self.resets.mark_unchanged();
            self.touched.everything = true;
        }
        loop {
            match self.events.try_recv() {
                Ok(event) => self.note(&event, networks),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "dispatcher fell behind the change events");
                    self.touched.everything = true;
                }
                Err(TryRecvError::Closed) => {
                    self.touched.everything = true;
                    break;
                }
            }
        }
        if self.touched.everything {
            // The whole scan to come knows every service as it is.
            self.network_services = state
                .services
                .iter()
                .filter(|(_, s)| on_networks(s))
                .map(|(id, _)| id.clone())
                .collect();
        }
        std::mem::take(&mut self.touched)
    }

    fn note(&mut self, event: &StoreEvent, networks: &NetworkIndex) {
        let touched = &mut self.touched;
        for change in &event.changes {
            match change {
                Change::Put(object) => match object.object.as_ref() {
                    Some(O::Task(task)) => {
                        if !task.node_id.is_empty() {
                            touched.nodes.insert(task.node_id.clone());
                        }
                        if !task.networks.is_empty() {
                            touched.networks = true;
                        }
                    }
                    Some(O::Node(node)) => {
                        touched
                            .nodes
                            .extend(node.meta.as_ref().map(|m| m.id.clone()));
                        touched.node_list = true;
                        // Its addresses are in its tasks' endpoints and on
                        // the ingress network.
                        if !networks.is_empty() {
                            touched.networks = true;
                        }
                    }
                    Some(O::Service(service)) => {
                        let id = service.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
                        let now = on_networks(service);
                        let before = if now {
                            !self.network_services.insert(id.to_owned())
                        } else {
                            self.network_services.remove(id)
                        };
                        if now || before {
                            touched.networks = true;
                        }
                    }
                    // Secrets and configs are few and seldom written;
                    // networks and the cluster object reach every set.
                    Some(O::Secret(_) | O::Config(_) | O::Network(_) | O::Cluster(_)) | None => {
                        touched.everything = true
                    }
                },
                Change::Delete(r) => match r.kind() {
                    Kind::Service => {
                        if self.network_services.remove(&r.id) {
                            touched.networks = true;
                        }
                    }
                    Kind::Node => {
                        touched.nodes.insert(r.id.clone());
                        touched.node_list = true;
                        touched.networks |= !networks.is_empty();
                    }
                    // Whose node a deleted task was on is gone with it.
                    _ => touched.everything = true,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dispatcher::shared::Shared, store::Batch};
    use shoal_api::pb::{
        ContainerSpec, Meta, Node, NodeStatus, Secret, SecretReference, SecretSpec, Task, TaskSpec,
        TaskState, TaskStatus,
    };

    fn meta(id: &str) -> Option<Meta> {
        Some(Meta {
            id: id.into(),
            ..Default::default()
        })
    }

    fn task(id: &str, service: &str, node: &str, secret: Option<&str>) -> Task {
        Task {
            meta: meta(id),
            service_id: service.into(),
            node_id: node.into(),
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    secrets: secret
                        .map(|s| SecretReference {
                            secret_id: s.into(),
                            ..Default::default()
                        })
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: TaskState::Running as i32,
                ..Default::default()
            }),
            desired_state: TaskState::Running as i32,
            ..Default::default()
        }
    }

    /// Applies `batch` at `index` and sends its event, as the state
    /// machine does.
    async fn write(store: &Store, index: u64, batch: Batch) {
        let changes = store
            .write()
            .await
            .apply(index, &batch.into_proto())
            .expect("no conflict");
        store.publish(StoreEvent { index, changes });
    }

    fn digests(shared: &Shared, nodes: &[&str]) -> Vec<Option<u64>> {
        nodes.iter().map(|n| shared.digest_of(n)).collect()
    }

    #[tokio::test]
    async fn a_change_to_one_service_touches_only_the_nodes_of_its_tasks() {
        let nodes = ["n1", "n2", "n3"];
        let store = Store::new();
        let mut batch = Batch::default();
        for (i, id) in nodes.iter().enumerate() {
            batch.put_node(Node {
                meta: meta(id),
                status: Some(NodeStatus {
                    addr: format!("192.0.2.{}", i + 10),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        batch.put_secret(Secret {
            meta: meta("s"),
            spec: Some(SecretSpec {
                name: "s".into(),
                data: b"1".to_vec(),
                ..Default::default()
            }),
        });
        batch.put_task(task("a1", "a", "n1", None));
        batch.put_task(task("b1", "b", "n2", Some("s")));
        batch.put_task(task("b2", "b", "n3", None));
        write(&store, 1, batch).await;
        let (mut tracker, prev) = {
            let state = store.read().await;
            (Tracker::new(&store, &state), Shared::of(&state, 1))
        };

        // Service a scaled by one: its new task lands on n2.
        let mut batch = Batch::default();
        batch.put_task(task("a2", "a", "n2", None));
        write(&store, 2, batch).await;
        let state = store.read().await;
        let touched = tracker.take(&state, &prev.networks);
        assert_eq!(
            touched,
            Touched {
                nodes: BTreeSet::from(["n2".to_owned()]),
                ..Touched::default()
            }
        );
        let next = Shared::next(&prev, &state, 2, &touched);
        let (before, after) = (digests(&prev, &nodes), digests(&next, &nodes));
        assert_eq!(
            (before[0], before[2]),
            (after[0], after[2]),
            "n1, n3 untouched"
        );
        assert_ne!(before[1], after[1], "n2 holds the new task");
        assert_eq!(
            after,
            digests(&Shared::of(&state, 2), &nodes),
            "as a whole scan finds them"
        );
        drop(state);

        // A new version of the secret b1 uses reaches every node's
        // fingerprint again (a whole scan): n2 moves, the others do not.
        let mut batch = Batch::default();
        let secret = store.read().await.secrets["s"].clone();
        batch.put_secret(Secret {
            spec: Some(SecretSpec {
                name: "s".into(),
                data: b"2".to_vec(),
                ..Default::default()
            }),
            ..secret
        });
        write(&store, 3, batch).await;
        let state = store.read().await;
        let touched = tracker.take(&state, &next.networks);
        assert!(touched.everything);
        let last = Shared::next(&next, &state, 3, &touched);
        let (before, after) = (digests(&next, &nodes), digests(&last, &nodes));
        assert_eq!((before[0], before[2]), (after[0], after[2]));
        assert_ne!(before[1], after[1]);
        // Nothing written since: nothing touched.
        assert_eq!(tracker.take(&state, &last.networks), Touched::default());
    }

    #[tokio::test]
    async fn a_reset_of_the_state_touches_everything() {
        let store = Store::new();
        let mut tracker = Tracker::new(&store, &State::default());
        store.publish_reset(7);
        let state = store.read().await;
        assert!(tracker.take(&state, &NetworkIndex::default()).everything);
        assert!(!tracker.take(&state, &NetworkIndex::default()).everything);
    }
}

//! One node's assignment stream, deciding whether a change needs its set
//! rebuilt: only when the fingerprint of what the set is cut from moved
//! (see [`super::digest`]), or something outside the store changed it (log
//! requests, a stop held for the other nodes' acknowledgements). A change
//! on node A then costs node B's stream one lookup, and at most a node list
//! delta, instead of rebuilding, cloning and comparing B's whole set.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use shoal_api::{
    assignments::Sender,
    node_list::NodeList,
    pb::{AssignmentSet, Meta},
};

use super::shared::Shared;

pub struct NodeStream {
    sender: Sender,
    /// The fingerprint the last computed set was cut at; None when the
    /// set must be computed next time whatever the store holds (none yet,
    /// or it held a stop that depends on other nodes and the clock).
    digest: Option<u64>,
    /// When the set was last rebuilt.
    rebuilt_at: Instant,
}

/// A set is rebuilt at the first change after this long even when its
/// fingerprint did not move: a defence in depth, so that an input the
/// fingerprint might fail to cover (a field added to the set later, a
/// 2^-64 collision) delays a push by a minute at most instead of for good.
/// At a thousand nodes that is about 17 rebuilds a second under constant
/// change, against a thousand per change without fingerprints.
const REBUILD_AT_LEAST_EVERY: Duration = Duration::from_secs(60);

/// `set` as its node is told it: each task without its status and with
/// only its id of the store's metadata. The status is the node's own
/// report and the metadata moves with it: sent back, every report would
/// push its task to its node once more. (The fingerprint ignores them too:
/// [`crate::store::State::assignment_version`].)
pub fn as_told_to_node(mut set: AssignmentSet) -> AssignmentSet {
    for task in &mut set.tasks {
        task.status = None;
        if let Some(meta) = &mut task.meta {
            *meta = Meta {
                id: std::mem::take(&mut meta.id),
                ..Default::default()
            };
        }
    }
    set
}

impl NodeStream {
    pub fn new(deltas: bool) -> Self {
        Self {
            sender: Sender::new(deltas),
            digest: None,
            rebuilt_at: Instant::now(),
        }
    }

    /// Whether node `node_id`'s set must be rebuilt at `shared`: what it is
    /// cut from moved since the last one, or `forced` (a cause outside the
    /// store, such as a log request).
    pub fn must_compute(&self, shared: &Shared, node_id: &str, forced: bool) -> bool {
        forced
            || self.digest.is_none()
            || self.digest != shared.digest_of(node_id)
            || self.rebuilt_at.elapsed() >= REBUILD_AT_LEAST_EVERY
    }

    /// The message for `set`, rebuilt at a scan whose fingerprint for this
    /// node is `digest`; `holds` when the set held a stop back (it may
    /// change with no change to the store).
    pub fn computed(
        &mut self,
        set: AssignmentSet,
        nodes: &Arc<NodeList>,
        digest: Option<u64>,
        holds: bool,
    ) -> Option<AssignmentSet> {
        self.digest = if holds { None } else { digest };
        self.rebuilt_at = Instant::now();
        self.sender.next_shared(as_told_to_node(set), nodes)
    }

    /// The message when the set did not change: a node list delta, if the
    /// list moved.
    pub fn unchanged(&mut self, nodes: &Arc<NodeList>, version: u64) -> Option<AssignmentSet> {
        self.sender.next_nodes(nodes, version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::State;
    use shoal_api::{
        assignments::{Receiver, normalize},
        pb::{
            ContainerSpec, Meta, Network, NetworkAttachment, Node, NodeStatus, Secret,
            SecretReference, SecretSpec, Task, TaskSpec, TaskState, TaskStatus,
        },
    };

    fn meta(id: &str, version: u64) -> Option<Meta> {
        Some(Meta {
            id: id.into(),
            version,
            ..Default::default()
        })
    }

    fn task(id: &str, node: &str, version: u64, secret: Option<&str>, net: Option<&str>) -> Task {
        Task {
            meta: meta(id, version),
            service_id: format!("svc-{id}"),
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
            networks: net
                .map(|n| NetworkAttachment {
                    network_id: n.into(),
                    addresses: vec![format!("10.0.0.{}/24", version % 250 + 2)],
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            status: Some(TaskStatus {
                state: TaskState::Running as i32,
                ..Default::default()
            }),
            desired_state: TaskState::Running as i32,
            ..Default::default()
        }
    }

    fn secret(id: &str, version: u64, data: &[u8]) -> Secret {
        Secret {
            meta: meta(id, version),
            spec: Some(SecretSpec {
                name: id.into(),
                data: data.to_vec(),
                ..Default::default()
            }),
        }
    }

    fn state() -> State {
        let mut state = State::default();
        for (i, id) in ["a", "b"].iter().enumerate() {
            state.nodes.insert(
                (*id).into(),
                Node {
                    meta: meta(id, 1),
                    status: Some(NodeStatus {
                        addr: format!("192.0.2.{}", i + 10),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
        }
        state.networks.insert(
            "net1".into(),
            Network {
                meta: meta("net1", 1),
                ..Default::default()
            },
        );
        state.secrets.insert("s1".into(), secret("s1", 1, b"one"));
        for t in [
            task("ta", "a", 2, None, None),
            task("tb", "b", 2, Some("s1"), Some("net1")),
        ] {
            state.tasks.insert(task_id(&t), t);
        }
        state
    }

    fn task_id(t: &Task) -> String {
        t.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default()
    }

    /// One stream per node, each with the agent's receiver.
    struct Streams {
        streams: Vec<(&'static str, NodeStream, Receiver)>,
        nodes: Arc<NodeList>,
        index: u64,
    }

    impl Streams {
        fn new() -> Self {
            Self {
                streams: ["a", "b"]
                    .into_iter()
                    .map(|n| (n, NodeStream::new(true), Receiver::default()))
                    .collect(),
                nodes: Arc::default(),
                index: 0,
            }
        }

        /// Runs every stream at `state`; the nodes whose set was rebuilt and
        /// those that were sent something.
        fn push(&mut self, state: &State) -> (Vec<&'static str>, Vec<&'static str>) {
            self.index += 1;
            let shared = Shared::after(state, self.index, &self.nodes);
            self.nodes = shared.nodes.clone();
            let (mut rebuilt, mut sent) = (Vec::new(), Vec::new());
            for (node, stream, receiver) in &mut self.streams {
                let message = if stream.must_compute(&shared, node, false) {
                    rebuilt.push(*node);
                    let set = super::super::assignment_set_from(state, &shared, node);
                    stream.computed(set, &shared.nodes, shared.digest_of(node), false)
                } else {
                    stream.unchanged(&shared.nodes, self.index)
                };
                if let Some(message) = message {
                    sent.push(*node);
                    let got = receiver.take(message).expect("in order").clone();
                    let mut want =
                        as_told_to_node(super::super::assignment_set_from(state, &shared, node));
                    want.nodes = shared.nodes.nodes.clone();
                    normalize(&mut want);
                    let mut got = got;
                    got.version = 0;
                    want.version = 0;
                    assert_eq!(got, want, "{node}: the messages add up to its set");
                }
            }
            (rebuilt, sent)
        }
    }

    #[test]
    fn a_change_on_one_node_costs_the_others_nothing_but_what_they_use_reaches_them() {
        let mut state = state();
        let mut streams = Streams::new();
        assert_eq!(streams.push(&state), (vec!["a", "b"], vec!["a", "b"]));
        assert_eq!(
            streams.push(&state),
            (vec![], vec![]),
            "nothing changed: no set is rebuilt"
        );

        // A's task changes: B's stream does no work at all.
        let mut changed = task("ta", "a", 5, None, None);
        changed.spec_version = 2;
        state.tasks.insert("ta".into(), changed);
        assert_eq!(streams.push(&state), (vec!["a"], vec!["a"]));

        // The secret B's task uses changes: B rebuilds and is sent it; A,
        // which does not use it, does nothing.
        state.secrets.insert("s1".into(), secret("s1", 6, b"two"));
        assert_eq!(streams.push(&state), (vec!["b"], vec!["b"]));

        // A task of A's joins the network B uses: B learns its endpoint.
        state
            .tasks
            .insert("ta2".into(), task("ta2", "a", 7, None, Some("net1")));
        assert_eq!(streams.push(&state), (vec!["a", "b"], vec!["a", "b"]));

        // A new node joins: the node list moves for everyone, as a delta,
        // with no set rebuilt but the new node's own.
        state.nodes.insert(
            "c".into(),
            Node {
                meta: meta("c", 8),
                status: Some(NodeStatus {
                    addr: "192.0.2.30".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        assert_eq!(streams.push(&state), (vec![], vec!["a", "b"]));
    }

    fn put(state: &mut State, task: Task) {
        state.put(shoal_api::pb::Object {
            object: Some(shoal_api::pb::object::Object::Task(task)),
        });
    }

    #[test]
    fn a_status_report_is_not_sent_back_to_its_node() {
        let mut state = State::default();
        state.nodes = self::state().nodes;
        put(&mut state, task("ta", "a", 2, None, None));
        let mut streams = Streams::new();
        assert_eq!(streams.push(&state), (vec!["a", "b"], vec!["a", "b"]));

        // Node A reports its task: a new store version, the same
        // assignment. Nothing is rebuilt, nothing is sent back.
        let mut reported = task("ta", "a", 3, None, None);
        reported.status = Some(TaskStatus {
            state: TaskState::Running as i32,
            message: "started".into(),
            container_id: "c1".into(),
            ..Default::default()
        });
        put(&mut state, reported.clone());
        assert_eq!(streams.push(&state), (vec![], vec![]));

        // What the manager decides reaches it.
        let mut stop = reported;
        stop.meta = meta("ta", 4);
        stop.desired_state = TaskState::Shutdown as i32;
        put(&mut state, stop);
        assert_eq!(streams.push(&state), (vec!["a"], vec!["a"]));

        // A task that ends leaves the set (its status took it out).
        let mut ended = task("ta", "a", 5, None, None);
        ended.desired_state = TaskState::Shutdown as i32;
        ended.status = Some(TaskStatus {
            state: TaskState::Shutdown as i32,
            ..Default::default()
        });
        put(&mut state, ended);
        assert_eq!(streams.push(&state), (vec!["a"], vec!["a"]));
    }
}

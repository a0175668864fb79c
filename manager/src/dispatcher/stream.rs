//! One node's assignment stream, deciding whether a change needs its set
//! rebuilt: only when the fingerprint of what the set is cut from moved
//! (see [`super::digest`]), or something outside the store changed it (log
//! requests, a stop held for the other nodes' acknowledgements). A change
//! on node A then costs node B's stream one lookup, and at most a node list
//! delta, instead of rebuilding, cloning and comparing B's whole set.
//!
//! A rebuilt set's tasks cost what changed, not what the node runs: the
//! stream keeps the assignment version (see
//! [`crate::store::State::assignment_version`]) of each task it told the
//! node about, and copies and sends only the tasks whose version moved,
//! and the ids of those gone. While a thousand nodes fill up with a hundred
//! tasks each, a push carries one or two new tasks; copying and comparing
//! all hundred every time was most of the leader's work.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use shoal_api::{
    assignments::Sender,
    node_list::NodeList,
    pb::{AssignmentSet, Meta, Task},
};

use super::{
    Uses,
    shared::{Shared, task_id},
};
use crate::store::{
    State,
    task_index::{LiveOnNode, may_hold_stop},
};

/// What [`NodeStream::rebuilt`] gives: the message to send, if any, and
/// when a stop held back goes out anyway (Unix ms), if one is held.
pub struct Rebuilt {
    pub message: Option<AssignmentSet>,
    pub held: Option<i64>,
}

pub struct NodeStream {
    sender: Sender,
    /// The fingerprint the last computed set was cut at; None when the
    /// set must be computed next time whatever the store holds (none yet,
    /// or it held a stop that depends on other nodes and the clock).
    digest: Option<u64>,
    /// When the set was last rebuilt whole.
    rebuilt_at: Instant,
    /// The tasks of the set last sent, by id, each at the assignment
    /// version it was told at; None when that set is not the store's tasks
    /// as they were (none sent yet, or stops held back in it): the next
    /// set is then built whole.
    told: Option<HashMap<String, u64>>,
}

/// A set is rebuilt whole at the first change after this long even when its
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
        strip_for_node(task);
    }
    set
}

/// A task as its node is told it (see [`as_told_to_node`]).
fn told_copy(task: &Task) -> Task {
    let mut copy = task.clone();
    strip_for_node(&mut copy);
    copy
}

fn strip_for_node(task: &mut Task) {
    task.status = None;
    if let Some(meta) = &mut task.meta {
        *meta = Meta {
            id: std::mem::take(&mut meta.id),
            ..Default::default()
        };
    }
}

impl NodeStream {
    pub fn new(deltas: bool) -> Self {
        Self {
            sender: Sender::new(deltas),
            digest: None,
            rebuilt_at: Instant::now(),
            told: None,
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

    /// Node `node_id`'s set rebuilt at `state` (store index `index`, cut
    /// from `shared`), with its `log_requests`: the message for it, and
    /// when a stop `hold` held back goes out anyway. `hold` rewrites a set
    /// whose tasks include a stop to hold (see [`super::drain`]); such a
    /// set is built whole.
    pub fn rebuilt(
        &mut self,
        state: &State,
        shared: &Shared,
        node_id: &str,
        index: u64,
        log_requests: Vec<shoal_api::pb::LogRequest>,
        hold: impl FnOnce(&mut AssignmentSet) -> Option<i64>,
    ) -> Rebuilt {
        let digest = shared.digest_of(node_id);
        let around = |uses: &Uses| {
            let mut set = super::set_around(state, shared, node_id, uses);
            set.log_requests = log_requests;
            set.version = index;
            set
        };
        // The store's sums name the tasks and what they use: no task is
        // looked at but those that changed.
        let empty = LiveOnNode::default();
        if let Some(live) = state.live_on_node(node_id).map(|l| l.unwrap_or(&empty))
            && live.holding == 0
        {
            let versions = live.tasks.iter().map(|(id, v)| (id.as_str(), *v)).collect();
            let set = around(&Uses::of_live(live));
            let message = self.computed_from(
                set,
                versions,
                |id| state.tasks.get(id),
                &shared.nodes,
                digest,
            );
            return Rebuilt {
                message,
                held: None,
            };
        }
        // A stop to hold, or an index that does not hold every task (some
        // tests): the node's tasks walked.
        let tasks = shared.tasks_of(state, node_id);
        let mut set = around(&Uses::of_tasks(&tasks));
        if tasks.iter().any(|t| may_hold_stop(t)) {
            set.tasks = tasks.into_iter().cloned().collect();
            let held = hold(&mut set);
            let message = self.computed(set, &shared.nodes, digest, true);
            return Rebuilt { message, held };
        }
        let versions = tasks
            .iter()
            .map(|t| (task_id(t), state.assignment_version(t)))
            .collect();
        let by_id: HashMap<&str, &Task> = tasks.iter().map(|t| (task_id(t), *t)).collect();
        let message = self.computed_from(
            set,
            versions,
            |id| by_id.get(id).copied(),
            &shared.nodes,
            digest,
        );
        Rebuilt {
            message,
            held: None,
        }
    }

    /// The message for `set`, rebuilt whole at a scan whose fingerprint
    /// for this node is `digest`; `holds` when the set held a stop back (it
    /// may change with no change to the store).
    fn computed(
        &mut self,
        set: AssignmentSet,
        nodes: &Arc<NodeList>,
        digest: Option<u64>,
        holds: bool,
    ) -> Option<AssignmentSet> {
        self.digest = if holds { None } else { digest };
        self.rebuilt_at = Instant::now();
        self.told = None;
        self.sender.next_shared(as_told_to_node(set), nodes)
    }

    /// The message for the set of `around` (every list but the tasks, see
    /// [`super::set_around`]) and the tasks `versions` names (the node's
    /// live tasks, by id, each at its assignment version; none holding a
    /// stop), each found by `task`, at a scan whose fingerprint for this
    /// node is `digest`: only the tasks whose version moved since the last
    /// set are looked up, copied and sent.
    fn computed_from<'a>(
        &mut self,
        mut around: AssignmentSet,
        versions: Vec<(&'a str, u64)>,
        task: impl Fn(&str) -> Option<&'a Task>,
        nodes: &Arc<NodeList>,
        digest: Option<u64>,
    ) -> Option<AssignmentSet> {
        self.digest = digest;
        let whole = self.rebuilt_at.elapsed() >= REBUILD_AT_LEAST_EVERY;
        let told = match self.told.as_mut() {
            Some(told) if !whole => told,
            _ => {
                // Whole: copied, and compared with the last set.
                self.rebuilt_at = Instant::now();
                let found: Vec<_> = versions
                    .into_iter()
                    .filter_map(|(id, v)| Some((id, v, task(id)?)))
                    .collect();
                around.tasks = found.iter().map(|(_, _, t)| told_copy(t)).collect();
                self.told = Some(
                    found
                        .into_iter()
                        .map(|(id, v, _)| (id.to_owned(), v))
                        .collect(),
                );
                return self.sender.next_shared(around, nodes);
            }
        };
        let mut changed = Vec::new();
        for &(id, version) in &versions {
            if told.get(id) != Some(&version)
                && let Some(t) = task(id)
            {
                changed.push(told_copy(t));
                told.insert(id.to_owned(), version);
            }
        }
        let mut removed = Vec::new();
        if told.len() > versions.len() {
            let live: HashSet<&str> = versions.iter().map(|(id, _)| *id).collect();
            told.retain(|id, _| {
                let keep = live.contains(id.as_str());
                if !keep {
                    removed.push(id.clone());
                }
                keep
            });
            removed.sort();
        }
        self.sender
            .next_with_task_changes(around, changed, removed, nodes)
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
        /// Per message sent: its node, whether it was a delta, and how
        /// many tasks it carried.
        tasks_sent: Vec<(&'static str, bool, usize)>,
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
                tasks_sent: Vec::new(),
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
                    // As the dispatcher does; no node is synced, so a held
                    // stop stays held (`drain`'s own tests cover the rest).
                    let synced = std::collections::HashMap::new();
                    let index = self.index;
                    stream
                        .rebuilt(state, &shared, node, index, Vec::new(), |set| {
                            super::super::drain::hold_stops(set, state, &synced, 0)
                        })
                        .message
                } else {
                    stream.unchanged(&shared.nodes, self.index)
                };
                if let Some(message) = message {
                    sent.push(*node);
                    self.tasks_sent
                        .push((*node, message.delta, message.tasks.len()));
                    let got = receiver.take(message).expect("in order").clone();
                    let mut whole = super::super::assignment_set_from(state, &shared, node);
                    super::super::drain::hold_stops(
                        &mut whole,
                        state,
                        &std::collections::HashMap::new(),
                        0,
                    );
                    let mut want = as_told_to_node(whole);
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

    use crate::test_rng::Rng;

    #[test]
    fn a_push_carries_only_the_tasks_that_changed() {
        let mut state = State::default();
        state.nodes = self::state().nodes;
        state.networks = self::state().networks;
        let ids: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
        let all: Vec<Task> = ids.iter().map(|id| task(id, "a", 0, None, None)).collect();
        state.apply_tasks(2, all, &[] as &[&str]);
        let mut streams = Streams::new();
        streams.push(&state);
        assert_eq!(
            streams.tasks_sent,
            [("a", false, 5), ("b", false, 0)],
            "first, each node's whole set"
        );

        // One new task, one changed, one gone: a's delta carries two
        // tasks (the removal is an id); b has nothing to do.
        streams.tasks_sent.clear();
        let mut changed = task("t1", "a", 0, None, Some("net1"));
        changed.spec_version = 2;
        state.apply_tasks(3, vec![task("t9", "a", 0, None, None), changed], &["t3"]);
        assert_eq!(streams.push(&state), (vec!["a"], vec!["a"]));
        assert_eq!(streams.tasks_sent, [("a", true, 2)]);
    }

    /// Generated histories of two nodes' tasks (new, changed, reported,
    /// stopped, ended, moved, deleted, some holding a stop): after every
    /// step each node's messages add up to its set rebuilt whole (`push`
    /// checks it), whichever way its stream built them.
    #[test]
    fn pushes_built_from_what_changed_add_up_to_the_set_rebuilt_whole() {
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut state = State::default();
            let base = self::state();
            state.nodes = base.nodes;
            state.networks = base.networks;
            state.secrets = base.secrets;
            let mut streams = Streams::new();
            for step in 0..80u64 {
                let index = step + 2;
                let id = format!("t{}", rng.below(10));
                let node = ["a", "b"][rng.below(2) as usize];
                let held = state.tasks.get(&id).cloned();
                let mut put = Vec::new();
                let mut delete = Vec::new();
                match (rng.below(7), held) {
                    (0 | 1, _) | (_, None) => {
                        let secret = (rng.below(3) == 0).then_some("s1");
                        let net = (rng.below(3) == 0).then_some("net1");
                        let mut t = task(&id, node, 0, secret, net);
                        t.spec_version = rng.below(3);
                        put.push(t);
                    }
                    (2, Some(mut t)) => {
                        // A report: the status moves, the assignment not.
                        let status = t.status.get_or_insert_with(Default::default);
                        status.message = format!("report {step}");
                        put.push(t);
                    }
                    (3, Some(mut t)) => {
                        t.desired_state = TaskState::Shutdown as i32;
                        put.push(t);
                    }
                    (4, Some(mut t)) => {
                        t.status = Some(TaskStatus {
                            state: TaskState::Shutdown as i32,
                            ..Default::default()
                        });
                        put.push(t);
                    }
                    (5, Some(mut t)) => {
                        t.node_id = node.into();
                        t.spec_version += 1;
                        put.push(t);
                    }
                    (_, Some(_)) => delete.push(id),
                }
                state.apply_tasks(index, put, &delete);
                streams.push(&state);
            }
        }
    }
}

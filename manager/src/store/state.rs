//! The cluster's objects in memory and the one function that changes them.
//! `apply` is deterministic: every manager applies the same batches in the
//! same order and ends with the same objects and versions.

use std::collections::BTreeMap;

use super::{service_index::ServiceIndex, task_index::TaskIndex};

use shoal_api::pb::{
    Cluster, Config, Kind, Meta, Network, Node, Object, ObjectRef, Secret, Service, StoreBatch,
    Task, object, store_action,
};

/// Every object of the cluster, by kind and id.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<String, Service>,
    /// Written through [`State::put`] and [`State::delete`] (as every
    /// write outside tests is), which keep `task_index` with it.
    pub tasks: BTreeMap<String, Task>,
    pub networks: BTreeMap<String, Network>,
    pub secrets: BTreeMap<String, Secret>,
    pub configs: BTreeMap<String, Config>,
    pub cluster: Option<Cluster>,
    /// Task ids by service and by node: a pass over one service's or one
    /// node's tasks need not scan every task (O(tasks) per write at
    /// 100,000 tasks was most of the leader's work).
    pub(crate) task_index: TaskIndex,
    /// Service names and the tasks services ask for: a create need not scan
    /// every service.
    pub(crate) service_index: ServiceIndex,
}

/// Equal objects make equal states: the index follows from the tasks.
impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        self.nodes == other.nodes
            && self.services == other.services
            && self.tasks == other.tasks
            && self.networks == other.networks
            && self.secrets == other.secrets
            && self.configs == other.configs
            && self.cluster == other.cluster
    }
}

/// A batch that was not applied because an object changed since the writer
/// read it. Nothing of the batch is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} {id} changed since it was read (expected version {expected}, found {found})")]
pub struct Conflict {
    pub kind: Kind,
    pub id: String,
    pub expected: u64,
    pub found: u64,
}

/// One applied change, as the watch stream reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Put(Box<Object>),
    Delete(ObjectRef),
}

impl State {
    /// Applies `batch` as the write at log `index`: all of it, or (on a
    /// version conflict) none of it.
    pub fn apply(&mut self, index: u64, batch: &StoreBatch) -> Result<Vec<Change>, Conflict> {
        for action in &batch.actions {
            let (kind, id) = match &action.action {
                Some(store_action::Action::Put(object)) => match object_key(object) {
                    Some(key) => key,
                    None => continue,
                },
                Some(store_action::Action::Delete(r)) => (r.kind(), r.id.clone()),
                None => continue,
            };
            let found = self.version_of(kind, &id);
            if found != action.expected_version {
                return Err(Conflict {
                    kind,
                    id,
                    expected: action.expected_version,
                    found,
                });
            }
        }
        let mut changes = Vec::with_capacity(batch.actions.len());
        for action in &batch.actions {
            match &action.action {
                Some(store_action::Action::Put(object)) => {
                    let mut object = object.clone();
                    if let Some(meta) = meta_mut(&mut object) {
                        meta.version = index;
                    }
                    self.put(object.clone());
                    changes.push(Change::Put(Box::new(object)));
                }
                Some(store_action::Action::Delete(r)) => {
                    self.delete(r.kind(), &r.id);
                    changes.push(Change::Delete(r.clone()));
                }
                None => {}
            }
        }
        Ok(changes)
    }

    /// The stored version of an object; 0 when there is none.
    pub fn version_of(&self, kind: Kind, id: &str) -> u64 {
        fn v(meta: &Option<Meta>) -> u64 {
            meta.as_ref().map(|m| m.version).unwrap_or(0)
        }
        match kind {
            Kind::Node => self.nodes.get(id).map(|o| v(&o.meta)),
            Kind::Service => self.services.get(id).map(|o| v(&o.meta)),
            Kind::Task => self.tasks.get(id).map(|o| v(&o.meta)),
            Kind::Network => self.networks.get(id).map(|o| v(&o.meta)),
            Kind::Secret => self.secrets.get(id).map(|o| v(&o.meta)),
            Kind::Config => self.configs.get(id).map(|o| v(&o.meta)),
            Kind::Cluster => self
                .cluster
                .as_ref()
                .filter(|c| c.meta.as_ref().is_some_and(|m| m.id == id))
                .map(|o| v(&o.meta)),
        }
        .unwrap_or(0)
    }

    /// Stores `object` as it is (its version included).
    pub fn put(&mut self, object: Object) {
        let Some(inner) = object.object else { return };
        match inner {
            object::Object::Node(o) => {
                insert(&mut self.nodes, o.meta.as_ref().map(|m| m.id.clone()), o)
            }
            object::Object::Service(o) => {
                let Some(id) = o.meta.as_ref().map(|m| m.id.clone()) else {
                    return;
                };
                self.service_index.insert(&o);
                if let Some(old) = self.services.insert(id, o) {
                    self.service_index.remove(&old);
                }
            }
            object::Object::Task(o) => {
                let Some(id) = o.meta.as_ref().map(|m| m.id.clone()) else {
                    return;
                };
                self.task_index.insert(&id, &o, self.tasks.get(&id));
                if let Some(old) = self.tasks.insert(id.clone(), o) {
                    self.task_index.forget_old(&id, &old, &self.tasks[&id]);
                }
            }
            object::Object::Network(o) => {
                insert(&mut self.networks, o.meta.as_ref().map(|m| m.id.clone()), o)
            }
            object::Object::Secret(o) => {
                insert(&mut self.secrets, o.meta.as_ref().map(|m| m.id.clone()), o)
            }
            object::Object::Config(o) => {
                insert(&mut self.configs, o.meta.as_ref().map(|m| m.id.clone()), o)
            }
            object::Object::Cluster(o) => self.cluster = Some(o),
        }
    }

    pub fn delete(&mut self, kind: Kind, id: &str) {
        match kind {
            Kind::Node => drop(self.nodes.remove(id)),
            Kind::Service => {
                if let Some(old) = self.services.remove(id) {
                    self.service_index.remove(&old);
                }
            }
            Kind::Task => {
                if let Some(old) = self.tasks.remove(id) {
                    self.task_index.remove(id, &old);
                }
            }
            Kind::Network => drop(self.networks.remove(id)),
            Kind::Secret => drop(self.secrets.remove(id)),
            Kind::Config => drop(self.configs.remove(id)),
            Kind::Cluster => self.cluster = None,
        }
    }

    /// Every object, for snapshots.
    pub fn objects(&self) -> impl Iterator<Item = Object> + '_ {
        use object::Object as O;
        let wrap = |o: O| Object { object: Some(o) };
        self.nodes
            .values()
            .cloned()
            .map(O::Node)
            .chain(self.services.values().cloned().map(O::Service))
            .chain(self.tasks.values().cloned().map(O::Task))
            .chain(self.networks.values().cloned().map(O::Network))
            .chain(self.secrets.values().cloned().map(O::Secret))
            .chain(self.configs.values().cloned().map(O::Config))
            .chain(self.cluster.iter().cloned().map(O::Cluster))
            .map(wrap)
    }

    /// The tasks of one service, by id.
    pub fn tasks_of_service<'a>(
        &'a self,
        service_id: &'a str,
    ) -> Box<dyn Iterator<Item = &'a Task> + 'a> {
        self.indexed(self.task_index.of_service(service_id), move |t| {
            t.service_id == service_id
        })
    }

    /// The tasks assigned to one node (any state), by id.
    pub fn tasks_on_node<'a>(
        &'a self,
        node_id: &'a str,
    ) -> Box<dyn Iterator<Item = &'a Task> + 'a> {
        self.indexed(self.task_index.on_node(node_id), move |t| {
            t.node_id == node_id
        })
    }

    /// The store version at which `task` last changed in anything its
    /// node is told (not its status, which the node itself reports).
    pub fn assignment_version(&self, task: &Task) -> u64 {
        let id = task
            .meta
            .as_ref()
            .map(|m| m.id.as_str())
            .unwrap_or_default();
        self.task_index
            .assignment_version(id)
            .unwrap_or_else(|| task.meta.as_ref().map(|m| m.version).unwrap_or(0))
    }

    /// Node `node_id`'s live tasks summed up (see
    /// [`super::task_index::LiveOnNode`]): `Some(None)` when it has none,
    /// None when the index does not hold every task (a test that inserted
    /// into `tasks` directly: the caller walks the tasks instead).
    pub fn live_on_node(&self, node_id: &str) -> Option<Option<&super::task_index::LiveOnNode>> {
        self.task_index_is_whole()
            .then(|| self.task_index.live_on_node(node_id))
    }

    /// Puts `put` (each at the version the state holds) and deletes
    /// `delete` as one committed batch at `index` would (tests).
    #[cfg(test)]
    pub fn apply_tasks(
        &mut self,
        index: u64,
        put: Vec<shoal_api::pb::Task>,
        delete: &[impl AsRef<str>],
    ) {
        let mut batch = super::Batch::default();
        for mut t in put {
            let id = t.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
            t.meta.get_or_insert_with(Default::default).version = self.version_of(Kind::Task, &id);
            batch.put_task(t);
        }
        for id in delete {
            let id = id.as_ref();
            batch.delete(Kind::Task, id, self.version_of(Kind::Task, id));
        }
        self.apply(index, &batch.into_proto()).expect("no conflict");
    }

    /// Whether a service is named `name`.
    pub fn service_name_taken(&self, name: &str) -> bool {
        if self.service_index_is_whole() {
            return self.service_index.has_name(name);
        }
        self.services
            .values()
            .any(|s| s.spec.as_ref().is_some_and(|x| x.name == name))
    }

    /// The tasks every service but `except` asks for (global ones a task
    /// per node), at most `u64::MAX`.
    pub fn desired_tasks_except(&self, except: &str) -> u64 {
        let nodes = self.nodes.len() as u64;
        let of = |s: &Service| {
            s.spec
                .as_ref()
                .map_or(0, |spec| super::service_index::desired_tasks(spec, nodes))
        };
        if self.service_index_is_whole() {
            // Subtracted before the cap, as the scan caps only the others.
            let excepted = u128::from(self.services.get(except).map_or(0, of));
            let others = self
                .service_index
                .desired_tasks(nodes)
                .saturating_sub(excepted);
            return u64::try_from(others).unwrap_or(u64::MAX);
        }
        self.services
            .iter()
            .filter(|(id, _)| id.as_str() != except)
            .map(|(_, s)| of(s))
            .fold(0, u64::saturating_add)
    }

    /// Whether the service index counts every service (a test may insert
    /// into `services` directly; its readers then walk the services).
    fn service_index_is_whole(&self) -> bool {
        self.service_index.len() == self.services.len()
    }

    /// Whether the task index holds every task (a test may insert into
    /// `tasks` directly; readers of the index then walk the tasks).
    pub fn task_index_is_whole(&self) -> bool {
        self.task_index.len() == self.tasks.len()
    }

    /// What the tasks holding a place on node `node_id` take from it (see
    /// [`super::task_index::OccupiedOnNode`]): `Some(None)` when none does,
    /// None when the index does not hold every task (the caller walks).
    pub fn occupied_on_node(
        &self,
        node_id: &str,
    ) -> Option<Option<&super::task_index::OccupiedOnNode>> {
        self.task_index_is_whole()
            .then(|| self.task_index.occupied_on_node(node_id))
    }

    /// The tasks not yet on a node (New or Pending), by id: what the
    /// allocator and the scheduler look for, without scanning every task.
    pub fn tasks_waiting(&self) -> Box<dyn Iterator<Item = &Task> + '_> {
        self.indexed(self.task_index.waiting(), super::task_index::is_waiting)
    }

    /// The tasks attached to a network (those that may hold addresses),
    /// by id.
    pub fn tasks_on_networks(&self) -> Box<dyn Iterator<Item = &Task> + '_> {
        self.indexed(self.task_index.on_networks(), |t| !t.networks.is_empty())
    }

    /// The tasks an index entry names, each checked against `belongs`; a
    /// scan of every task when the index does not hold every task (a test
    /// that inserted into `tasks` directly).
    fn indexed<'a>(
        &'a self,
        ids: impl Iterator<Item = &'a String> + 'a,
        belongs: impl Fn(&Task) -> bool + 'a,
    ) -> Box<dyn Iterator<Item = &'a Task> + 'a> {
        if self.task_index.len() != self.tasks.len() {
            return Box::new(self.tasks.values().filter(move |t| belongs(t)));
        }
        Box::new(
            ids.filter_map(|id| self.tasks.get(id))
                .filter(move |t| belongs(t)),
        )
    }
}

fn insert<T>(map: &mut BTreeMap<String, T>, id: Option<String>, object: T) {
    if let Some(id) = id {
        map.insert(id, object);
    }
}

/// The kind and id of an object.
pub fn object_key(object: &Object) -> Option<(Kind, String)> {
    use object::Object as O;
    let (kind, meta) = match object.object.as_ref()? {
        O::Node(o) => (Kind::Node, &o.meta),
        O::Service(o) => (Kind::Service, &o.meta),
        O::Task(o) => (Kind::Task, &o.meta),
        O::Network(o) => (Kind::Network, &o.meta),
        O::Secret(o) => (Kind::Secret, &o.meta),
        O::Config(o) => (Kind::Config, &o.meta),
        O::Cluster(o) => (Kind::Cluster, &o.meta),
    };
    Some((kind, meta.as_ref()?.id.clone()))
}

fn meta_mut(object: &mut Object) -> Option<&mut Meta> {
    use object::Object as O;
    match object.object.as_mut()? {
        O::Node(o) => o.meta.as_mut(),
        O::Service(o) => o.meta.as_mut(),
        O::Task(o) => o.meta.as_mut(),
        O::Network(o) => o.meta.as_mut(),
        O::Secret(o) => o.meta.as_mut(),
        O::Config(o) => o.meta.as_mut(),
        O::Cluster(o) => o.meta.as_mut(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::batch::Batch;

    fn node(id: &str, version: u64) -> Node {
        Node {
            meta: Some(Meta {
                id: id.into(),
                version,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn versions_become_the_log_index_and_conflicts_apply_nothing() {
        let mut state = State::default();
        let mut batch = Batch::default();
        batch.put_node(node("a", 0));
        batch.put_node(node("b", 0));
        state.apply(7, &batch.into_proto()).unwrap();
        assert_eq!(state.version_of(Kind::Node, "a"), 7);

        // b is current, a is stale: nothing of the batch applies.
        let mut batch = Batch::default();
        batch.put_node(node("b", 7));
        batch.put_node(node("a", 3));
        let err = state.apply(8, &batch.into_proto()).unwrap_err();
        assert_eq!((err.expected, err.found), (3, 7));
        assert_eq!(state.version_of(Kind::Node, "b"), 7);

        let mut batch = Batch::default();
        batch.delete(Kind::Node, "a", 7);
        state.apply(9, &batch.into_proto()).unwrap();
        assert!(!state.nodes.contains_key("a"));
        // Creating again what exists is a conflict too.
        let mut batch = Batch::default();
        batch.put_node(node("b", 0));
        assert!(state.apply(10, &batch.into_proto()).is_err());
    }

    fn task(id: &str, service: &str, node: &str, state: shoal_api::pb::TaskState) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            service_id: service.into(),
            node_id: node.into(),
            status: Some(shoal_api::pb::TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ids<'a>(tasks: impl Iterator<Item = &'a Task>) -> Vec<String> {
        tasks
            .filter_map(|t| t.meta.as_ref().map(|m| m.id.clone()))
            .collect()
    }

    /// Generated histories of service writes (names reused, modes and
    /// replicas changed, services deleted and created again, a batch that
    /// conflicts): after each, the index answers as a scan of every service.
    #[test]
    fn the_service_index_answers_as_a_scan_through_generated_writes() {
        use shoal_api::pb::{ServiceMode, ServiceSpec};
        const NAMES: [&str; 4] = ["web", "api", "db", "cache"];
        const IDS: [&str; 6] = ["s1", "s2", "s3", "s4", "s5", "s6"];
        const MODES: [ServiceMode; 4] = [
            ServiceMode::Replicated,
            ServiceMode::Global,
            ServiceMode::ReplicatedJob,
            ServiceMode::GlobalJob,
        ];
        let scanned_taken = |state: &State, name: &str| {
            state
                .services
                .values()
                .any(|s| s.spec.as_ref().is_some_and(|x| x.name == name))
        };
        let scanned_desired = |state: &State, except: &str| -> u64 {
            let nodes = state.nodes.len() as u64;
            state
                .services
                .iter()
                .filter(|(id, _)| id.as_str() != except)
                .filter_map(|(_, s)| s.spec.as_ref())
                .map(|spec| match spec.mode() {
                    ServiceMode::Replicated | ServiceMode::ReplicatedJob => spec.replicas,
                    _ => nodes,
                })
                .fold(0, u64::saturating_add)
        };
        let mut rng = crate::test_rng::Rng(0x5eed_cafe);
        let mut state = State::default();
        let mut index = 0;
        for _ in 0..600 {
            index += 1;
            let id = *rng.pick(&IDS);
            let version = state.version_of(Kind::Service, id);
            let mut batch = Batch::default();
            match rng.below(8) {
                0 if version != 0 => batch.delete(Kind::Service, id, version),
                1 => batch.put_node(node(&format!("n{index}"), 0)),
                2 if !state.nodes.is_empty() => {
                    let gone = state.nodes.keys().next().cloned().unwrap_or_default();
                    let v = state.version_of(Kind::Node, &gone);
                    batch.delete(Kind::Node, &gone, v);
                }
                _ => {
                    let mode = *rng.pick(&MODES);
                    let replicas = match mode {
                        // Now and then the most there is: sums past u64.
                        ServiceMode::Replicated | ServiceMode::ReplicatedJob
                            if rng.below(20) == 0 =>
                        {
                            u64::MAX
                        }
                        ServiceMode::Replicated | ServiceMode::ReplicatedJob => rng.below(1000),
                        _ => 0,
                    };
                    batch.put_service(Service {
                        meta: Some(Meta {
                            id: id.into(),
                            version,
                            ..Default::default()
                        }),
                        spec: Some(ServiceSpec {
                            name: rng.pick(&NAMES).to_string(),
                            mode: mode as i32,
                            replicas,
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
            }
            // Now and then a batch that conflicts: nothing of it applies.
            if rng.below(10) == 0 {
                batch.put_node(node("stale", 99));
                assert!(state.apply(index, &batch.into_proto()).is_err());
            } else {
                state.apply(index, &batch.into_proto()).unwrap();
            }
            assert!(state.service_index_is_whole());
            for name in NAMES {
                assert_eq!(
                    state.service_name_taken(name),
                    scanned_taken(&state, name),
                    "{name} at write {index}"
                );
            }
            for except in IDS.iter().chain(&["none"]) {
                assert_eq!(
                    state.desired_tasks_except(except),
                    scanned_desired(&state, except),
                    "all but {except} at write {index}"
                );
            }
        }
        assert!(!state.services.is_empty() && !state.nodes.is_empty());
    }

    #[test]
    fn the_task_index_follows_every_write_and_its_undoing() {
        use shoal_api::pb::TaskState::{Assigned, New, Running};
        let mut state = State::default();
        let mut batch = Batch::default();
        batch.put_task(task("a1", "a", "", New));
        batch.put_task(task("a2", "a", "n1", Assigned));
        batch.put_task(task("b1", "b", "n1", Running));
        state.apply(1, &batch.into_proto()).unwrap();
        assert_eq!(ids(state.tasks_of_service("a")), ["a1", "a2"]);
        assert_eq!(ids(state.tasks_on_node("n1")), ["a2", "b1"]);
        assert_eq!(ids(state.tasks_waiting()), ["a1"]);

        // a1 is placed on n2; b1 is deleted.
        let mut batch = Batch::default();
        let mut a1 = state.tasks["a1"].clone();
        a1.node_id = "n2".into();
        a1.status = Some(shoal_api::pb::TaskStatus {
            state: Assigned as i32,
            ..Default::default()
        });
        batch.put_task(a1);
        batch.delete(Kind::Task, "b1", 1);
        let before = state.clone();
        state.apply(2, &batch.into_proto()).unwrap();
        assert_eq!(ids(state.tasks_on_node("n2")), ["a1"]);
        assert_eq!(ids(state.tasks_on_node("n1")), ["a2"]);
        assert_eq!(ids(state.tasks_of_service("b")), Vec::<String>::new());
        assert_eq!(ids(state.tasks_waiting()), Vec::<String>::new());

        // Putting the old objects back (as a failed group commit does)
        // restores the index too.
        state.put(Object {
            object: Some(object::Object::Task(before.tasks["a1"].clone())),
        });
        state.put(Object {
            object: Some(object::Object::Task(before.tasks["b1"].clone())),
        });
        assert_eq!(state, before);
        assert_eq!(ids(state.tasks_on_node("n1")), ["a2", "b1"]);
        assert_eq!(ids(state.tasks_on_node("n2")), Vec::<String>::new());
        assert_eq!(ids(state.tasks_waiting()), ["a1"]);
    }

    #[test]
    fn tasks_inserted_around_the_index_are_still_found() {
        let mut state = State::default();
        state.tasks.insert(
            "t".into(),
            task("t", "a", "n1", shoal_api::pb::TaskState::Running),
        );
        assert_eq!(ids(state.tasks_of_service("a")), ["t"]);
        assert_eq!(ids(state.tasks_on_node("n1")), ["t"]);
    }

    #[test]
    fn a_status_alone_leaves_the_assignment_version_where_it_was() {
        use shoal_api::pb::TaskState::{Assigned, Running, Shutdown};
        let mut state = State::default();
        let mut batch = Batch::default();
        batch.put_task(task("t", "a", "n1", Assigned));
        state.apply(1, &batch.into_proto()).unwrap();
        assert_eq!(state.assignment_version(&state.tasks["t"]), 1);

        // The node reports the task running: a new store version only.
        let mut t = state.tasks["t"].clone();
        t.status = Some(shoal_api::pb::TaskStatus {
            state: Running as i32,
            message: "started".into(),
            ..Default::default()
        });
        let mut batch = Batch::default();
        batch.put_task(t.clone());
        state.apply(2, &batch.into_proto()).unwrap();
        assert_eq!(state.version_of(Kind::Task, "t"), 2);
        assert_eq!(state.assignment_version(&state.tasks["t"]), 1);

        // The manager wants it stopped: the node must hear of it.
        t.meta = state.tasks["t"].meta.clone();
        t.desired_state = Shutdown as i32;
        let mut batch = Batch::default();
        batch.put_task(t);
        state.apply(3, &batch.into_proto()).unwrap();
        assert_eq!(state.assignment_version(&state.tasks["t"]), 3);

        // Deleted, it is forgotten.
        let mut batch = Batch::default();
        batch.delete(Kind::Task, "t", 3);
        state.apply(4, &batch.into_proto()).unwrap();
        assert_eq!(state.task_index.assignment_version("t"), None);
    }
}

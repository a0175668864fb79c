//! Store changes as Docker's swarm events: `service update <id> (name=web,
//! replicas.new=3, replicas.old=2)`. The watch stream carries only the new
//! objects, so [`Summaries`] keeps what each object's event needs of its
//! last version and tells creates, real updates and removes apart.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    hash::{Hash, Hasher},
};

use prost::Message;
use shoal_api::pb::{
    Config, Event, Kind, Network, Node, Object, ObjectRef, Secret, Service, ServiceMode, Task,
    object,
};

use crate::store::{Change, State};

/// What an object's events say about it, as of its last version seen.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Summary {
    version: u64,
    name: String,
    /// Always printed (a task's service and node).
    fixed: BTreeMap<String, String>,
    /// Printed as `key.old` / `key.new` when they change.
    tracked: BTreeMap<String, String>,
    /// Changes of anything else in the spec: an update with only the name
    /// (Docker's event for any spec change). None: such changes are not
    /// events (tasks, whose status is rewritten all the time).
    fingerprint: Option<u64>,
}

/// A hash of `message`'s encoding, made in `scratch` (one buffer for every
/// change, not a fresh one each: this runs once per write on every manager).
fn fingerprint(message: &impl Message, scratch: &mut Vec<u8>) -> u64 {
    scratch.clear();
    // A Vec grows as needed: encoding into one cannot fail.
    let _ = message.encode(scratch);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    scratch.hash(&mut hasher);
    hasher.finish()
}

/// A spec where it lies, or a default one: not a clone per change (a
/// config's or secret's spec holds its data).
fn borrowed_or_default<T: Clone + Default>(spec: Option<&T>) -> Cow<'_, T> {
    spec.map(Cow::Borrowed).unwrap_or_default()
}

/// The id and version of an object's meta (not the labels: a clone of the
/// whole meta per change was most of what an event cost).
fn id_version(meta: &Option<shoal_api::pb::Meta>) -> (String, u64) {
    meta.as_ref()
        .map(|m| (m.id.clone(), m.version))
        .unwrap_or_default()
}

fn kind_word(kind: Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::Node => "node",
        Kind::Service => "service",
        Kind::Task => "task",
        Kind::Network => "network",
        Kind::Secret => "secret",
        Kind::Config => "config",
        _ => return None,
    })
}

/// An object that makes events, where it lies: a change's object or one
/// in the state, neither copied (a resync reads every object of the state).
#[derive(Clone, Copy)]
enum View<'a> {
    Service(&'a Service),
    Node(&'a Node),
    Task(&'a Task),
    Network(&'a Network),
    Secret(&'a Secret),
    Config(&'a Config),
}

impl<'a> View<'a> {
    /// None for objects that make no event (the cluster object: its changes
    /// are settings and keys).
    fn of(object: &'a Object) -> Option<Self> {
        Some(match object.object.as_ref()? {
            object::Object::Service(s) => View::Service(s),
            object::Object::Node(n) => View::Node(n),
            object::Object::Task(t) => View::Task(t),
            object::Object::Network(n) => View::Network(n),
            object::Object::Secret(s) => View::Secret(s),
            object::Object::Config(c) => View::Config(c),
            _ => return None,
        })
    }

    fn kind_and_meta(self) -> (Kind, Option<&'a shoal_api::pb::Meta>) {
        match self {
            View::Service(s) => (Kind::Service, s.meta.as_ref()),
            View::Node(n) => (Kind::Node, n.meta.as_ref()),
            View::Task(t) => (Kind::Task, t.meta.as_ref()),
            View::Network(n) => (Kind::Network, n.meta.as_ref()),
            View::Secret(s) => (Kind::Secret, s.meta.as_ref()),
            View::Config(c) => (Kind::Config, c.meta.as_ref()),
        }
    }
}

/// The kind word, id and summary of an object.
fn summarize(
    object: View<'_>,
    service_name: &dyn Fn(&str) -> String,
    scratch: &mut Vec<u8>,
) -> (Kind, String, Summary) {
    let mut tracked = BTreeMap::new();
    let mut fixed = BTreeMap::new();
    let (kind, (id, version), name, fingerprint) = match object {
        View::Service(s) => {
            let spec = borrowed_or_default(s.spec.as_ref());
            if matches!(
                spec.mode(),
                ServiceMode::Replicated | ServiceMode::ReplicatedJob
            ) {
                tracked.insert("replicas".into(), spec.replicas.to_string());
            }
            let image = spec
                .task
                .as_ref()
                .and_then(|t| t.container.as_ref())
                .map(|c| c.image.clone())
                .unwrap_or_default();
            tracked.insert("image".into(), image);
            let update = s
                .update_status
                .as_ref()
                .map(|u| u.state.clone())
                .unwrap_or_default();
            if !update.is_empty() {
                tracked.insert("updatestate".into(), update);
            }
            (
                Kind::Service,
                id_version(&s.meta),
                spec.name.clone(),
                Some(fingerprint(&*spec, scratch)),
            )
        }
        View::Node(n) => {
            let spec = borrowed_or_default(n.spec.as_ref());
            tracked.insert("availability".into(), spec.availability().word().into());
            tracked.insert("role".into(), n.role().word().into());
            let state = n.status.as_ref().map(|s| s.state()).unwrap_or_default();
            tracked.insert("state".into(), state.word().into());
            let name = n
                .description
                .as_ref()
                .map(|d| d.hostname.clone())
                .unwrap_or_default();
            (
                Kind::Node,
                id_version(&n.meta),
                name,
                Some(fingerprint(&*spec, scratch)),
            )
        }
        View::Task(t) => {
            let state = t.status.as_ref().map(|s| s.state()).unwrap_or_default();
            tracked.insert("state".into(), state.word().into());
            tracked.insert("desiredstate".into(), t.desired_state().word().into());
            let service = if t.service_name.is_empty() {
                service_name(&t.service_id)
            } else {
                t.service_name.clone()
            };
            let name = if t.slot > 0 {
                format!("{service}.{}", t.slot)
            } else {
                format!("{service}.{}", t.node_id)
            };
            fixed.insert("service".into(), service);
            fixed.insert("node".into(), t.node_id.clone());
            (Kind::Task, id_version(&t.meta), name, None)
        }
        View::Network(n) => {
            let spec = borrowed_or_default(n.spec.as_ref());
            (
                Kind::Network,
                id_version(&n.meta),
                spec.name.clone(),
                Some(fingerprint(&*spec, scratch)),
            )
        }
        // A secret or config has nothing but its spec to change, so each
        // new version is a spec change: the version is the fingerprint,
        // with no encoding and hash of the data on every write.
        View::Secret(s) => {
            let (id, version) = id_version(&s.meta);
            let name = s.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
            (Kind::Secret, (id, version), name, Some(version))
        }
        View::Config(c) => {
            let (id, version) = id_version(&c.meta);
            let name = c.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
            (Kind::Config, (id, version), name, Some(version))
        }
    };
    (
        kind,
        id,
        Summary {
            version,
            name,
            fixed,
            tracked,
            fingerprint,
        },
    )
}

fn event(
    kind: &str,
    action: &str,
    id: &str,
    attributes: BTreeMap<String, String>,
    time_nano: i64,
) -> Event {
    Event {
        r#type: kind.into(),
        action: action.into(),
        actor_id: id.into(),
        attributes,
        time_nano,
    }
}

/// An event's attributes: a summary's fixed ones and its name, in the
/// map the event keeps (not copied into another one on the way).
fn attributes_of(fixed: &BTreeMap<String, String>, name: String) -> BTreeMap<String, String> {
    let mut attributes = fixed.clone();
    attributes.insert("name".into(), name);
    attributes
}

/// The last version seen of every object, to turn changes into events.
#[derive(Default)]
pub struct Summaries {
    /// By kind, then id: looked up by a borrowed id, with no copy of it.
    known: HashMap<Kind, HashMap<String, Summary>>,
    /// Service id → name, for tasks written without their service's name.
    services: HashMap<String, String>,
    /// Where specs are encoded for their fingerprint.
    scratch: Vec<u8>,
}

impl Summaries {
    /// Everything in `state` as already seen: no events for it.
    pub fn of(state: &State) -> Self {
        let mut out = Self::default();
        out.resync(state, 0);
        out
    }

    /// One applied change as an event, if it is one.
    pub fn apply(&mut self, change: &Change, time_nano: i64) -> Option<Event> {
        match change {
            Change::Put(object) => self.put(View::of(object)?, time_nano),
            Change::Delete(r) => self.delete(r, time_nano),
        }
    }

    fn put(&mut self, object: View<'_>, time_nano: i64) -> Option<Event> {
        // A version already seen makes no event: known before its summary
        // is made (a resync meets every object of the state, most of them
        // unchanged).
        if let (kind, Some(meta)) = object.kind_and_meta()
            && meta.version != 0
            && self
                .known
                .get(&kind)
                .and_then(|of_kind| of_kind.get(&meta.id))
                .is_some_and(|old| old.version >= meta.version)
        {
            return None;
        }
        // Borrowed, not copied: a copy of every service's name per put was
        // O(services) per task written (18% of the leader's CPU while 3,000
        // services were created on 1,000 nodes).
        let services = &self.services;
        let lookup = |id: &str| services.get(id).cloned().unwrap_or_default();
        let (kind, id, new) = summarize(object, &lookup, &mut self.scratch);
        if kind == Kind::Service {
            self.services.insert(id.clone(), new.name.clone());
        }
        let word = kind_word(kind)?;
        let of_kind = self.known.entry(kind).or_default();
        let event = match of_kind.get(&id) {
            // A change the state already held when it was read.
            Some(old) if old.version >= new.version && new.version != 0 => return None,
            Some(old) => {
                let mut attributes = attributes_of(&new.fixed, new.name.clone());
                let mut changed = old.fingerprint != new.fingerprint || old.name != new.name;
                for (k, v) in &new.tracked {
                    let before = old.tracked.get(k).cloned().unwrap_or_default();
                    if &before != v {
                        attributes.insert(format!("{k}.old"), before);
                        attributes.insert(format!("{k}.new"), v.clone());
                        changed = true;
                    }
                }
                changed.then(|| event(word, "update", &id, attributes, time_nano))
            }
            None => {
                let attributes = attributes_of(&new.fixed, new.name.clone());
                Some(event(word, "create", &id, attributes, time_nano))
            }
        };
        of_kind.insert(id, new);
        event
    }

    fn delete(&mut self, r: &ObjectRef, time_nano: i64) -> Option<Event> {
        let word = kind_word(r.kind())?;
        let old = self.known.get_mut(&r.kind())?.remove(&r.id)?;
        if r.kind() == Kind::Service {
            self.services.remove(&r.id);
        }
        let attributes = attributes_of(&old.fixed, old.name);
        Some(event(word, "remove", &r.id, attributes, time_nano))
    }

    /// Catches up with `state` wholesale (after missing watch events, or a
    /// snapshot installed): the events of every difference, creates and
    /// updates before removes. It reads every object where it lies: the
    /// caller holds the store's read lock, and applies wait meanwhile.
    pub fn resync(&mut self, state: &State, time_nano: i64) -> Vec<Event> {
        let objects = (state.services.values().map(View::Service))
            .chain(state.nodes.values().map(View::Node))
            .chain(state.networks.values().map(View::Network))
            .chain(state.secrets.values().map(View::Secret))
            .chain(state.configs.values().map(View::Config))
            .chain(state.tasks.values().map(View::Task));
        let mut events: Vec<Event> = objects
            .filter_map(|object| self.put(object, time_nano))
            .collect();
        let gone: Vec<(Kind, String)> = self
            .known
            .iter()
            .flat_map(|(kind, of_kind)| of_kind.keys().map(move |id| (*kind, id)))
            .filter(|(kind, id)| state.version_of(*kind, id) == 0)
            .map(|(kind, id)| (kind, id.clone()))
            .collect();
        for (kind, id) in gone {
            let r = ObjectRef {
                kind: kind as i32,
                id,
            };
            events.extend(self.delete(&r, time_nano));
        }
        events
    }
}

#[cfg(test)]
#[path = "describe_tests.rs"]
mod tests;

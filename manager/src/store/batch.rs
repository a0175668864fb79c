//! Building a write: each put is guarded by the version the object carries
//! (what the writer read; 0 creates), and stamped with the proposer's clock.

use shoal_api::pb::{
    Cluster, Config, Kind, Meta, Network, Node, Object, ObjectRef, Secret, Service, StoreAction,
    StoreBatch, Task, object, store_action,
};

use crate::limits::{MAX_BYTES_PER_PASS, MAX_WRITES_PER_PASS};

#[derive(Default, Debug, Clone)]
pub struct Batch {
    actions: Vec<StoreAction>,
    /// The actions' encoded size, kept as they are added.
    bytes: usize,
}

macro_rules! put_fn {
    ($name:ident, $ty:ty, $variant:ident) => {
        pub fn $name(&mut self, mut o: $ty) {
            let expected = stamp(&mut o.meta);
            self.push_put(object::Object::$variant(o), expected);
        }
    };
}

impl Batch {
    put_fn!(put_node, Node, Node);
    put_fn!(put_service, Service, Service);
    put_fn!(put_task, Task, Task);
    put_fn!(put_network, Network, Network);
    put_fn!(put_secret, Secret, Secret);
    put_fn!(put_config, Config, Config);
    put_fn!(put_cluster, Cluster, Cluster);

    pub fn delete(&mut self, kind: Kind, id: &str, expected_version: u64) {
        self.push(StoreAction {
            action: Some(store_action::Action::Delete(ObjectRef {
                kind: kind as i32,
                id: id.to_owned(),
            })),
            expected_version,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// Whether a background pass (orchestrator, allocator, scheduler) has
    /// written its share: [`MAX_WRITES_PER_PASS`] objects or
    /// [`MAX_BYTES_PER_PASS`] bytes. Keeps every Raft entry small however
    /// much is asked at once.
    pub fn is_full(&self) -> bool {
        self.actions.len() >= MAX_WRITES_PER_PASS || self.bytes >= MAX_BYTES_PER_PASS
    }

    pub fn into_proto(self) -> StoreBatch {
        StoreBatch {
            actions: self.actions,
        }
    }

    fn push_put(&mut self, object: object::Object, expected_version: u64) {
        self.push(StoreAction {
            action: Some(store_action::Action::Put(Object {
                object: Some(object),
            })),
            expected_version,
        });
    }

    fn push(&mut self, action: StoreAction) {
        self.bytes += prost::Message::encoded_len(&action);
        self.actions.push(action);
    }
}

/// Sets the timestamps and returns the version the write expects.
fn stamp(meta: &mut Option<Meta>) -> u64 {
    let meta = meta.get_or_insert_with(Default::default);
    let now = shoal_api::now_ms();
    if meta.created_at == 0 {
        meta.created_at = now;
    }
    meta.updated_at = now;
    meta.version
}

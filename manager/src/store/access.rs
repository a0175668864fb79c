//! What authorization reads of the cluster's record, kept apart from the
//! state so that judging a call never waits for the store's lock.
//!
//! Every call (each write a client makes, each Raft message a follower
//! gets) is judged before it runs. Judged under the store's read lock, a
//! call waited while an apply held the write lock: a follower's
//! AppendEntries queued behind the apply of the entry before it, and a
//! leader's incoming writes behind the apply of the last ones. The
//! state machine refreshes this copy when it applies a change to a node
//! or to the cluster object, so calls are judged on the applied state, as
//! before.

use std::collections::{HashMap, HashSet};

use shoal_api::pb::{Kind, NodeRole, Object, object};

use super::{Change, State};

/// The applied state's nodes and removals, as authorization reads them.
#[derive(Debug, Default, PartialEq)]
pub struct Access {
    /// Whether the cluster object exists (a manager that has just joined
    /// has none until the log reaches it).
    pub cluster_known: bool,
    /// Nodes `node rm` removed: their certificates count for nothing.
    pub removed: HashSet<String>,
    /// Every node the cluster knows, and whether it has manager rights
    /// (it is a manager, or is being promoted to one).
    pub nodes: HashMap<String, bool>,
}

impl Access {
    pub fn of(state: &State) -> Self {
        Self {
            cluster_known: state.cluster.is_some(),
            removed: state
                .cluster
                .iter()
                .flat_map(|c| c.removed_nodes.iter().cloned())
                .collect(),
            nodes: state
                .nodes
                .iter()
                .map(|(id, node)| {
                    let desired = node.spec.as_ref().map(|s| s.desired_role());
                    let manager =
                        node.role() == NodeRole::Manager || desired == Some(NodeRole::Manager);
                    (id.clone(), manager)
                })
                .collect(),
        }
    }

    /// Whether `changes` can change what [`Access::of`] reads.
    pub fn touched_by<'a>(changes: impl IntoIterator<Item = &'a Change>) -> bool {
        changes.into_iter().any(|change| match change {
            Change::Put(object) => matches!(
                object.as_ref(),
                Object {
                    object: Some(object::Object::Node(_) | object::Object::Cluster(_))
                }
            ),
            Change::Delete(r) => matches!(r.kind(), Kind::Node | Kind::Cluster),
        })
    }
}

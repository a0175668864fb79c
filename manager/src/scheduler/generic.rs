//! Generic resources on a node (`shoal-agent join --generic-resource gpu=2`
//! or `--generic-resource gpu=UUID1 --generic-resource gpu=UUID2`): what it
//! offers less what its tasks took, and what a task that reserves `gpu=1`
//! takes there, as swarmkit's genericresource.Claim does: that count from a
//! discrete pool, or that many named instances (which the task is told).

use std::collections::BTreeMap;

use shoal_api::{
    engine,
    pb::{GenericResource, Node, generic_resource::Value},
};

/// One node's generic resources still free.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    /// Kind → count left.
    discrete: BTreeMap<String, i64>,
    /// Kind → names not taken, in the node's order.
    named: BTreeMap<String, Vec<String>>,
}

impl Pool {
    /// What `node` advertises.
    pub fn of(node: &Node) -> Self {
        let mut pool = Self::default();
        for r in node.description.iter().flat_map(|d| &d.generic_resources) {
            match &r.value {
                Some(Value::Discrete(n)) => *pool.discrete.entry(r.kind.clone()).or_default() += n,
                Some(Value::Named(name)) => pool
                    .named
                    .entry(r.kind.clone())
                    .or_default()
                    .push(name.clone()),
                None => {}
            }
        }
        pool
    }

    /// The resources that satisfy `wanted` (a count per kind), or None when
    /// the node lacks any of them.
    pub fn claim(&self, wanted: &[GenericResource]) -> Option<Vec<GenericResource>> {
        let mut out = Vec::new();
        for want in wanted {
            let Some(Value::Discrete(count)) = want.value else {
                // The manager refuses named reservations; nothing satisfies one.
                return None;
            };
            if count <= 0 {
                continue;
            }
            if let Some(have) = self.discrete.get(&want.kind) {
                if *have < count {
                    return None;
                }
                out.push(engine::discrete(&want.kind, count));
                continue;
            }
            let names = self.named.get(&want.kind)?;
            let take = usize::try_from(count).ok()?;
            if names.len() < take {
                return None;
            }
            out.extend(names[..take].iter().map(|n| engine::named(&want.kind, n)));
        }
        Some(out)
    }

    /// Marks `taken` as used (claimed now, or held by a task already here).
    /// What the node no longer offers is ignored.
    pub fn take(&mut self, taken: &[GenericResource]) {
        for r in taken {
            match &r.value {
                Some(Value::Discrete(n)) => {
                    if let Some(have) = self.discrete.get_mut(&r.kind) {
                        *have -= n;
                    }
                }
                Some(Value::Named(name)) => {
                    if let Some(names) = self.named.get_mut(&r.kind) {
                        names.retain(|n| n != name);
                    }
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal_api::{
        engine::{discrete, named},
        pb::NodeDescription,
    };

    use super::*;

    fn node(resources: Vec<GenericResource>) -> Node {
        Node {
            description: Some(NodeDescription {
                generic_resources: resources,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn counts_come_from_discrete_pools_and_are_used_up() {
        let mut pool = Pool::of(&node(vec![discrete("gpu", 2)]));
        let want = [discrete("gpu", 1)];
        let first = pool.claim(&want).unwrap();
        assert_eq!(first, [discrete("gpu", 1)]);
        pool.take(&first);
        let second = pool.claim(&want).unwrap();
        pool.take(&second);
        assert_eq!(pool.claim(&want), None, "two GPUs, two tasks");
        assert_eq!(pool.claim(&[discrete("ssd", 1)]), None, "a kind it lacks");
        assert_eq!(
            pool.claim(&[]),
            Some(vec![]),
            "no reservation fits anywhere"
        );
    }

    #[test]
    fn counts_take_named_instances_which_the_task_is_given() {
        let mut pool = Pool::of(&node(vec![
            named("gpu", "UUID1"),
            named("gpu", "UUID2"),
            named("gpu", "UUID3"),
        ]));
        let claimed = pool.claim(&[discrete("gpu", 2)]).unwrap();
        assert_eq!(claimed, [named("gpu", "UUID1"), named("gpu", "UUID2")]);
        pool.take(&claimed);
        assert_eq!(pool.claim(&[discrete("gpu", 2)]), None);
        assert_eq!(
            pool.claim(&[discrete("gpu", 1)]).unwrap(),
            [named("gpu", "UUID3")]
        );
        // A named reservation is never satisfied (the manager refuses it).
        assert_eq!(pool.claim(&[named("gpu", "UUID3")]), None);
    }
}

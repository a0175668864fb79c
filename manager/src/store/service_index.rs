//! What a service's create or update would otherwise scan every service
//! for, kept by [`super::State`]'s `put` and `delete`: whether a name is
//! taken, and how many tasks the services ask for (the cluster's task
//! limit). Both scans ran inside the write path's turn, where nothing else
//! writes: at 10,000 services they were an eighth of the leader's work
//! while services were created.

use std::collections::HashMap;

use shoal_api::pb::{Service, ServiceMode, ServiceSpec};

#[derive(Clone, Debug, Default)]
pub(crate) struct ServiceIndex {
    /// Services per name (one, unless a state holds duplicates).
    names: HashMap<String, u32>,
    /// The replicas of replicated services and jobs, summed (u128: no sum
    /// of u64s overflows it, so every removal undoes its addition).
    replicas: u128,
    /// Global services and jobs: a task per node each.
    global: u64,
    /// Services counted.
    len: usize,
}

impl ServiceIndex {
    pub fn insert(&mut self, service: &Service) {
        self.len += 1;
        let Some(spec) = &service.spec else { return };
        *self.names.entry(spec.name.clone()).or_default() += 1;
        match asks(spec) {
            Asks::Replicas(n) => self.replicas += u128::from(n),
            Asks::PerNode => self.global += 1,
        }
    }

    pub fn remove(&mut self, service: &Service) {
        self.len = self.len.saturating_sub(1);
        let Some(spec) = &service.spec else { return };
        if let Some(count) = self.names.get_mut(&spec.name) {
            *count -= 1;
            if *count == 0 {
                self.names.remove(&spec.name);
            }
        }
        match asks(spec) {
            Asks::Replicas(n) => self.replicas = self.replicas.saturating_sub(u128::from(n)),
            Asks::PerNode => self.global = self.global.saturating_sub(1),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn has_name(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    /// The tasks every service asks for on `nodes` nodes.
    pub fn desired_tasks(&self, nodes: u64) -> u128 {
        self.replicas + u128::from(self.global) * u128::from(nodes)
    }
}

/// What a service asks for.
enum Asks {
    Replicas(u64),
    PerNode,
}

fn asks(spec: &ServiceSpec) -> Asks {
    match spec.mode() {
        // A replicated job's completed tasks stay, one per completion.
        ServiceMode::Replicated | ServiceMode::ReplicatedJob => Asks::Replicas(spec.replicas),
        ServiceMode::Global | ServiceMode::GlobalJob => Asks::PerNode,
    }
}

/// The tasks `spec` asks for on `nodes` nodes.
pub fn desired_tasks(spec: &ServiceSpec, nodes: u64) -> u64 {
    match asks(spec) {
        Asks::Replicas(n) => n,
        Asks::PerNode => nodes,
    }
}

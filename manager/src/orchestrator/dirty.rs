//! Which services the next orchestrator pass must look at, from the
//! store's change events: a service written, a task of it written, a node
//! its tasks are on written (and every global service then: a node's
//! state decides where they run). Events that name no service (a deleted
//! task, a reset of the state, a receiver that fell behind, the cluster
//! object) make the next pass whole.

use std::collections::BTreeSet;

use shoal_api::pb::{Kind, ServiceMode, object::Object as O};
use tokio::sync::broadcast::{self, error::TryRecvError};

use super::reconcile::{Plan, Scope, reconcile_in};
use crate::store::{Change, State, StoreEvent};

#[derive(Debug, Default)]
pub struct Dirty {
    everything: bool,
    services: BTreeSet<String>,
    /// Nodes written: widened to their tasks' services and every global
    /// service once the state is at hand.
    nodes: BTreeSet<String>,
}

impl Dirty {
    pub fn everything() -> Self {
        Self {
            everything: true,
            ..Self::default()
        }
    }

    pub fn mark_everything(&mut self) {
        self.everything = true;
    }

    pub fn is_everything(&self) -> bool {
        self.everything
    }

    /// Whether nothing is marked.
    pub fn is_empty(&self) -> bool {
        !self.everything && self.services.is_empty() && self.nodes.is_empty()
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Takes every event received so far (they are sent before the applied
    /// index moves, so all of those the waker announced).
    pub fn take_events(&mut self, events: &mut broadcast::Receiver<std::sync::Arc<StoreEvent>>) {
        loop {
            match events.try_recv() {
                Ok(event) => self.note(&event),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "orchestrator fell behind the change events");
                    self.everything = true;
                }
                Err(TryRecvError::Closed) => {
                    self.everything = true;
                    return;
                }
            }
        }
    }

    /// Notes what one applied write changed.
    pub fn note(&mut self, event: &StoreEvent) {
        for change in &event.changes {
            match change {
                Change::Put(object) => match object.object.as_ref() {
                    Some(O::Service(s)) => {
                        self.services.extend(s.meta.as_ref().map(|m| m.id.clone()));
                    }
                    // A task of no service is a `network connect`
                    // attachment: only a whole pass forgets ended ones.
                    Some(O::Task(t)) if t.service_id.is_empty() => self.everything = true,
                    Some(O::Task(t)) => {
                        self.services.insert(t.service_id.clone());
                    }
                    Some(O::Node(n)) => {
                        self.nodes.extend(n.meta.as_ref().map(|m| m.id.clone()));
                    }
                    // The history limit.
                    Some(O::Cluster(_)) => self.everything = true,
                    // Networks, secrets, configs: no pass decides on them.
                    _ => {}
                },
                Change::Delete(r) => match r.kind() {
                    Kind::Service => {
                        self.services.insert(r.id.clone());
                    }
                    // Whose task it was is gone with it; a removed node's
                    // attachments are forgotten by a whole pass.
                    Kind::Task | Kind::Node | Kind::Cluster => self.everything = true,
                    _ => {}
                },
            }
        }
    }

    /// The pass over what is marked, on `state`.
    pub fn reconcile(&self, state: &State, now: i64) -> Plan {
        if self.everything {
            return reconcile_in(state, now, Scope::All);
        }
        if self.nodes.is_empty() {
            return reconcile_in(state, now, Scope::Services(&self.services));
        }
        let mut services = self.services.clone();
        for node in &self.nodes {
            services.extend(state.tasks_on_node(node).map(|t| t.service_id.clone()));
        }
        services.extend(
            state
                .services
                .iter()
                .filter(|(_, s)| {
                    let mode = s.spec.as_ref().map(|s| s.mode()).unwrap_or_default();
                    matches!(mode, ServiceMode::Global | ServiceMode::GlobalJob)
                })
                .map(|(id, _)| id.clone()),
        );
        reconcile_in(state, now, Scope::Services(&services))
    }
}

//! `shoal events`: every manager turns the changes its store applies into
//! Docker-style events ([`describe`]) and keeps the last [`HISTORY`] of
//! them in memory, so `--since` can replay them. The history is this
//! manager's own (not replicated): it starts empty when the manager starts
//! and holds at most [`HISTORY`] events, the oldest dropped first (Docker's
//! daemon keeps 256).

pub mod describe;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use shoal_api::pb::Event;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::store::Store;

/// How many events a manager keeps for `--since`.
pub const HISTORY: usize = 1024;

/// Events a slow reader may fall behind by before its stream ends.
const LIVE_BUFFER: usize = 4096;

/// The recent events and the live feed, behind one lock so a new reader
/// gets each event once: from the history or from the feed.
pub struct EventLog {
    history: Mutex<VecDeque<Arc<Event>>>,
    live: broadcast::Sender<Arc<Event>>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self {
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            live: broadcast::channel(LIVE_BUFFER).0,
        }
    }
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

impl EventLog {
    pub fn push(&self, event: Event) {
        let event = Arc::new(event);
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        let _ = self.live.send(event);
    }

    /// The kept events at or after `since_ns` (none when unset) and the
    /// feed of every later one.
    pub fn subscribe(
        &self,
        since_ns: Option<i64>,
    ) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let past = match since_ns {
            Some(since) => history
                .iter()
                .filter(|e| e.time_nano >= since)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        (past, self.live.subscribe())
    }

    /// The events of `since_ns..=until_ns` as a stream: the kept ones, then
    /// live ones until `until_ns` passes (forever when unset).
    pub fn stream(
        self: &Arc<Self>,
        since_ns: Option<i64>,
        until_ns: Option<i64>,
    ) -> mpsc::Receiver<Result<Event, Status>> {
        let (past, mut live) = self.subscribe(since_ns);
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let until = until_ns.unwrap_or(i64::MAX);
            for event in past {
                if event.time_nano > until {
                    return;
                }
                if tx.send(Ok((*event).clone())).await.is_err() {
                    return;
                }
            }
            loop {
                let left = until.saturating_sub(now_ns());
                if left <= 0 {
                    return;
                }
                let wait = Duration::from_nanos(left as u64).min(Duration::from_secs(3600));
                let next = tokio::select! {
                    next = live.recv() => next,
                    _ = tokio::time::sleep(wait) => continue,
                    _ = tx.closed() => return,
                };
                let sent = match next {
                    Ok(event) if event.time_nano > until => return,
                    Ok(event) => tx.send(Ok((*event).clone())).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "events: this reader fell {missed} events behind and they were dropped; start again with --since"
                            ))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        rx
    }
}

/// Follows `store` for as long as it runs, recording its changes in `log`.
pub async fn record(store: Store, log: Arc<EventLog>) {
    let mut changes = store.subscribe();
    let mut resets = store.resets();
    let mut summaries = describe::Summaries::of(&*store.read().await);
    loop {
        let next = tokio::select! {
            next = changes.recv() => next,
            reset = resets.changed() => {
                if reset.is_err() {
                    return;
                }
                // A snapshot replaced the state: what changed is the
                // difference.
                let state = store.read().await;
                for event in summaries.resync(&state, now_ns()) {
                    log.push(event);
                }
                continue;
            }
        };
        match next {
            Ok(applied) => {
                let now = now_ns();
                for change in &applied.changes {
                    if let Some(event) = summaries.apply(change, now) {
                        log.push(event);
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(
                    missed,
                    "events fell behind the store; catching up from its state"
                );
                let state = store.read().await;
                for event in summaries.resync(&state, now_ns()) {
                    log.push(event);
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time_nano: i64, id: &str) -> Event {
        Event {
            r#type: "service".into(),
            action: "update".into(),
            actor_id: id.into(),
            time_nano,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn since_replays_the_kept_events_then_follows() {
        let log = Arc::new(EventLog::default());
        log.push(at(10, "a"));
        log.push(at(20, "b"));
        let mut rx = log.stream(Some(15), None);
        let first = rx.recv().await.unwrap().unwrap();
        assert_eq!(first.actor_id, "b");
        log.push(at(now_ns(), "c"));
        let live = rx.recv().await.unwrap().unwrap();
        assert_eq!(live.actor_id, "c");
    }

    #[tokio::test]
    async fn without_since_only_live_events_come() {
        let log = Arc::new(EventLog::default());
        log.push(at(10, "old"));
        let mut rx = log.stream(None, None);
        log.push(at(now_ns(), "new"));
        assert_eq!(rx.recv().await.unwrap().unwrap().actor_id, "new");
    }

    #[tokio::test]
    async fn until_in_the_past_ends_after_the_replay() {
        let log = Arc::new(EventLog::default());
        for t in [10, 20, 30] {
            log.push(at(t, &t.to_string()));
        }
        let mut rx = log.stream(Some(0), Some(20));
        let mut got = Vec::new();
        while let Some(event) = rx.recv().await {
            got.push(event.unwrap().actor_id);
        }
        assert_eq!(got, ["10", "20"]);
    }

    #[tokio::test]
    async fn the_recorder_turns_applied_changes_into_events() {
        use shoal_api::pb::{Meta, Service, ServiceSpec};
        let store = Store::new();
        let log = Arc::new(EventLog::default());
        let mut rx = log.stream(None, None);
        tokio::spawn(record(store.clone(), log.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut batch = crate::store::Batch::default();
        batch.put_service(Service {
            meta: Some(Meta {
                id: "s1".into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                name: "web".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let changes = store.write().await.apply(1, &batch.into_proto()).unwrap();
        store.publish(crate::store::StoreEvent { index: 1, changes });
        let event = rx.recv().await.unwrap().unwrap();
        assert_eq!(
            (
                event.r#type.as_str(),
                event.action.as_str(),
                event.actor_id.as_str()
            ),
            ("service", "create", "s1")
        );
        assert_eq!(event.attributes["name"], "web");
        let (past, _) = log.subscribe(Some(0));
        assert_eq!(past.len(), 1);

        // A snapshot replaces the state with no change events: the
        // difference still comes out.
        *store.write().await = crate::store::State::default();
        store.publish_reset(9);
        let removed = rx.recv().await.unwrap().unwrap();
        assert_eq!(
            (removed.action.as_str(), removed.actor_id.as_str()),
            ("remove", "s1")
        );
    }

    #[test]
    fn history_is_bounded() {
        let log = EventLog::default();
        for t in 0..(HISTORY as i64 + 10) {
            log.push(at(t, "x"));
        }
        let (past, _) = log.subscribe(Some(0));
        assert_eq!(past.len(), HISTORY);
        assert_eq!(past[0].time_nano, 10);
    }
}

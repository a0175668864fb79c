//! The page's live feed: server-sent events from the store's watch. A new
//! page gets a `snapshot`, then one `change` per applied log entry that
//! touched a node, service or task; a feed that fell behind the watch
//! starts over with a new `snapshot`. Nothing polls.

use std::{convert::Infallible, sync::Arc, time::Duration};

use hyper::body::{Bytes, Frame};
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

use super::view;
use crate::manager::Manager;

/// How often an idle feed sends a comment: a proxy keeps the connection
/// open, and a page that went away is noticed (the write fails).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The body of `GET /events`: frames as the store changes, until the page
/// goes away.
pub fn feed(
    manager: Arc<Manager>,
) -> impl tokio_stream::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        // Subscribed before the snapshot is read: no change falls between.
        let mut watch = manager.store.subscribe();
        if tx.send(snapshot(&manager).await).await.is_err() {
            return;
        }
        loop {
            let message = tokio::select! {
                event = watch.recv() => match event {
                    Ok(event) => match view::changes(&event.changes) {
                        Some(changes) => sse("change", &changes),
                        None => continue,
                    },
                    Err(RecvError::Lagged(_)) => snapshot(&manager).await,
                    Err(RecvError::Closed) => return,
                },
                _ = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b": keep-alive\n\n"),
                _ = tx.closed() => return,
            };
            if tx.send(message).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx).map(|bytes| Ok(Frame::data(bytes)))
}

async fn snapshot(manager: &Manager) -> Bytes {
    let value = view::snapshot(&*manager.store.read().await, &manager.hostname);
    sse("snapshot", &value)
}

/// One event in the `text/event-stream` format (JSON holds no newline).
fn sse(event: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_one_line_of_json() {
        let bytes = sse(
            "change",
            &serde_json::json!({"put": [], "delete": ["a\nb"]}),
        );
        let text = std::str::from_utf8(&bytes).unwrap();
        assert_eq!(
            text,
            "event: change\ndata: {\"delete\":[\"a\\nb\"],\"put\":[]}\n\n"
        );
    }
}

//! Calls only the leader serves, made on any manager: a follower sends
//! them to the leader and returns its answer; the leader first waits until
//! its state holds every acknowledged write (a linearizable read).

use std::future::Future;

use shoal_api::pb::control_client::ControlClient;
use tokio::time::Instant;
use tonic::{Request, Response, Status, transport::Channel};

use crate::manager::{Manager, Route, WriteError};

/// A Control client on the leader at `addr`.
pub fn leader_client(manager: &Manager, addr: &str) -> Result<ControlClient<Channel>, Status> {
    let channel = manager
        .channel(addr)
        .map_err(|e| Status::unavailable(e.to_string()))?;
    Ok(ControlClient::new(channel))
}

/// What a forwarded call does, which decides what may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Changes nothing: asking the next leader again is always safe.
    Read,
    /// May have been applied before its connection broke.
    Write,
}

/// Whether the leader went away under the call: it did not answer, or
/// the connection to it closed mid-call (the channel to each manager is
/// kept, so a leader that dies cancels the calls in flight on it).
///
/// A connection torn down mid-stream can also end the call with an HTTP/2
/// error ([`torn`]). A read through a follower failed that way while its
/// leader was being stopped (the `elections` test in CI, 2026-12-03). A
/// read is asked again. A write is not: it may have been applied, and
/// asked again it would meet itself ("exists"); it is answered as
/// unsettled instead.
fn gone(status: &Status, kind: Kind) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Cancelled
    ) || (kind == Kind::Read && torn(status))
}

/// Whether the call ended on an HTTP/2 error of its connection, which
/// tonic reports as `Internal` ("h2 protocol error"): it comes from the
/// transport, never from the leader's answer.
fn torn(status: &Status) -> bool {
    std::error::Error::source(status).is_some_and(|e| e.is::<h2::Error>())
}

/// Makes sure the leader answers `request`: `Some` with the leader's answer
/// (sent by `call`) on a follower, `None` on the leader once a read here is
/// linearizable. While no leader is known (an election, a partition) the
/// call waits for one, and a leader that stops answering is given up for
/// the next, all within `settings.leader_wait`: calls made during an
/// election succeed.
pub async fn to_leader<T, R, F, Fut>(
    manager: &Manager,
    request: &Request<T>,
    kind: Kind,
    call: F,
) -> Result<Option<Response<R>>, Status>
where
    T: Clone,
    F: Fn(ControlClient<Channel>, Request<T>) -> Fut,
    Fut: Future<Output = Result<Response<R>, Status>>,
{
    let deadline = Instant::now() + manager.settings.leader_wait;
    let mut avoid: Option<String> = None;
    // Why an earlier attempt of this write may have been applied.
    let mut lost: Option<String> = None;
    loop {
        match manager.route(deadline, avoid.as_deref()).await? {
            // This manager leads now, and an attempt it forwarded may have
            // been applied: run here, the write would meet that attempt and
            // answer a conflict ("exists") about its own effect.
            Route::Local if let Some(lost) = lost.as_deref() => {
                return Err(WriteError::Unsettled(format!(
                    "{lost}; this manager leads now and cannot tell whether that attempt was applied"
                ))
                .into());
            }
            Route::Local => match manager.linearizable().await {
                Ok(()) => return Ok(None),
                // Leadership moved between the check and the read, or a
                // follower's answer came too late on a loaded host: ask
                // again (the route follows a new leader).
                Err(status) if Instant::now() < deadline => {
                    tracing::debug!(error = %status.message(), "could not confirm leadership; again");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(status) => return Err(status),
            },
            Route::Leader(addr) => {
                let mut forwarded = Request::new(request.get_ref().clone());
                forwarded.set_timeout(deadline.saturating_duration_since(Instant::now()));
                match call(leader_client(manager, &addr)?, forwarded).await {
                    Ok(answer) => return Ok(Some(answer)),
                    Err(status) if let Some(lost) = settles_nothing(&status, lost.as_deref()) => {
                        return Err(WriteError::Unsettled(lost).into());
                    }
                    Err(status) if gone(&status, kind) && Instant::now() < deadline => {
                        tracing::debug!(%addr, error = %status.message(), "the leader did not answer; waiting for the next");
                        if kind == Kind::Write && !never_sent(&status) {
                            lost = Some(format!(
                                "the leader at {addr} did not answer ({})",
                                status.message()
                            ));
                        }
                        avoid = Some(addr);
                    }
                    // Not the leader's `Internal`, which would say the
                    // leader failed: the write may have been applied.
                    Err(status) if kind == Kind::Write && torn(&status) => {
                        return Err(WriteError::Unsettled(format!(
                            "the connection to the leader at {addr} broke during the call ({})",
                            status.message()
                        ))
                        .into());
                    }
                    Err(status)
                        if gone(&status, kind)
                            || status.code() == tonic::Code::DeadlineExceeded =>
                    {
                        return Err(Status::unavailable(format!(
                            "the leader at {addr} does not answer ({}) and no other was elected within {:?}: a quorum of managers must be reachable",
                            status.message(),
                            manager.settings.leader_wait
                        )));
                    }
                    Err(status) => return Err(status),
                }
            }
        }
    }
}

/// Whether a call failed before it left this manager: no connection to
/// the leader could be made (a stopped leader refuses connections). Such an
/// attempt was applied nowhere; a call that failed on an open connection
/// may have been.
fn never_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// A conflict that a write's retry met after an attempt that may have been
/// applied (`lost`) may be with that attempt itself: it settles nothing
/// (as [`crate::manager`]'s proposals after a lost forward; chaos in CI,
/// 2026-12-03: a create through a follower was told "exists" about its
/// own write). Returns why, for an unsettled answer.
fn settles_nothing(status: &Status, lost: Option<&str>) -> Option<String> {
    let lost = lost?;
    matches!(
        status.code(),
        tonic::Code::AlreadyExists | tonic::Code::Aborted | tonic::Code::NotFound
    )
    .then(|| format!("{lost}; the retry then got: {}", status.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_after_a_lost_attempt_settles_nothing() {
        let exists = Status::already_exists("service s3 exists");
        let lost = Some("the leader at 192.0.2.12:2377 did not answer (closed)");
        let why = settles_nothing(&exists, lost).expect("unsettled");
        assert!(
            why.contains("192.0.2.12") && why.contains("exists"),
            "{why}"
        );
        let status = Status::from(WriteError::Unsettled(why));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status
                .message()
                .contains("may or may not have been applied")
        );
        // Without a lost attempt, the conflict is the answer.
        assert!(settles_nothing(&exists, None).is_none());
        // Other answers after a lost attempt are answers too.
        assert!(settles_nothing(&Status::invalid_argument("bad"), lost).is_none());
    }

    /// A leader that refuses connections (stopped) was sent nothing; other
    /// failures of a call may have reached it.
    #[tokio::test]
    async fn a_refused_connection_sent_nothing() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let refused = ControlClient::new(channel)
            .list_secrets(shoal_api::pb::Empty {})
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert!(gone(&refused, Kind::Write));
        assert!(never_sent(&refused), "{refused:?}");

        let torn = Status::from_error(Box::new(h2::Error::from(h2::Reason::INTERNAL_ERROR)));
        assert!(!never_sent(&torn));
        assert!(!never_sent(&Status::unavailable("the connection closed")));
        assert!(!never_sent(&Status::cancelled("Timeout expired")));
    }

    #[test]
    fn a_connection_torn_down_mid_read_is_gone_and_an_answer_is_not() {
        let torn = Status::from_error(Box::new(h2::Error::from(h2::Reason::INTERNAL_ERROR)));
        assert_eq!(torn.code(), tonic::Code::Internal);
        assert!(gone(&torn, Kind::Read));
        // A write may have been applied: not asked again, but answered
        // as unsettled (see `to_leader`).
        assert!(!gone(&torn, Kind::Write));
        assert!(super::torn(&torn));
        for kind in [Kind::Read, Kind::Write] {
            assert!(gone(&Status::unavailable("no answer"), kind));
            assert!(gone(&Status::cancelled("the connection closed"), kind));
            // The leader's own answers are answers.
            let answered = Status::internal("h2 protocol error: a message");
            assert!(!gone(&answered, kind));
            assert!(!super::torn(&answered));
            assert!(!gone(&Status::already_exists("secret exists"), kind));
        }
    }
}

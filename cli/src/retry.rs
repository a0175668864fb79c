//! Calls that meet an election are retried, not failed: a channel wrapper
//! that re-sends a call answered `Unavailable` (no leader yet, a leader that
//! stopped answering) or lost with its connection, with backoff, for up to
//! [`RETRY_BOUND`]. Managers already hold a call ~10 s while a leader is
//! elected; this covers the rest: the manager the CLI talks to restarting,
//! or answering `Unavailable` once its own bound ran out mid-election.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use tonic::{body::Body, transport::Channel};
use tower::{Service, ServiceExt};

/// How long one call is retried before its last answer is returned.
pub const RETRY_BOUND: Duration = Duration::from_secs(15);
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(1);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A [`Channel`] whose calls are retried while the cluster has no leader.
#[derive(Clone)]
pub struct Retrying {
    inner: Channel,
    bound: Duration,
}

impl Retrying {
    pub fn new(inner: Channel) -> Self {
        Self {
            inner,
            bound: RETRY_BOUND,
        }
    }
}

/// Whether an answer says "try again": gRPC's `Unavailable` (code 14),
/// which managers give only when no leader could take the call, unless
/// the manager marked it unsettled: the write may have been applied, and
/// sending it again would apply or refuse a second copy.
fn unavailable(response: &http::Response<Body>) -> bool {
    let headers = response.headers();
    headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"14")
        && !headers.contains_key(shoal_api::UNSETTLED_METADATA)
}

impl Service<http::Request<Body>> for Retrying {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let channel = self.inner.clone();
        let bound = self.bound;
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + bound;
            // Control calls send one small message: keep it to send again.
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let mut pause = FIRST_PAUSE;
            loop {
                let mut request = http::Request::new(Body::new(Full::new(bytes.clone())));
                *request.method_mut() = parts.method.clone();
                *request.uri_mut() = parts.uri.clone();
                *request.version_mut() = parts.version;
                *request.headers_mut() = parts.headers.clone();
                *request.extensions_mut() = parts.extensions.clone();
                let answer = channel.clone().ready().await?.call(request).await;
                let again = match &answer {
                    Ok(response) => unavailable(response),
                    Err(_) => true,
                };
                if !again || tokio::time::Instant::now() + pause >= deadline {
                    return answer.map_err(Into::into);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(headers: &[(&'static str, &'static str)]) -> http::Response<Body> {
        let mut response = http::Response::new(Body::empty());
        for (name, value) in headers {
            response
                .headers_mut()
                .insert(*name, http::HeaderValue::from_static(value));
        }
        response
    }

    #[test]
    fn unavailable_is_retried_unless_the_write_may_have_been_applied() {
        assert!(unavailable(&answer(&[("grpc-status", "14")])));
        assert!(!unavailable(&answer(&[
            ("grpc-status", "14"),
            (shoal_api::UNSETTLED_METADATA, "1"),
        ])));
        assert!(!unavailable(&answer(&[("grpc-status", "6")]))); // AlreadyExists
        assert!(!unavailable(&answer(&[])));
    }
}

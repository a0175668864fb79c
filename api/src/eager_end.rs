//! Requests whose last DATA frame ends their HTTP/2 stream.
//!
//! A tonic request body learns it is done only when polled again after its
//! last message, so hyper sends the message in one DATA frame and then an
//! empty DATA frame to end the stream: for a unary call (every Raft
//! message, every write a client makes) one more frame, often one more TLS
//! record and `writev`, and one more read for the peer. [`EagerEnd`] looks
//! one frame ahead after each message, so hyper sees the end with the last
//! message and sends them as one frame. Nothing else changes: the frames
//! are the same, in the same order.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use http_body::{Frame, SizeHint};
use tonic::codegen::{Bytes, Service, http};

type Polled = Option<Result<Frame<Bytes>, tonic::Status>>;

/// A body that knows it has ended as soon as its inner body does.
pub struct EagerEnd<B> {
    inner: B,
    /// A frame read ahead, returned next.
    ahead: Option<Polled>,
}

impl<B> EagerEnd<B> {
    pub fn new(inner: B) -> Self {
        Self { inner, ahead: None }
    }
}

impl<B> tonic::codegen::Body for EagerEnd<B>
where
    B: tonic::codegen::Body<Data = Bytes, Error = tonic::Status> + Unpin,
{
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Polled> {
        let polled = match self.ahead.take() {
            Some(None) => {
                // Stay ended for a caller that polls again.
                self.ahead = Some(None);
                return Poll::Ready(None);
            }
            Some(polled) => polled,
            None => std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)),
        };
        if polled.is_none() {
            self.ahead = Some(None);
        } else if matches!(&polled, Some(Ok(frame)) if frame.is_data()) {
            // Ready now (the end, or more): keep it for the next poll. Not
            // ready: the stream ends later, with a frame of its own.
            if let Poll::Ready(next) = Pin::new(&mut self.inner).poll_frame(cx) {
                self.ahead = Some(next);
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.ahead, Some(None)) || (self.ahead.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.ahead {
            Some(None) => SizeHint::with_exact(0),
            _ => self.inner.size_hint(),
        }
    }
}

/// A gRPC client service (a tonic `Channel`) whose request bodies are
/// [`EagerEnd`]: `MembershipClient::new(EagerEndService::new(channel))`.
#[derive(Clone, Debug)]
pub struct EagerEndService<S> {
    inner: S,
}

impl<S> EagerEndService<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<http::Request<tonic::body::Body>> for EagerEndService<S>
where
    S: Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        self.inner
            .call(request.map(|body| tonic::body::Body::new(EagerEnd::new(body))))
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::VecDeque, task::Waker};

    use tonic::codegen::Body;

    use super::*;

    /// A body that yields scripted polls: a frame, or Pending (None).
    struct Scripted(VecDeque<Option<Polled>>);

    impl Body for Scripted {
        type Data = Bytes;
        type Error = tonic::Status;
        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Polled> {
            match self.0.pop_front() {
                Some(Some(polled)) => Poll::Ready(polled),
                Some(None) => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn data(text: &'static str) -> Option<Polled> {
        Some(Some(Ok(Frame::data(Bytes::from_static(text.as_bytes())))))
    }

    /// Polls once; returns the data's text ("" for the end, "pending",
    /// "trailers") and whether the body then says it has ended.
    fn step(body: &mut EagerEnd<Scripted>) -> (String, bool) {
        let mut cx = Context::from_waker(Waker::noop());
        let text = match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Pending => "pending".to_owned(),
            Poll::Ready(None) => String::new(),
            Poll::Ready(Some(Ok(frame))) if frame.is_data() => {
                String::from_utf8_lossy(&frame.into_data().unwrap_or_default()).into_owned()
            }
            Poll::Ready(Some(Ok(_))) => "trailers".to_owned(),
            Poll::Ready(Some(Err(status))) => format!("error {}", status.message()),
        };
        (text, body.is_end_stream())
    }

    #[test]
    fn a_unary_body_ends_with_its_message() {
        let mut body = EagerEnd::new(Scripted(VecDeque::from([data("msg")])));
        assert!(!body.is_end_stream());
        assert_eq!(step(&mut body), ("msg".into(), true));
        assert_eq!(step(&mut body), (String::new(), true));
        // Polled past the end, it stays ended.
        assert_eq!(step(&mut body), (String::new(), true));
    }

    #[test]
    fn a_stream_keeps_every_frame_in_order_and_ends_with_its_last() {
        let mut body = EagerEnd::new(Scripted(VecDeque::from([
            data("a"),
            data("b"),
            None, // nothing ready after "b" (met by the look-ahead)
            data("c"),
            None, // nothing ready after "c"
        ])));
        assert_eq!(step(&mut body), ("a".into(), false));
        assert_eq!(step(&mut body), ("b".into(), false));
        assert_eq!(step(&mut body), ("c".into(), false));
        // The stream ends later, with a frame of its own.
        assert_eq!(step(&mut body), (String::new(), true));
        // Frames ready together: the last one read ahead ends the stream.
        let mut body = EagerEnd::new(Scripted(VecDeque::from([data("a"), data("b")])));
        assert_eq!(step(&mut body), ("a".into(), false));
        assert_eq!(step(&mut body), ("b".into(), true));
    }

    #[test]
    fn an_error_read_ahead_is_returned_in_its_turn() {
        let mut body = EagerEnd::new(Scripted(VecDeque::from([
            data("a"),
            Some(Some(Err(tonic::Status::internal("broken")))),
        ])));
        assert_eq!(step(&mut body), ("a".into(), false));
        assert_eq!(step(&mut body), ("error broken".into(), false));
    }
}

//! A failed call, told in full: tonic's status message alone says "http2
//! error" for a connection the transport gave up on, hiding why (a
//! keep-alive ping left unanswered, a reset stream, a size limit). The
//! code and every `source()` below it name the cause.

use std::error::Error;

/// `what: code: message: source: source ...`.
pub fn describe(what: &str, status: &tonic::Status) -> anyhow::Error {
    let mut text = format!("{what}: {:?}: {}", status.code(), status.message());
    let mut source = status.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    anyhow::anyhow!(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Inner;
    impl std::fmt::Display for Inner {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("keep-alive timed out")
        }
    }
    impl Error for Inner {}

    #[test]
    fn every_source_is_named() {
        let status = tonic::Status::from_error(Box::new(Inner));
        let text = describe("creating scale-01792", &status).to_string();
        assert!(text.starts_with("creating scale-01792: "), "{text}");
        assert!(text.contains("keep-alive timed out"), "{text}");
    }
}

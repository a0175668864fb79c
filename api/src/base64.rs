//! Standard base64 (RFC 4648, with padding): how config data is shown, and
//! how Raft entries carry protobuf bytes inside openraft's JSON messages.
//! A thin seam over the `base64` crate so that callers name one engine.

use base64::{Engine, engine::general_purpose::STANDARD};

pub fn encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Text that is not padded standard base64, with where it went wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid base64: {0}")]
pub struct DecodeError(base64::DecodeError);

pub fn decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    STANDARD.decode(text).map_err(DecodeError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors_round_trip() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(input.as_bytes()), output);
            assert_eq!(decode(output).unwrap(), input.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
    }

    #[test]
    fn malformed_text_is_refused_with_the_reason() {
        for bad in ["Zg=", "Z*==", "Zg==Zg==", "Zg"] {
            assert!(decode(bad).is_err(), "{bad:?} decoded");
        }
        let error = decode("Z*==").unwrap_err().to_string();
        assert!(error.contains("Invalid symbol 42, offset 1"), "{error}");
    }
}

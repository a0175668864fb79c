//! Join tokens: `SHTKN-1-<digest>-<secret>`, as Swarm's `SWMTKN-1-…`.
//!
//! The digest is the SHA-256 of the cluster's root CA certificate (DER) in
//! base 36, padded to 50 characters; the secret is 25 random base-36
//! characters. A joining node fetches the CA from the manager it was given
//! and compares digests *before* sending the secret, so a token of another
//! cluster fails with a clear error instead of leaking.

use sha2::{Digest, Sha256};

const PREFIX: &str = "SHTKN";
const FORMAT_VERSION: &str = "1";
const DIGEST_LEN: usize = 50;
const SECRET_LEN: usize = 25;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_digest: String,
    pub secret: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("invalid join token: expected SHTKN-1-<digest>-<secret>")]
    Malformed,
    #[error("invalid join token: format version {0} is not supported (expected 1)")]
    Version(String),
}

impl JoinToken {
    pub fn new(ca_digest: &str, secret: &str) -> Self {
        Self {
            ca_digest: ca_digest.to_owned(),
            secret: secret.to_owned(),
        }
    }

    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let parts: Vec<&str> = text.trim().split('-').collect();
        let [prefix, version, digest, secret] = parts.as_slice() else {
            return Err(TokenError::Malformed);
        };
        if *prefix != PREFIX {
            return Err(TokenError::Malformed);
        }
        if *version != FORMAT_VERSION {
            return Err(TokenError::Version((*version).to_owned()));
        }
        let base36 = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        };
        if digest.len() != DIGEST_LEN
            || secret.len() != SECRET_LEN
            || !base36(digest)
            || !base36(secret)
        {
            return Err(TokenError::Malformed);
        }
        Ok(Self::new(digest, secret))
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{PREFIX}-{FORMAT_VERSION}-{}-{}",
            self.ca_digest, self.secret
        )
    }
}

/// What `init --autolock`, `swarm update --autolock=true` and `swarm
/// unlock-key` print around the unlock key (Docker's words).
pub fn unlock_key_notice(key: &str) -> String {
    format!(
        "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\n\
         command and provide the following key:\n\n    {key}\n\n\
         Please remember to store this key in a password manager, since without it you\n\
         will not be able to restart the manager.\n"
    )
}

/// The digest a token carries for a root CA certificate given in DER.
pub fn ca_digest(cert_der: &[u8]) -> String {
    let hash = Sha256::digest(cert_der);
    let text = to_base36(&hash);
    format!("{text:0>DIGEST_LEN$}")
}

/// A new random token secret.
pub fn new_secret() -> String {
    random_base36(SECRET_LEN)
}

/// `len` random base-36 characters from the kernel's random source.
pub fn random_base36(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).expect("the kernel's random source is available");
        // Rejection sampling keeps the characters uniform.
        for byte in buf {
            if byte < 252 && out.len() < len {
                out.push(ALPHABET[(byte % 36) as usize] as char);
            }
        }
    }
    out
}

/// Big-endian bytes as a base-36 number.
fn to_base36(bytes: &[u8]) -> String {
    let mut digits: Vec<u8> = Vec::new(); // little-endian base-36 digits
    for &byte in bytes {
        let mut carry = byte as u32;
        for digit in digits.iter_mut() {
            let value = *digit as u32 * 256 + carry;
            *digit = (value % 36) as u8;
            carry = value / 36;
        }
        while carry > 0 {
            digits.push((carry % 36) as u8);
            carry /= 36;
        }
    }
    if digits.is_empty() {
        digits.push(0);
    }
    digits
        .iter()
        .rev()
        .map(|&d| char::from_digit(d as u32, 36).unwrap_or('0'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_tokens() {
        let token = JoinToken::new(&ca_digest(b"cert"), &new_secret());
        let text = token.to_string();
        assert!(text.starts_with("SHTKN-1-"));
        assert_eq!(JoinToken::parse(&text), Ok(token.clone()));
        assert_eq!(JoinToken::parse(&format!(" {text}\n")), Ok(token));
        assert_eq!(JoinToken::parse("SWMTKN-1-a-b"), Err(TokenError::Malformed));
        assert_eq!(JoinToken::parse("nonsense"), Err(TokenError::Malformed));
        let v2 = text.replacen("-1-", "-2-", 1);
        assert_eq!(JoinToken::parse(&v2), Err(TokenError::Version("2".into())));
    }

    #[test]
    fn base36_matches_known_values() {
        assert_eq!(to_base36(&[0]), "0");
        assert_eq!(to_base36(&[35]), "z");
        assert_eq!(to_base36(&[1, 0]), "74"); // 256 = 7*36 + 4
        assert_eq!(ca_digest(b"x").len(), 50);
    }
}

//! Sealing values with a 256-bit key: AES-256-GCM (ring).
//!
//! GCM must never see one nonce twice under one key, and a manager seals
//! millions of values over its life, across restarts. Random 96-bit nonces
//! would make that a matter of odds; instead each [`Cipher`] draws a random
//! 128-bit session id when it is made and seals under a session subkey
//! (HKDF-SHA256 of the key with the session id as salt) with a counter as
//! nonce: nonces never repeat within a session, and two sessions share a
//! subkey only if their random ids collide.
//!
//! A sealed value: `[1][session: 16][counter: 8][ciphertext][tag: 16]`. The
//! caller's `context` (what the value is and where it is kept, e.g. the log
//! index) is bound as associated data, so a value moved to another place in
//! a file does not open there.

use std::{
    collections::HashMap,
    sync::{
        RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use ring::{aead, hkdf};

use super::{EncryptionError, SecretKey};

const FORMAT: u8 = 1;
const SESSION_LEN: usize = 16;
const COUNTER_LEN: usize = 8;
const HEADER_LEN: usize = 1 + SESSION_LEN + COUNTER_LEN;
const TAG_LEN: usize = 16;
const SUBKEY_INFO: &[u8] = b"shoal-manager sealed value v1";

type Session = [u8; SESSION_LEN];

pub struct Cipher {
    key: SecretKey,
    session: Session,
    sealing: aead::LessSafeKey,
    counter: AtomicU64,
    /// Subkeys of earlier sessions (earlier runs of this manager), by id.
    others: RwLock<HashMap<Session, aead::LessSafeKey>>,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(…)")
    }
}

fn subkey(key: &SecretKey, session: &Session) -> aead::LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, session).extract(key.as_bytes());
    let okm = prk
        .expand(&[SUBKEY_INFO], &aead::AES_256_GCM)
        // Only fails for an output longer than 255 hashes; ours is 32 bytes.
        .expect("HKDF expands to one AES-256 key");
    aead::LessSafeKey::new(aead::UnboundKey::from(okm))
}

fn nonce(counter: u64) -> aead::Nonce {
    let mut bytes = [0u8; aead::NONCE_LEN];
    bytes[aead::NONCE_LEN - COUNTER_LEN..].copy_from_slice(&counter.to_be_bytes());
    aead::Nonce::assume_unique_for_key(bytes)
}

impl Cipher {
    pub fn new(key: &SecretKey) -> Result<Self, EncryptionError> {
        let mut session = [0u8; SESSION_LEN];
        getrandom::fill(&mut session).map_err(|e| EncryptionError::Random(e.to_string()))?;
        Ok(Self {
            key: key.clone(),
            session,
            sealing: subkey(key, &session),
            counter: AtomicU64::new(0),
            others: RwLock::default(),
        })
    }

    /// Encrypts and authenticates `plaintext`, bound to `context`.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, EncryptionError> {
        let mut buffer = Self::buffer(plaintext.len());
        buffer.extend_from_slice(plaintext);
        self.seal_buffer(context, buffer)
    }

    /// An empty buffer to write a plaintext into for
    /// [`seal_buffer`](Self::seal_buffer), with room for `capacity` bytes
    /// of it: the value is then sealed where it was written, not copied.
    pub fn buffer(capacity: usize) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(HEADER_LEN + capacity + TAG_LEN);
        buffer.resize(HEADER_LEN, 0);
        buffer
    }

    /// Seals, in place, the plaintext written after the start of a
    /// [`buffer`](Self::buffer): the same as [`seal`](Self::seal) of it.
    pub fn seal_buffer(
        &self,
        context: &[u8],
        mut buffer: Vec<u8>,
    ) -> Result<Vec<u8>, EncryptionError> {
        if buffer.len() < HEADER_LEN {
            return Err(EncryptionError::Crypto(
                "a buffer to seal must come from Cipher::buffer".into(),
            ));
        }
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        if counter == u64::MAX {
            return Err(EncryptionError::Crypto(
                "this session sealed 2^64 values: restart the manager".into(),
            ));
        }
        buffer[0] = FORMAT;
        buffer[1..1 + SESSION_LEN].copy_from_slice(&self.session);
        buffer[1 + SESSION_LEN..HEADER_LEN].copy_from_slice(&counter.to_be_bytes());
        let tag = self
            .sealing
            .seal_in_place_separate_tag(
                nonce(counter),
                aead::Aad::from(context),
                &mut buffer[HEADER_LEN..],
            )
            .map_err(|_| EncryptionError::Crypto("value too large to seal".into()))?;
        buffer.extend_from_slice(tag.as_ref());
        Ok(buffer)
    }

    /// The plaintext of a value [`seal`](Self::seal)ed with the same key and
    /// `context`; `what` names it in errors.
    pub fn open(
        &self,
        context: &[u8],
        sealed: &[u8],
        what: &str,
    ) -> Result<Vec<u8>, EncryptionError> {
        let malformed = |problem: &str| EncryptionError::Malformed {
            what: what.to_owned(),
            problem: problem.to_owned(),
        };
        if sealed.len() < HEADER_LEN + TAG_LEN {
            return Err(malformed("too short to be a sealed value"));
        }
        if sealed[0] != FORMAT {
            return Err(malformed(&format!(
                "unknown format {} (not written encrypted by this shoal-manager)",
                sealed[0]
            )));
        }
        let (header, body) = sealed.split_at(HEADER_LEN);
        let session: Session = header[1..1 + SESSION_LEN]
            .try_into()
            .map_err(|_| malformed("bad header"))?;
        let counter = u64::from_be_bytes(
            header[1 + SESSION_LEN..]
                .try_into()
                .map_err(|_| malformed("bad header"))?,
        );
        let mut buffer = body.to_vec();
        let opened = if session == self.session {
            self.sealing
                .open_in_place(nonce(counter), aead::Aad::from(context), &mut buffer)
                .map(|p| p.len())
        } else {
            self.with_session_key(&session, |key| {
                key.open_in_place(nonce(counter), aead::Aad::from(context), &mut buffer)
                    .map(|p| p.len())
            })
        };
        let len = opened.map_err(|_| EncryptionError::CannotDecrypt {
            what: what.to_owned(),
        })?;
        buffer.truncate(len);
        Ok(buffer)
    }

    fn with_session_key<T>(&self, session: &Session, f: impl FnOnce(&aead::LessSafeKey) -> T) -> T {
        if let Some(key) = self
            .others
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(session)
        {
            return f(key);
        }
        let key = subkey(&self.key, session);
        let result = f(&key);
        self.others
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*session, key);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_with_its_key_and_context_only() {
        let key = SecretKey::generate().unwrap();
        let cipher = Cipher::new(&key).unwrap();
        let sealed = cipher.seal(b"log/7", b"the marker 1234").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"marker"));
        assert_eq!(
            cipher.open(b"log/7", &sealed, "entry 7").unwrap(),
            b"the marker 1234"
        );

        // Another session (a restart) with the same key reads it.
        let later = Cipher::new(&key).unwrap();
        assert_eq!(
            later.open(b"log/7", &sealed, "entry 7").unwrap(),
            b"the marker 1234"
        );

        let error = later.open(b"log/8", &sealed, "entry 8").unwrap_err();
        assert!(
            matches!(error, EncryptionError::CannotDecrypt { .. }),
            "{error}"
        );
        let other = Cipher::new(&SecretKey::generate().unwrap()).unwrap();
        let error = other
            .open(b"log/7", &sealed, "entry 7")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("entry 7") && error.contains("another key"),
            "{error}"
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(cipher.open(b"log/7", &flipped, "entry 7").is_err());
    }

    #[test]
    fn a_value_sealed_where_it_was_written_opens_as_any_other() {
        let cipher = Cipher::new(&SecretKey::generate().unwrap()).unwrap();
        let mut buffer = Cipher::buffer(4);
        buffer.extend_from_slice(b"written in place");
        let sealed = cipher.seal_buffer(b"ctx", buffer).unwrap();
        assert_eq!(
            cipher.open(b"ctx", &sealed, "v").unwrap(),
            b"written in place"
        );
        assert_eq!(sealed.len(), HEADER_LEN + 16 + TAG_LEN);
        let error = cipher.seal_buffer(b"ctx", vec![1, 2]).unwrap_err();
        assert!(error.to_string().contains("Cipher::buffer"), "{error}");
    }

    #[test]
    fn no_two_values_share_a_nonce_and_equal_values_differ() {
        let cipher = Cipher::new(&SecretKey::generate().unwrap()).unwrap();
        let a = cipher.seal(b"", b"same").unwrap();
        let b = cipher.seal(b"", b"same").unwrap();
        assert_ne!(a, b);
        assert_ne!(a[..HEADER_LEN], b[..HEADER_LEN]);
    }

    #[test]
    fn plaintext_from_before_encryption_is_named_not_misread() {
        let cipher = Cipher::new(&SecretKey::generate().unwrap()).unwrap();
        let error = cipher
            .open(
                b"",
                br#"{"log_id":{"leader_id":{"term":1,"node_id":42}},"index":3}"#,
                "Raft log entry 3",
            )
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("Raft log entry 3") && error.contains("unknown format"),
            "{error}"
        );
        let error = cipher.open(b"", b"{}", "x").unwrap_err().to_string();
        assert!(error.contains("too short"), "{error}");
    }
}

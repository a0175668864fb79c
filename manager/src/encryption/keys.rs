//! Keys: 256-bit secrets that are wiped from memory when dropped, and the
//! unlock key's text form (`SHKEY-1-…`, as Swarm's `SWMKEY-1-…`).

use zeroize::Zeroize;

use super::EncryptionError;

pub const KEY_LEN: usize = 32;
const UNLOCK_PREFIX: &str = "SHKEY-1-";

/// A 256-bit key (DEK or KEK), wiped from memory when dropped.
#[derive(Clone)]
pub struct SecretKey([u8; KEY_LEN]);

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl SecretKey {
    pub fn generate() -> Result<Self, EncryptionError> {
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).map_err(|e| EncryptionError::Random(e.to_string()))?;
        Ok(Self(key))
    }

    /// A key from exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        // Constant time: a key compared against a guess leaks nothing.
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Eq for SecretKey {}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

/// The cluster's unlock key: the KEK of every manager while autolock is on.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UnlockKey(pub SecretKey);

impl UnlockKey {
    pub fn generate() -> Result<Self, EncryptionError> {
        SecretKey::generate().map(Self)
    }

    /// Reads `SHKEY-1-<base64 of 32 bytes>`; surrounding blanks are ignored.
    pub fn parse(text: &str) -> Result<Self, EncryptionError> {
        let body = text
            .trim()
            .strip_prefix(UNLOCK_PREFIX)
            .ok_or(EncryptionError::MalformedUnlockKey)?;
        let mut padded = body.to_owned();
        while !padded.len().is_multiple_of(4) {
            padded.push('=');
        }
        let mut bytes =
            shoal_api::base64::decode(&padded).map_err(|_| EncryptionError::MalformedUnlockKey)?;
        let key = SecretKey::from_slice(&bytes).ok_or(EncryptionError::MalformedUnlockKey);
        bytes.zeroize();
        padded.zeroize();
        key.map(Self)
    }
}

impl std::fmt::Display for UnlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = shoal_api::base64::encode(self.0.as_bytes());
        let shown = write!(f, "{UNLOCK_PREFIX}{}", text.trim_end_matches('='));
        text.zeroize();
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlock_key_reads_back_from_its_text() {
        let key = UnlockKey::generate().unwrap();
        let text = key.to_string();
        assert!(text.starts_with("SHKEY-1-"), "{text}");
        assert!(!text.contains('='), "{text}");
        assert_eq!(UnlockKey::parse(&format!("  {text}\n")).unwrap(), key);
    }

    #[test]
    fn a_malformed_unlock_key_is_refused_with_its_expected_form() {
        let key = UnlockKey::generate().unwrap().to_string();
        for bad in [
            "",
            "SHKEY-1-",
            "SWMKEY-1-AAAA",
            &key.replace("SHKEY-1-", "SHKEY-2-"),
            &key[..key.len() - 2],
            &format!("{key}AAAA"),
            "SHKEY-1-!!!!",
        ] {
            let error = UnlockKey::parse(bad).unwrap_err().to_string();
            assert!(error.contains("SHKEY-1-"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn keys_compare_by_value_and_never_print() {
        let a = SecretKey::generate().unwrap();
        assert_eq!(a, SecretKey::from_slice(a.as_bytes()).unwrap());
        assert_ne!(a, SecretKey::generate().unwrap());
        assert!(SecretKey::from_slice(&[0; 31]).is_none());
        assert_eq!(format!("{a:?}"), "SecretKey(…)");
    }
}

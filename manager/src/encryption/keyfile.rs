//! `keys.json`: this manager's DEK, wrapped (sealed) by the KEK, and the
//! KEK itself unless autolock is on.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{Cipher, EncryptionError, SecretKey, UnlockKey, files};

pub const FILE_NAME: &str = "keys.json";
const FORMAT: u32 = 1;
/// What the DEK's seal is bound to.
const DEK_CONTEXT: &[u8] = b"data-encryption key";

#[derive(Serialize, Deserialize)]
struct Stored {
    format: u32,
    /// The DEK sealed with the KEK, base64.
    dek: String,
    /// The KEK, base64; absent while autolock is on (the unlock key is it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kek: Option<String>,
}

/// The key file of one data directory.
#[derive(Debug, Clone)]
pub struct KeyFile {
    path: PathBuf,
}

/// What `keys.json` holds: how to get the DEK.
pub enum Wrapped {
    /// The KEK is in the file: no one needs to be asked.
    Unlocked(SecretKey),
    /// Autolock: only the unlock key opens the DEK.
    Locked(WrappedDek),
}

/// The sealed DEK, waiting for its KEK.
pub struct WrappedDek {
    sealed: Vec<u8>,
}

impl WrappedDek {
    /// The DEK, if `kek` is the key it was wrapped with.
    pub fn open(&self, kek: &SecretKey) -> Result<SecretKey, EncryptionError> {
        let cipher = Cipher::new(kek)?;
        let mut bytes = cipher
            .open(DEK_CONTEXT, &self.sealed, "the data-encryption key")
            .map_err(|_| EncryptionError::WrongKey)?;
        let key = SecretKey::from_slice(&bytes).ok_or(EncryptionError::WrongKey);
        zeroize::Zeroize::zeroize(&mut bytes);
        key
    }
}

impl KeyFile {
    pub fn in_dir(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Writes `dek` wrapped by the unlock key, or (autolock off) by a new
    /// random KEK stored beside it. Replaces the file at once.
    pub fn write(&self, dek: &SecretKey, unlock: Option<&UnlockKey>) -> Result<()> {
        let local;
        let kek = match unlock {
            Some(key) => &key.0,
            None => {
                local = SecretKey::generate()?;
                &local
            }
        };
        let sealed = Cipher::new(kek)?.seal(DEK_CONTEXT, dek.as_bytes())?;
        let stored = Stored {
            format: FORMAT,
            dek: shoal_api::base64::encode(&sealed),
            kek: unlock
                .is_none()
                .then(|| shoal_api::base64::encode(kek.as_bytes())),
        };
        files::write_private(&self.path, &serde_json::to_vec_pretty(&stored)?)
    }

    pub fn read(&self) -> Result<Wrapped> {
        let path = self.path.display();
        let bytes = std::fs::read(&self.path).with_context(|| format!("reading {path}"))?;
        let stored: Stored =
            serde_json::from_slice(&bytes).with_context(|| format!("{path} is damaged"))?;
        if stored.format != FORMAT {
            bail!(
                "{path}: key file format {} is not supported (expected {FORMAT})",
                stored.format
            );
        }
        let sealed = shoal_api::base64::decode(&stored.dek)
            .with_context(|| format!("{path}: the wrapped data key is damaged"))?;
        let wrapped = WrappedDek { sealed };
        match stored.kek {
            None => Ok(Wrapped::Locked(wrapped)),
            Some(text) => {
                let kek = shoal_api::base64::decode(&text)
                    .ok()
                    .and_then(|b| SecretKey::from_slice(&b))
                    .with_context(|| format!("{path}: the key-encryption key is damaged"))?;
                let dek = wrapped.open(&kek).with_context(|| {
                    format!("{path}: its key-encryption key does not open its data key")
                })?;
                Ok(Wrapped::Unlocked(dek))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_autolock_the_file_opens_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::in_dir(dir.path());
        let dek = SecretKey::generate().unwrap();
        file.write(&dek, None).unwrap();
        let Wrapped::Unlocked(read) = file.read().unwrap() else {
            panic!("no autolock: the KEK is in the file");
        };
        assert_eq!(read, dek);
        let text = std::fs::read(file.path()).unwrap();
        assert!(!contains(&text, &shoal_api::base64::encode(dek.as_bytes())));
    }

    #[test]
    fn with_autolock_only_the_unlock_key_opens_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::in_dir(dir.path());
        let dek = SecretKey::generate().unwrap();
        let unlock = UnlockKey::generate().unwrap();
        file.write(&dek, Some(&unlock)).unwrap();
        let text = std::fs::read(file.path()).unwrap();
        assert!(!contains(
            &text,
            &shoal_api::base64::encode(unlock.0.as_bytes())
        ));
        assert!(
            !contains(&text, "kek"),
            "the KEK is never written with autolock"
        );
        let Wrapped::Locked(wrapped) = file.read().unwrap() else {
            panic!("autolock: the file alone does not open");
        };
        assert_eq!(wrapped.open(&unlock.0).unwrap(), dek);
        let wrong = UnlockKey::generate().unwrap();
        let error = wrapped.open(&wrong.0).unwrap_err().to_string();
        assert_eq!(error, "invalid key: it does not unlock this manager's data");
    }

    #[test]
    fn a_damaged_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::in_dir(dir.path());
        std::fs::write(file.path(), b"{").unwrap();
        let error = format!("{:#}", file.read().err().unwrap());
        assert!(error.contains("keys.json is damaged"), "{error}");
        std::fs::write(file.path(), br#"{"format":2,"dek":""}"#).unwrap();
        let error = format!("{:#}", file.read().err().unwrap());
        assert!(error.contains("format 2"), "{error}");
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }
}

//! The data key a starting manager seals its files with: made new for a
//! new manager, read back (or waited for, when locked) on a restart.

use std::path::Path;

use anyhow::{Result, bail};

use super::{KeyFile, SecretKey, UnlockKey, keyfile::Wrapped, locked};

/// How this start relates to the data directory.
pub enum Start {
    /// A new manager (init or join); `autolock` wraps its key with a new
    /// unlock key right away.
    New { autolock: bool },
    /// A restart from the data directory.
    Restart,
}

pub struct DataKeys {
    pub dek: SecretKey,
    /// The unlock key the DEK is wrapped with; None: a local KEK.
    pub unlock: Option<UnlockKey>,
    pub file: KeyFile,
}

/// The data key of the manager in `data_dir`. A locked one (autolock) is
/// unlocked through `socket` first: this waits until someone gives the key.
pub async fn prepare(data_dir: &Path, start: Start, socket: Option<&Path>) -> Result<DataKeys> {
    let file = KeyFile::in_dir(data_dir);
    match start {
        Start::New { autolock } => {
            let dek = SecretKey::generate()?;
            let unlock = if autolock {
                Some(UnlockKey::generate()?)
            } else {
                None
            };
            file.write(&dek, unlock.as_ref())?;
            Ok(DataKeys { dek, unlock, file })
        }
        Start::Restart if !file.exists() => bail!(
            "{} holds Raft data written in plaintext by a shoal-manager from before encryption at rest \
             (it has no {}): this manager cannot use it. Remove it from the cluster \
             (`shoal node demote`, `shoal node rm`), empty the directory and join again",
            data_dir.display(),
            super::keyfile::FILE_NAME
        ),
        Start::Restart => match file.read()? {
            Wrapped::Unlocked(dek) => Ok(DataKeys {
                dek,
                unlock: None,
                file,
            }),
            Wrapped::Locked(wrapped) => {
                let (dek, unlock) = locked::wait_for_unlock(socket, wrapped).await?;
                Ok(DataKeys {
                    dek,
                    unlock: Some(unlock),
                    file,
                })
            }
        },
    }
}

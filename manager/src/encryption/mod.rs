//! Encryption at rest, as swarmkit's Raft DEK/KEK.
//!
//! Every manager has its own data-encryption key (DEK, 256 random bits)
//! that seals everything it writes about the cluster: each Raft log entry,
//! each state-file object and each snapshot ([`sealed::Cipher`], used by
//! `raft::log_store` and `raft::state_machine`). The DEK sits in the data
//! directory's `keys.json` wrapped by a key-encryption key (KEK):
//!
//! - without autolock the KEK is a random key stored beside it (the file is
//!   `0600`): copies of the log and state files, backups and leaked disks
//!   hold nothing readable, though root on the host can still read both;
//! - with autolock the KEK is the cluster's unlock key, kept only in the
//!   replicated (and so itself sealed) Cluster object and by the operator.
//!   A restarted manager serves nothing until `shoal swarm unlock` gives it
//!   ([`locked`]); when the key rotates or autolock toggles, every manager
//!   re-wraps its DEK ([`rewrap`]) — the log is never re-encrypted.
//!
//! What is left in plaintext carries no object data: Raft's vote, committed
//! and purged ids, the applied id and membership (ids and addresses), the
//! snapshot's metadata, and `manager.json` (this manager's Raft id and
//! address).

pub mod data_keys;
pub mod files;
pub mod keyfile;
pub mod keys;
pub mod locked;
pub mod rewrap;
pub mod sealed;

pub use keyfile::KeyFile;
pub use keys::{SecretKey, UnlockKey};
pub use sealed::Cipher;

#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    /// AEAD refused: another key sealed it, or the bytes were changed.
    #[error("cannot decrypt {what}: it was sealed with another key, or it is damaged")]
    CannotDecrypt { what: String },
    #[error("cannot decrypt {what}: {problem}")]
    Malformed { what: String, problem: String },
    #[error("invalid unlock key: expected SHKEY-1-<key>, as `shoal swarm unlock-key` prints it")]
    MalformedUnlockKey,
    #[error("invalid key: it does not unlock this manager's data")]
    WrongKey,
    #[error("random source: {0}")]
    Random(String),
    #[error("{0}")]
    Crypto(String),
}

#[cfg(test)]
mod tests;

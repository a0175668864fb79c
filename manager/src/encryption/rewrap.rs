//! Keeps this manager's DEK wrapped by the cluster's current unlock key:
//! when autolock is turned on or off or the key rotates (a change to the
//! replicated Cluster object), `keys.json` is rewritten with the DEK under
//! the new KEK. Nothing else changes: the log and state stay sealed by the
//! same DEK.
//!
//! A manager that was down during a rotation still has its DEK under the
//! old key: it is unlocked with that one, and re-wraps as soon as it has
//! applied the change (as in Swarm: keep the previous key for a while).

use std::time::Duration;

use shoal_api::pb::Cluster;

use super::{KeyFile, SecretKey, UnlockKey};
use crate::store::Store;

/// The unlock key `cluster` asks managers to wrap their DEK with (None:
/// autolock is off, each manager keeps a local KEK).
pub fn unlock_key_of(cluster: &Cluster) -> Option<UnlockKey> {
    let on = cluster.spec.as_ref().is_some_and(|s| s.autolock_managers);
    if !on {
        return None;
    }
    let key = SecretKey::from_slice(&cluster.manager_unlock_key).map(UnlockKey);
    if key.is_none() {
        tracing::error!("autolock is on but the cluster's unlock key is not 32 bytes: ignored");
    }
    key
}

/// Runs while the manager runs. `wrapped_with` is the key `file` holds the
/// DEK under now.
pub async fn follow_cluster(
    store: Store,
    file: KeyFile,
    dek: SecretKey,
    mut wrapped_with: Option<UnlockKey>,
) {
    let mut applied = store.applied();
    loop {
        let wanted = store.read().await.cluster.as_ref().map(unlock_key_of);
        // No Cluster object yet (a joining manager still catching up): wait.
        if let Some(wanted) = wanted
            && wanted != wrapped_with
        {
            let (f, d, w) = (file.clone(), dek.clone(), wanted.clone());
            let outcome = match tokio::task::spawn_blocking(move || f.write(&d, w.as_ref())).await {
                Ok(written) => written.map_err(|e| format!("{e:#}")),
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(()) => {
                    tracing::info!(
                        autolock = wanted.is_some(),
                        "the data-encryption key is wrapped with the cluster's new key"
                    );
                    wrapped_with = wanted;
                }
                Err(error) => {
                    tracing::error!(%error, path = %file.path().display(), "re-wrapping the data-encryption key; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}

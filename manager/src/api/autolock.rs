//! The Control calls of autolock: `shoal swarm update --autolock`, `shoal
//! swarm unlock-key [--rotate]`. They change the replicated Cluster object;
//! every manager then re-wraps its data key (`encryption::rewrap`). Called
//! on the leader (the Control service forwards them there first).

use shoal_api::pb::{Cluster, UnlockKeyResponse, UpdateClusterRequest};
use tonic::Status;

use crate::{
    encryption::{UnlockKey, rewrap::unlock_key_of},
    manager::Manager,
    store::{Batch, State},
};

/// Docker's words.
pub const NO_UNLOCK_KEY: &str = "no unlock key is set";
pub const CANNOT_ROTATE: &str = "cannot rotate because autolock is not turned on";

fn cluster_of(state: &State) -> Result<Cluster, Status> {
    state
        .cluster
        .clone()
        .ok_or_else(|| Status::unavailable("the cluster is not initialised"))
}

fn new_key() -> Result<UnlockKey, Status> {
    UnlockKey::generate().map_err(|e| Status::internal(e.to_string()))
}

/// Applies the settings `request` gives; the others stay.
pub async fn update_cluster(
    manager: &Manager,
    request: &UpdateClusterRequest,
) -> Result<(), Status> {
    let Some(autolock) = request.autolock_managers else {
        return Ok(());
    };
    manager
        .update(|state| -> Result<_, Status> {
            let mut cluster = cluster_of(state)?;
            let spec = cluster.spec.get_or_insert_default();
            if spec.autolock_managers == autolock {
                return Ok(None);
            }
            spec.autolock_managers = autolock;
            cluster.manager_unlock_key = if autolock {
                new_key()?.0.as_bytes().to_vec()
            } else {
                Vec::new()
            };
            let mut batch = Batch::default();
            batch.put_cluster(cluster);
            Ok(Some((batch, ())))
        })
        .await?;
    Ok(())
}

pub async fn get_unlock_key(manager: &Manager) -> Result<UnlockKeyResponse, Status> {
    let state = manager.store.read().await;
    let key = unlock_key_of(&cluster_of(&state)?)
        .ok_or_else(|| Status::failed_precondition(NO_UNLOCK_KEY))?;
    Ok(UnlockKeyResponse {
        unlock_key: key.to_string(),
    })
}

pub async fn rotate_unlock_key(manager: &Manager) -> Result<UnlockKeyResponse, Status> {
    let key = manager
        .update(|state| -> Result<_, Status> {
            let mut cluster = cluster_of(state)?;
            if unlock_key_of(&cluster).is_none() {
                return Err(Status::failed_precondition(CANNOT_ROTATE));
            }
            let key = new_key()?;
            cluster.manager_unlock_key = key.0.as_bytes().to_vec();
            let mut batch = Batch::default();
            batch.put_cluster(cluster);
            Ok(Some((batch, key)))
        })
        .await?
        .ok_or_else(|| Status::internal("the rotation wrote nothing"))?;
    Ok(UnlockKeyResponse {
        unlock_key: key.to_string(),
    })
}

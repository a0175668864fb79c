//! `secret` and `config` create|ls|update|rm on the leader. Both are named,
//! labelled, immutable content: only their labels change, and neither is
//! removed while a service uses it. Secret data never leaves the managers
//! through the control API.

use shoal_api::pb::{
    Config, ConfigList, ConfigSpec, Empty, Kind, Meta, Secret, SecretList, SecretSpec, Service,
    UpdateConfigRequest, UpdateSecretRequest,
};
use tonic::Status;

use super::control::{meta_id, not_found, validate_name};
use crate::{
    manager::Manager,
    store::{Batch, State},
};

/// What secrets and configs have in common: a name, labels and content.
trait FileSpec {
    fn name(&self) -> &str;
    fn data(&self) -> &[u8];
    fn labels(&self) -> &std::collections::BTreeMap<String, String>;
    fn labels_mut(&mut self) -> &mut std::collections::BTreeMap<String, String>;
    fn template_driver(&self) -> &str;
}

macro_rules! file_spec {
    ($ty:ty) => {
        impl FileSpec for $ty {
            fn name(&self) -> &str {
                &self.name
            }
            fn data(&self) -> &[u8] {
                &self.data
            }
            fn labels(&self) -> &std::collections::BTreeMap<String, String> {
                &self.labels
            }
            fn labels_mut(&mut self) -> &mut std::collections::BTreeMap<String, String> {
                &mut self.labels
            }
            fn template_driver(&self) -> &str {
                &self.template_driver
            }
        }
    };
}
file_spec!(SecretSpec);
file_spec!(ConfigSpec);

/// Secrets and configs keep their name and content for life; new content
/// needs a new name (services then move to it with an update). The spec
/// to store with `wanted`'s labels, or None when nothing changes.
fn relabelled<S: FileSpec>(kind: &str, mut current: S, wanted: &S) -> Result<Option<S>, Status> {
    let name = current.name().to_owned();
    if !wanted.name().is_empty() && wanted.name() != name {
        return Err(Status::invalid_argument(format!(
            "a {kind} cannot be renamed ({name})"
        )));
    }
    if !wanted.data().is_empty() && wanted.data() != current.data() {
        return Err(Status::failed_precondition(format!(
            "{kind} {name}: its content changed, but {kind}s are immutable (only labels can change): \
             give the new content a new name, e.g. {name}_v2, and point the services at it"
        )));
    }
    if !wanted.data().is_empty() && wanted.template_driver() != current.template_driver() {
        return Err(Status::failed_precondition(format!(
            "{kind} {name}: its template driver cannot change ({:?} to {:?}): give it a new name",
            current.template_driver(),
            wanted.template_driver()
        )));
    }
    if current.labels() == wanted.labels() {
        return Ok(None);
    }
    *current.labels_mut() = wanted.labels().clone();
    Ok(Some(current))
}

/// Changes a secret's labels (its content is immutable).
pub(super) async fn update_secret(
    manager: &Manager,
    request: UpdateSecretRequest,
) -> Result<Secret, Status> {
    let spec = request.spec.unwrap_or_default();
    let secret = manager
        .update(|state| -> Result<_, Status> {
            let mut secret = state
                .secrets
                .get(&request.id)
                .cloned()
                .ok_or_else(|| not_found("secret", &request.id))?;
            let current = secret.spec.clone().unwrap_or_default();
            let Some(next) = relabelled("secret", current, &spec)? else {
                return Ok(Some((Batch::default(), secret)));
            };
            secret.spec = Some(next);
            let mut batch = Batch::default();
            batch.put_secret(secret.clone());
            Ok(Some((batch, secret)))
        })
        .await?
        .unwrap_or_default();
    Ok(without_data(secret))
}

/// Changes a config's labels (its content is immutable).
pub(super) async fn update_config(
    manager: &Manager,
    request: UpdateConfigRequest,
) -> Result<Config, Status> {
    let spec = request.spec.unwrap_or_default();
    let config = manager
        .update(|state| -> Result<_, Status> {
            let mut config = state
                .configs
                .get(&request.id)
                .cloned()
                .ok_or_else(|| not_found("config", &request.id))?;
            let current = config.spec.clone().unwrap_or_default();
            let Some(next) = relabelled("config", current, &spec)? else {
                return Ok(Some((Batch::default(), config)));
            };
            config.spec = Some(next);
            let mut batch = Batch::default();
            batch.put_config(config.clone());
            Ok(Some((batch, config)))
        })
        .await?
        .unwrap_or_default();
    Ok(config)
}

/// Creates a secret under a name no other secret has.
pub(super) async fn create_secret(manager: &Manager, spec: SecretSpec) -> Result<Secret, Status> {
    validate_name("secret", &spec.name)?;
    super::validate::templating("secret", &spec.name, &spec.template_driver, &spec.data)?;
    manager.settings.limits.check_secret(&spec)?;
    let secret = manager
        .update(|state| -> Result<_, Status> {
            if state
                .secrets
                .values()
                .any(|s| s.spec.as_ref().is_some_and(|x| x.name == spec.name))
            {
                return Err(Status::already_exists(format!(
                    "secret {} already exists",
                    spec.name
                )));
            }
            let secret = Secret {
                meta: Some(Meta {
                    id: shoal_api::new_id(),
                    ..Default::default()
                }),
                spec: Some(spec.clone()),
            };
            let mut batch = Batch::default();
            batch.put_secret(secret.clone());
            Ok(Some((batch, secret)))
        })
        .await?
        .unwrap_or_default();
    let stored = manager
        .store
        .read()
        .await
        .secrets
        .get(meta_id(&secret.meta))
        .cloned()
        .unwrap_or(secret);
    Ok(without_data(stored))
}

/// Every secret (without its data).
pub(super) async fn list_secrets(manager: &Manager) -> Result<SecretList, Status> {
    let state = manager.store.read().await;
    let secrets = state.secrets.values().cloned().map(without_data).collect();
    Ok(SecretList { secrets })
}

/// Removes a secret that no service uses.
pub(super) async fn remove_secret(manager: &Manager, id: String) -> Result<Empty, Status> {
    manager
        .update(|state| -> Result<_, Status> {
            let secret = state
                .secrets
                .get(&id)
                .ok_or_else(|| not_found("secret", &id))?;
            refuse_if_in_use(
                state,
                "secret",
                secret.spec.as_ref().map(|s| s.name.as_str()),
                |c| c.secrets.iter().any(|r| r.secret_id == id),
            )?;
            let mut batch = Batch::default();
            batch.delete(
                Kind::Secret,
                &id,
                secret.meta.as_ref().map(|m| m.version).unwrap_or(0),
            );
            Ok(Some((batch, ())))
        })
        .await?;
    Ok(Empty {})
}

/// Creates a config under a name no other config has.
pub(super) async fn create_config(manager: &Manager, spec: ConfigSpec) -> Result<Config, Status> {
    validate_name("config", &spec.name)?;
    super::validate::templating("config", &spec.name, &spec.template_driver, &spec.data)?;
    manager.settings.limits.check_config(&spec)?;
    let config = manager
        .update(|state| -> Result<_, Status> {
            if state
                .configs
                .values()
                .any(|c| c.spec.as_ref().is_some_and(|x| x.name == spec.name))
            {
                return Err(Status::already_exists(format!(
                    "config {} already exists",
                    spec.name
                )));
            }
            let config = Config {
                meta: Some(Meta {
                    id: shoal_api::new_id(),
                    ..Default::default()
                }),
                spec: Some(spec.clone()),
            };
            let mut batch = Batch::default();
            batch.put_config(config.clone());
            Ok(Some((batch, config)))
        })
        .await?
        .unwrap_or_default();
    let stored = manager
        .store
        .read()
        .await
        .configs
        .get(meta_id(&config.meta))
        .cloned()
        .unwrap_or(config);
    Ok(stored)
}

/// Every config.
pub(super) async fn list_configs(manager: &Manager) -> Result<ConfigList, Status> {
    let state = manager.store.read().await;
    Ok(ConfigList {
        configs: state.configs.values().cloned().collect(),
    })
}

/// Removes a config that no service uses.
pub(super) async fn remove_config(manager: &Manager, id: String) -> Result<Empty, Status> {
    manager
        .update(|state| -> Result<_, Status> {
            let config = state
                .configs
                .get(&id)
                .ok_or_else(|| not_found("config", &id))?;
            refuse_if_in_use(
                state,
                "config",
                config.spec.as_ref().map(|s| s.name.as_str()),
                |c| c.configs.iter().any(|r| r.config_id == id),
            )?;
            let mut batch = Batch::default();
            batch.delete(
                Kind::Config,
                &id,
                config.meta.as_ref().map(|m| m.version).unwrap_or(0),
            );
            Ok(Some((batch, ())))
        })
        .await?;
    Ok(Empty {})
}

fn container_of(service: &Service) -> Option<&shoal_api::pb::ContainerSpec> {
    service.spec.as_ref()?.task.as_ref()?.container.as_ref()
}

/// Refuses to remove a secret or config that services still use, naming them.
fn refuse_if_in_use(
    state: &State,
    kind: &str,
    name: Option<&str>,
    uses: impl Fn(&shoal_api::pb::ContainerSpec) -> bool,
) -> Result<(), Status> {
    let users: Vec<&str> = state
        .services
        .values()
        .filter(|s| container_of(s).is_some_and(&uses))
        .map(|s| s.spec.as_ref().map(|x| x.name.as_str()).unwrap_or(""))
        .collect();
    if users.is_empty() {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "{kind} {} is in use by the following service: {}",
        name.unwrap_or(""),
        users.join(", ")
    )))
}

/// Secret data never leaves the managers through the control API.
fn without_data(mut secret: Secret) -> Secret {
    if let Some(spec) = secret.spec.as_mut() {
        spec.data.clear();
    }
    secret
}

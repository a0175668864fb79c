//! The store's operations as the checker sees them: each call to the
//! control API becomes an [`Operation`] with its invoke and complete times
//! and its outcome (definite, or unknown when no answer came).

use std::{collections::BTreeMap, sync::Mutex, time::Instant};

use shoal_api::pb::{
    ContainerSpec, Empty, IdRequest, SecretSpec, ServiceMode, ServiceSpec, TaskSpec,
    UpdateSecretRequest, UpdateServiceRequest,
};
use tonic::{Code, Status};

use crate::{
    control::Client,
    linearize::Operation,
    model::{Input, Output},
};

/// The label each write sets to its own value.
pub const VALUE_LABEL: &str = "chaos.v";

/// Services or secrets: the two kinds of named objects written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Service,
    Secret,
}

impl Kind {
    pub fn key(self, name: &str) -> String {
        match self {
            Kind::Service => format!("service/{name}"),
            Kind::Secret => format!("secret/{name}"),
        }
    }
}

/// The history of every client, with times from one clock.
pub struct Recorder {
    pub start: Instant,
    ops: Mutex<Vec<Operation>>,
}

impl Recorder {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            ops: Mutex::new(Vec::new()),
        }
    }

    pub fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_micros() as u64
    }

    pub fn push(&self, op: Operation) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    pub fn history(&self) -> Vec<Operation> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How a call ended, for the model: an answer, an error that proves the
/// call did nothing (a refused argument), or no answer (unknown).
pub enum Answer {
    Done(Output),
    Refused(String),
    Unknown(String),
}

/// Whether a failed call may still have taken effect. Unavailable and
/// the like can come after the leader committed (its answer was lost).
fn classify(status: &Status) -> Answer {
    match status.code() {
        Code::AlreadyExists => Answer::Done(Output::Exists),
        Code::NotFound => Answer::Done(Output::NotFound),
        Code::InvalidArgument | Code::FailedPrecondition | Code::PermissionDenied => {
            Answer::Refused(status.message().to_owned())
        }
        _ => Answer::Unknown(format!("{:?}: {}", status.code(), status.message())),
    }
}

fn service_spec(name: &str, value: u64) -> ServiceSpec {
    ServiceSpec {
        name: name.to_owned(),
        labels: BTreeMap::from([(VALUE_LABEL.to_owned(), value.to_string())]),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "shoal/echo:1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: ServiceMode::Replicated as i32,
        // The store is what is under test: no task, no container.
        replicas: 0,
        ..Default::default()
    }
}

fn secret_spec(name: &str, value: u64, data: bool) -> SecretSpec {
    SecretSpec {
        name: name.to_owned(),
        labels: BTreeMap::from([(VALUE_LABEL.to_owned(), value.to_string())]),
        data: if data { b"chaos".to_vec() } else { Vec::new() },
        ..Default::default()
    }
}

/// Runs one write or single-name call; the answer for the model.
pub async fn call(client: &mut Client, kind: Kind, name: &str, input: &Input) -> Answer {
    let result = match (kind, input) {
        (Kind::Service, Input::Create { value }) => client
            .create_service(service_spec(name, *value))
            .await
            .map(|r| Output::Created {
                id: r.into_inner().meta.map(|m| m.id).unwrap_or_default(),
            }),
        (Kind::Service, Input::Update { id, value }) => client
            .update_service(UpdateServiceRequest {
                id: id.clone(),
                version: 0,
                spec: Some(service_spec(name, *value)),
                rollback: false,
            })
            .await
            .map(|_| Output::Updated),
        (Kind::Service, Input::Remove { id }) => client
            .remove_service(IdRequest { id: id.clone() })
            .await
            .map(|_| Output::Removed),
        (Kind::Secret, Input::Create { value }) => client
            .create_secret(secret_spec(name, *value, true))
            .await
            .map(|r| Output::Created {
                id: r.into_inner().meta.map(|m| m.id).unwrap_or_default(),
            }),
        (Kind::Secret, Input::Update { id, value }) => client
            .update_secret(UpdateSecretRequest {
                id: id.clone(),
                spec: Some(secret_spec(name, *value, false)),
            })
            .await
            .map(|_| Output::Updated),
        (Kind::Secret, Input::Remove { id }) => client
            .remove_secret(IdRequest { id: id.clone() })
            .await
            .map(|_| Output::Removed),
        (_, Input::Read) => {
            return Answer::Refused("a read goes through read_all".into());
        }
    };
    match result {
        Ok(output) => Answer::Done(output),
        Err(status) => classify(&status),
    }
}

/// Lists every object of `kind`: (id, value) by name, for the names that
/// carry a value label. Err: the read failed (a failed read changes
/// nothing and is left out of the history).
pub async fn read_all(
    client: &mut Client,
    kind: Kind,
) -> Result<BTreeMap<String, (String, u64)>, Answer> {
    let labelled = |name: &str, id: String, labels: &BTreeMap<String, String>| {
        let value = labels.get(VALUE_LABEL)?.parse().ok()?;
        Some((name.to_owned(), (id, value)))
    };
    match kind {
        Kind::Service => match client.list_services(Empty {}).await {
            Ok(list) => Ok(list
                .into_inner()
                .services
                .into_iter()
                .filter_map(|s| s.service)
                .filter_map(|s| {
                    let spec = s.spec?;
                    labelled(&spec.name, s.meta?.id, &spec.labels)
                })
                .collect()),
            Err(status) => Err(classify(&status)),
        },
        Kind::Secret => match client.list_secrets(Empty {}).await {
            Ok(list) => Ok(list
                .into_inner()
                .secrets
                .into_iter()
                .filter_map(|s| {
                    let spec = s.spec?;
                    labelled(&spec.name, s.meta?.id, &spec.labels)
                })
                .collect()),
            Err(status) => Err(classify(&status)),
        },
    }
}

/// An operation's record once its answer (or none) is in.
pub fn record(
    recorder: &Recorder,
    client: usize,
    key: String,
    input: Input,
    answer: &Answer,
    invoked: Instant,
) {
    let (output, complete) = match answer {
        Answer::Done(output) => (output.clone(), Some(recorder.micros(Instant::now()))),
        // Proven to have done nothing: not part of the history.
        Answer::Refused(_) => return,
        Answer::Unknown(_) => (Output::Unknown, None),
    };
    recorder.push(Operation {
        client,
        key,
        input,
        output,
        invoke: recorder.micros(invoked),
        complete,
    });
}

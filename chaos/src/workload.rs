//! The clients that write to the store without pause and read it back:
//! creates, updates and removes of services and secrets by name, and lists
//! of each kind, every call recorded for the linearizability check.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    control::Manager,
    model::{Input, Output},
    rng::Rng,
    store_ops::{self, Answer, Kind, Recorder},
};

/// Names each kind is written under: few, so that clients contend.
pub const SERVICES: usize = 4;
pub const SECRETS: usize = 3;
/// The prober's own secret: its writes time failovers.
pub const PROBE: &str = "chaos-probe";

/// The names clients write to.
pub fn names(kind: Kind) -> Vec<String> {
    match kind {
        Kind::Service => (0..SERVICES).map(|i| format!("chaos-s{i}")).collect(),
        Kind::Secret => (0..SECRETS).map(|i| format!("chaos-k{i}")).collect(),
    }
}

/// The names a list is checked for: the prober's too.
fn read_names(kind: Kind) -> Vec<String> {
    let mut all = names(kind);
    if kind == Kind::Secret {
        all.push(PROBE.to_owned());
    }
    all
}

/// Counts for the report.
#[derive(Default)]
pub struct Counters {
    pub calls: AtomicU64,
    pub unknown: AtomicU64,
    pub refused: AtomicU64,
}

pub struct Client {
    pub id: usize,
    pub sockets: Vec<(String, PathBuf)>,
    pub timeout: Duration,
    pub seed: u64,
    /// Only writes to [`PROBE`] (the failover prober).
    pub prober: bool,
}

/// Runs a client until `stop`.
pub async fn run(
    client: Client,
    recorder: Arc<Recorder>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let mut managers: Vec<Manager> = client
        .sockets
        .iter()
        .map(|(node, socket)| Manager::new(node.clone(), socket.clone()))
        .collect();
    let mut at = client.id % managers.len().max(1);
    let mut rng = Rng::new(client.seed ^ (client.id as u64).wrapping_mul(0x9e37_79b9));
    let mut known: HashMap<String, String> = HashMap::new();
    let mut counter = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut control) = managers[at].client().await else {
            // Refused before any call: nothing was invoked.
            at = (at + 1) % managers.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        counter += 1;
        let value = ((client.id as u64 + 1) << 40) | counter;
        let (kind, name) = if client.prober {
            (Kind::Secret, PROBE.to_owned())
        } else {
            let kind = if rng.below(2) == 0 {
                Kind::Service
            } else {
                Kind::Secret
            };
            if rng.below(4) == 0 {
                read(
                    &mut control,
                    kind,
                    &client,
                    &recorder,
                    &counters,
                    &mut known,
                )
                .await;
                continue;
            }
            let all = names(kind);
            (kind, all[rng.below(all.len() as u64) as usize].clone())
        };
        let key = kind.key(&name);
        let input = match known.get(&key) {
            None => Input::Create { value },
            Some(id) => match rng.below(10) {
                0 if !client.prober => Input::Remove { id: id.clone() },
                1 if !client.prober => Input::Create { value },
                _ => Input::Update {
                    id: id.clone(),
                    value,
                },
            },
        };
        let invoked = Instant::now();
        counters.calls.fetch_add(1, Ordering::Relaxed);
        let answer = match tokio::time::timeout(
            client.timeout,
            store_ops::call(&mut control, kind, &name, &input),
        )
        .await
        {
            Ok(answer) => answer,
            Err(_) => Answer::Unknown(format!("no answer within {:?}", client.timeout)),
        };
        match &answer {
            Answer::Done(Output::Created { id }) => {
                known.insert(key.clone(), id.clone());
            }
            Answer::Done(Output::Removed | Output::NotFound) => {
                known.remove(&key);
            }
            Answer::Done(Output::Exists) => {
                // Learn the id from a read.
                read(
                    &mut control,
                    kind,
                    &client,
                    &recorder,
                    &counters,
                    &mut known,
                )
                .await;
            }
            Answer::Unknown(_) => {
                counters.unknown.fetch_add(1, Ordering::Relaxed);
                // What happened is unknown: forget the id, read it back, and
                // try another manager (this one may be gone).
                known.remove(&key);
                managers[at].forget();
                at = (at + 1) % managers.len();
            }
            Answer::Refused(why) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                eprintln!("[chaos] client {}: {key} refused: {why}", client.id);
            }
            _ => {}
        }
        store_ops::record(&recorder, client.id, key, input, &answer, invoked);
    }
}

/// Lists `kind` and records one read per name.
async fn read(
    control: &mut crate::control::Client,
    kind: Kind,
    client: &Client,
    recorder: &Recorder,
    counters: &Counters,
    known: &mut HashMap<String, String>,
) {
    let invoked = Instant::now();
    counters.calls.fetch_add(1, Ordering::Relaxed);
    let listed =
        match tokio::time::timeout(client.timeout, store_ops::read_all(control, kind)).await {
            Ok(Ok(listed)) => listed,
            // A failed read changes nothing: left out.
            _ => return,
        };
    let completed = Instant::now();
    for name in read_names(kind) {
        let key = kind.key(&name);
        let seen = listed.get(&name).cloned();
        match &seen {
            Some((id, _)) => known.insert(key.clone(), id.clone()),
            None => known.remove(&key),
        };
        recorder.push(crate::linearize::Operation {
            client: client.id,
            key,
            input: Input::Read,
            output: Output::Read(seen),
            invoke: recorder.micros(invoked),
            complete: Some(recorder.micros(completed)),
        });
    }
}

/// After the faults: one read of each kind through a manager that answers,
/// so that every acknowledged write is checked against the final state.
pub async fn final_reads(
    sockets: &[(String, PathBuf)],
    recorder: Arc<Recorder>,
    counters: Arc<Counters>,
) {
    let client = Client {
        id: usize::MAX,
        sockets: sockets.to_vec(),
        timeout: Duration::from_secs(15),
        seed: 0,
        prober: false,
    };
    let mut known = HashMap::new();
    for (node, socket) in sockets {
        let mut manager = Manager::new(node.clone(), socket.clone());
        let Some(mut control) = manager.client().await else {
            continue;
        };
        for kind in [Kind::Service, Kind::Secret] {
            read(
                &mut control,
                kind,
                &client,
                &recorder,
                &counters,
                &mut known,
            )
            .await;
        }
        return;
    }
}

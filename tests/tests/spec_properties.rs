//! Random service specs, valid and invalid mixed, against a real
//! in-process manager with two simulated nodes (zones a and b):
//!
//! - accepted ⇒ no field was invalid, the store holds the spec, and its
//!   tasks run on the simulated nodes, or (a constraint no node meets, a
//!   reservation no node has) wait with a reason, none running;
//! - refused ⇒ some field was invalid, the error names one of them, and
//!   nothing was written: the same services, tasks and networks as before.
//!
//! 24 cases by default; `SHOAL_SPEC_CASES=500` runs more.

use std::{
    collections::BTreeSet,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use shoal_api::pb::{
    ContainerSpec, Empty, EndpointSpec, IdRequest, Mount, NetworkAttachmentConfig, NetworkSpec,
    Placement, PortConfig, PublishMode, ResourceRequirements, Resources, ServiceMode, ServiceSpec,
    TaskSpec, TaskState, UpdateConfig,
};
use shoal_tests::cluster::{TestCluster, is_running, wait_until};

/// A part of a spec, and what is wrong with it: a word the refusal must
/// contain (None: valid).
#[derive(Debug, Clone)]
struct Part<T> {
    value: T,
    invalid: Option<&'static str>,
    /// Valid, but no node can take the task (runtime, not a refusal).
    unplaceable: bool,
}

fn valid<T>(value: T) -> Part<T> {
    Part {
        value,
        invalid: None,
        unplaceable: false,
    }
}

fn bad<T>(value: T, word: &'static str) -> Part<T> {
    Part {
        value,
        invalid: Some(word),
        unplaceable: false,
    }
}

fn name() -> impl Strategy<Value = Part<String>> {
    prop_oneof![
        40 => "[a-z][a-z0-9]{0,8}".prop_map(valid),
        // No name is no error: the manager names the service, as Docker's
        // does (a CI run found the model wrong here).
        1 => Just(valid(String::new())),
        1 => "-[a-z]{1,5}".prop_map(|n| bad(n, "name")),
        1 => "[a-z]{1,4} [a-z]{1,4}".prop_map(|n| bad(n, "name")),
        1 => Just(bad("x".repeat(64), "name")),
    ]
}

fn mode() -> impl Strategy<Value = Part<i32>> {
    prop_oneof![
        24 => Just(valid(ServiceMode::Replicated as i32)),
        12 => Just(valid(ServiceMode::Global as i32)),
        1 => (10..1000i32).prop_map(|m| bad(m, "mode")),
    ]
}

/// Published ports are `base + i` (unique per case, so that cases never
/// clash) or 0 (the manager picks one).
fn port() -> impl Strategy<Value = Part<(PortConfig, bool)>> {
    let p = |protocol: &str, target: u32, mode: PublishMode| PortConfig {
        protocol: protocol.into(),
        target_port: target,
        publish_mode: mode as i32,
        ..Default::default()
    };
    prop_oneof![
        40 => (prop_oneof![Just("tcp"), Just("udp"), Just("")], 1..65536u32, any::<bool>(), any::<bool>())
            .prop_map(move |(proto, target, host, dynamic)| {
                let mode = if host { PublishMode::Host } else { PublishMode::Ingress };
                valid((p(proto, target, mode), dynamic))
            }),
        1 => Just(bad((p("sctp", 80, PublishMode::Ingress), false), "sctp")),
        1 => Just(bad((p("icmp", 80, PublishMode::Ingress), false), "protocol")),
        1 => Just(bad((p("tcp", 0, PublishMode::Ingress), false), "port")),
        1 => (65536..200_000u32).prop_map(move |t| bad((p("tcp", t, PublishMode::Ingress), false), "port")),
        1 => Just(bad((PortConfig { publish_mode: 9, ..p("tcp", 80, PublishMode::Ingress) }, false), "publish mode")),
    ]
}

fn mount() -> impl Strategy<Value = Part<Mount>> {
    let m = |kind: &str, source: &str, target: &str| Mount {
        r#type: kind.into(),
        source: source.into(),
        target: target.into(),
        ..Default::default()
    };
    prop_oneof![
        16 => "[a-z]{1,6}".prop_map(move |d| valid(m("bind", &format!("/srv/{d}"), &format!("/data/{d}")))),
        16 => "[a-z]{2,6}".prop_map(move |v| valid(m("volume", &v, &format!("/vol/{v}")))),
        8 => "[a-z]{1,6}".prop_map(move |d| valid(m("tmpfs", "", &format!("/tmp/{d}")))),
        1 => Just(bad(m("nfs", "/srv", "/data"), "mount type")),
        1 => Just(bad(m("bind", "/srv", "data"), "absolute")),
        1 => Just(bad(m("bind", "srv", "/data"), "source")),
        1 => Just(bad(m("tmpfs", "/srv", "/scratch"), "tmpfs")),
        1 => Just(bad(m("volume", "v", "/"), "root")),
    ]
}

fn network() -> impl Strategy<Value = Part<NetworkAttachmentConfig>> {
    let n = |target: &str, aliases: &[&str]| NetworkAttachmentConfig {
        target: target.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
    };
    prop_oneof![
        30 => Just(valid(n("backend", &["db"]))),
        1 => Just(bad(n("", &[]), "network")),
        1 => Just(bad(n("nosuch", &[]), "nosuch")),
        1 => Just(bad(n("backend", &["a b"]), "alias")),
    ]
}

fn resources() -> impl Strategy<Value = Part<ResourceRequirements>> {
    let r =
        |limit_cpu: i64, limit_mem: i64, reserve_cpu: i64, reserve_mem: i64| ResourceRequirements {
            limits: Some(Resources {
                nano_cpus: limit_cpu,
                memory_bytes: limit_mem,
                ..Default::default()
            }),
            reservations: Some(Resources {
                nano_cpus: reserve_cpu,
                memory_bytes: reserve_mem,
                ..Default::default()
            }),
            ..Default::default()
        };
    prop_oneof![
        40 => (0..4i64, 0..4i64).prop_map(move |(c, m)| valid(r(c * 500_000_000, m << 26, 0, 0))),
        3 => Just(Part { unplaceable: true, ..valid(r(0, 0, 10_000 * 1_000_000_000, 0)) }),
        1 => (1..1000i64).prop_map(move |c| bad(r(-c, 0, 0, 0), "limit-cpu")),
        1 => (1..4_000_000i64).prop_map(move |m| bad(r(0, m, 0, 0), "limit-memory")),
        1 => Just(bad(r(1_000_000_000, 0, 2_000_000_000, 0), "reserve-cpu")),
    ]
}

fn constraint() -> impl Strategy<Value = Part<Vec<String>>> {
    prop_oneof![
        24 => Just(valid(vec![])),
        12 => Just(valid(vec!["node.labels.zone==a".to_string()])),
        3 => Just(Part { unplaceable: true, ..valid(vec!["node.hostname==nosuch".to_string()]) }),
        1 => Just(bad(vec!["bogus".to_string()], "bogus")),
        1 => Just(bad(vec!["node.flavour==x".to_string()], "node.flavour")),
    ]
}

fn update() -> impl Strategy<Value = Part<UpdateConfig>> {
    let u = |delay_ms: i64, failure_action: i32, ratio: f32| UpdateConfig {
        parallelism: Some(1),
        delay_ms,
        failure_action,
        max_failure_ratio: ratio,
        ..Default::default()
    };
    prop_oneof![
        40 => (0..10_000i64, 0..3i32, 0.0..=1.0f32).prop_map(move |(d, a, r)| valid(u(d, a, r))),
        1 => (1..10_000i64).prop_map(move |d| bad(u(-d, 0, 0.0), "update-delay")),
        1 => (3..100i32).prop_map(move |a| bad(u(0, a, 0.0), "update-failure-action")),
        1 => (1.01..100.0f32).prop_map(move |r| bad(u(0, 0, r), "max-failure-ratio")),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    name: Part<String>,
    mode: Part<i32>,
    replicas: u64,
    ports: Vec<Part<(PortConfig, bool)>>,
    mounts: Vec<Part<Mount>>,
    networks: Vec<Part<NetworkAttachmentConfig>>,
    resources: Part<ResourceRequirements>,
    constraints: Part<Vec<String>>,
    update: Part<UpdateConfig>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (name(), mode(), 0..4u64, prop::bool::weighted(0.1)),
        prop::collection::vec(port(), 0..3),
        prop::collection::vec(mount(), 0..3),
        prop::collection::vec(network(), 0..2),
        resources(),
        constraint(),
        update(),
    )
        .prop_map(
            |(
                (name, mode, replicas, global_replicas),
                ports,
                mounts,
                networks,
                resources,
                constraints,
                update,
            )| {
                // A global service is given replicas now and then (refused).
                let global = mode.value == ServiceMode::Global as i32;
                Case {
                    replicas: if global && !global_replicas {
                        0
                    } else {
                        replicas
                    },
                    name,
                    mode,
                    ports,
                    mounts,
                    networks,
                    resources,
                    constraints,
                    update,
                }
            },
        )
}

impl Case {
    /// The spec, its name made unique by `n` and published ports from `base`.
    fn spec(&self, n: u32, base: u32) -> ServiceSpec {
        let name = match &self.name.invalid {
            // No name: the manager picks one.
            None if self.name.value.is_empty() => String::new(),
            None => format!("{}-{n}", self.name.value),
            Some(_) => self.name.value.clone(),
        };
        let ports = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (port, dynamic) = &p.value;
                PortConfig {
                    published_port: if *dynamic { 0 } else { base + i as u32 },
                    ..port.clone()
                }
            })
            .collect();
        ServiceSpec {
            name,
            mode: self.mode.value,
            replicas: self.replicas,
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: "shoal/echo:1".into(),
                    mounts: self.mounts.iter().map(|m| m.value.clone()).collect(),
                    ..Default::default()
                }),
                resources: Some(self.resources.value.clone()),
                placement: Some(Placement {
                    constraints: self.constraints.value.clone(),
                    ..Default::default()
                }),
                networks: self.networks.iter().map(|n| n.value.clone()).collect(),
                ..Default::default()
            }),
            endpoint: Some(EndpointSpec {
                ports,
                ..Default::default()
            }),
            update: Some(self.update.value),
            ..Default::default()
        }
    }

    /// The words of the invalid parts (a refusal must name one).
    fn invalid(&self) -> Vec<&'static str> {
        let mut words = vec![];
        words.extend(self.name.invalid);
        words.extend(self.mode.invalid);
        words.extend(self.ports.iter().filter_map(|p| p.invalid));
        words.extend(self.mounts.iter().filter_map(|p| p.invalid));
        words.extend(self.networks.iter().filter_map(|p| p.invalid));
        words.extend(self.resources.invalid);
        words.extend(self.constraints.invalid);
        words.extend(self.update.invalid);
        if self.mode.value == ServiceMode::Global as i32 && self.replicas > 0 {
            words.push("replicas");
        }
        words
    }

    /// Valid specs a valid combination still makes invalid: two mounts on
    /// one target, one network twice, one target published twice
    /// (ingress, same protocol) is fine, but a host-mode port with dnsrr
    /// never arises here.
    fn conflict(&self) -> Option<&'static str> {
        let targets: Vec<&str> = self
            .mounts
            .iter()
            .map(|m| m.value.target.as_str())
            .collect();
        if targets.iter().collect::<BTreeSet<_>>().len() < targets.len() {
            return Some("duplicate mount point");
        }
        let networks: Vec<&str> = self
            .networks
            .iter()
            .map(|n| n.value.target.as_str())
            .collect();
        if networks.iter().collect::<BTreeSet<_>>().len() < networks.len() {
            return Some("attached twice");
        }
        None
    }

    fn unplaceable(&self) -> bool {
        self.resources.unplaceable || self.constraints.unplaceable
    }
}

/// What a refusal must not add to.
#[derive(Debug)]
struct Written {
    services: BTreeSet<String>,
    tasks: BTreeSet<String>,
    networks: BTreeSet<String>,
}

impl Written {
    /// What is here and was not in `before`.
    fn since(&self, before: &Written) -> Vec<String> {
        let new = |now: &BTreeSet<String>, was: &BTreeSet<String>, kind: &str| {
            now.difference(was)
                .map(|id| format!("{kind} {id}"))
                .collect::<Vec<_>>()
        };
        let mut all = new(&self.services, &before.services, "service");
        all.extend(new(&self.tasks, &before.tasks, "task"));
        all.extend(new(&self.networks, &before.networks, "network"));
        all
    }
}

async fn written(cluster: &TestCluster) -> Result<Written> {
    let mut control = cluster.control().await?;
    let services = control.list_services(Empty {}).await?.into_inner().services;
    let networks = control.list_networks(Empty {}).await?.into_inner().networks;
    Ok(Written {
        services: services
            .iter()
            .filter_map(|s| s.service.as_ref()?.meta.as_ref().map(|m| m.id.clone()))
            .collect(),
        tasks: cluster
            .tasks()
            .await?
            .iter()
            .filter_map(|t| t.meta.as_ref().map(|m| m.id.clone()))
            .collect(),
        networks: networks
            .iter()
            .filter_map(|n| n.meta.as_ref().map(|m| m.id.clone()))
            .collect(),
    })
}

/// Whether the manager accepted the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Refused,
}

async fn check(cluster: &TestCluster, case: &Case, n: u32) -> Result<Outcome> {
    let spec = case.spec(n, 30000 + (n % 200) * 10);
    let mut words = case.invalid();
    let conflict = case.conflict();
    words.extend(conflict);
    let before = written(cluster).await?;
    let mut control = cluster.control().await?;
    let created = control.create_service(spec.clone()).await;
    let service = match created {
        Err(status) => {
            ensure!(
                !words.is_empty(),
                "a valid spec was refused: {status:?}\n{spec:#?}"
            );
            let message = status.message().to_lowercase();
            ensure!(
                words.iter().any(|w| message.contains(&w.to_lowercase())),
                "the refusal {:?} names none of {words:?}",
                status.message()
            );
            // Tasks of services removed earlier may still go meanwhile:
            // nothing may have come.
            let after = written(cluster).await?;
            let new = after.since(&before);
            ensure!(new.is_empty(), "a refused spec left {new:?}");
            return Ok(Outcome::Refused);
        }
        Ok(service) => service.into_inner(),
    };
    ensure!(
        words.is_empty(),
        "accepted with {words:?} wrong:\n{spec:#?}"
    );
    let id = service.meta.clone().unwrap_or_default().id;
    let stored = control
        .list_services(Empty {})
        .await?
        .into_inner()
        .services
        .into_iter()
        .filter_map(|s| s.service)
        .find(|s| s.meta.as_ref().is_some_and(|m| m.id == id))
        .context("an accepted service is not in the store")?;
    let stored_name = stored.spec.as_ref().map(|s| s.name.as_str());
    let named_as_asked = if spec.name.is_empty() {
        stored_name.is_some_and(|n| !n.is_empty())
    } else {
        stored_name == Some(spec.name.as_str())
    };
    ensure!(named_as_asked, "the store holds {:?}", stored.spec);
    let zone_a_only = case
        .constraints
        .value
        .iter()
        .any(|c| c == "node.labels.zone==a");
    let nodes = if zone_a_only { 1 } else { 2 };
    // A port published in host mode is bound on the task's node: one task
    // per node; the others wait (a runtime reason, as in Docker).
    let host_port = spec
        .endpoint
        .iter()
        .flat_map(|e| &e.ports)
        .any(|p| p.publish_mode() == PublishMode::Host && p.published_port != 0);
    let global = spec.mode == ServiceMode::Global as i32;
    let expected = match ServiceMode::try_from(spec.mode) {
        Ok(ServiceMode::Global) => nodes,
        _ if host_port => (spec.replicas as usize).min(nodes),
        _ => spec.replicas as usize,
    };
    let tasks_of = || async {
        Ok::<_, anyhow::Error>(
            cluster
                .tasks()
                .await?
                .into_iter()
                .filter(|t| t.service_id == id && t.desired_state() == TaskState::Running)
                .collect::<Vec<_>>(),
        )
    };
    if case.unplaceable() {
        let waiting = wait_until(
            Duration::from_secs(10),
            "tasks waiting with a reason",
            || async {
                let tasks = tasks_of().await.ok()?;
                let reasons = tasks.iter().all(|t| {
                    t.status
                        .as_ref()
                        .is_some_and(|s| !s.err.is_empty() || !s.message.is_empty())
                });
                // A replicated service makes all its tasks, whether or not
                // they can run (those over one per node with a host port
                // wait too); a global one may make none where no node fits.
                let made = if global {
                    tasks.len() == expected || tasks.is_empty()
                } else {
                    tasks.len() == spec.replicas as usize
                };
                (made && reasons).then_some(tasks)
            },
        )
        .await;
        let waiting = match waiting {
            Ok(tasks) => tasks,
            Err(e) => {
                let seen: Vec<_> = tasks_of()
                    .await?
                    .iter()
                    .map(|t| (t.node_id.clone(), t.status.clone()))
                    .collect();
                bail!("{e:#}: saw {seen:?}");
            }
        };
        ensure!(
            !waiting.iter().any(is_running),
            "a task no node can take is running: {waiting:?}"
        );
    } else {
        wait_until(
            Duration::from_secs(15),
            &format!("{expected} running tasks"),
            || async {
                let tasks = tasks_of().await.ok()?;
                (tasks.iter().filter(|t| is_running(t)).count() == expected).then_some(())
            },
        )
        .await?;
    }
    control.remove_service(IdRequest { id }).await?;
    Ok(Outcome::Accepted)
}

#[test]
fn random_specs_run_or_are_refused_with_their_field_and_nothing_written() -> Result<()> {
    let cases = std::env::var("SHOAL_SPEC_CASES")
        .ok()
        .map(|v| v.parse::<u32>())
        .transpose()
        .context("SHOAL_SPEC_CASES")?
        .unwrap_or(24);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let cluster = runtime.block_on(async {
        let mut cluster = TestCluster::start(1).await?;
        cluster.add_agent("n1", &[("zone", "a")]).await?;
        cluster.add_agent("n2", &[("zone", "b")]).await?;
        let mut control = cluster.control().await?;
        control
            .create_network(NetworkSpec {
                name: "backend".into(),
                ..Default::default()
            })
            .await?;
        Ok::<_, anyhow::Error>(cluster)
    })?;
    let counter = AtomicU32::new(0);
    let accepted = AtomicU32::new(0);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 32,
        // A case waits up to 15 s for its tasks: shrinking a failure must
        // still end, with the case reported, within the test's timeout.
        max_shrink_time: 30_000,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let outcome = runtime
            .block_on(check(&cluster, &case, n))
            .map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
        if outcome == Outcome::Accepted {
            accepted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    if let Err(e) = result {
        bail!("{}", anyhow!("{e}"));
    }
    // Both sides of the property were exercised (the weights make about
    // half the cases valid).
    let (accepted, total) = (accepted.into_inner(), counter.into_inner());
    println!("{accepted} of {total} specs accepted");
    ensure!(
        accepted > 0 && accepted < total,
        "{accepted} of {total} specs accepted: one side went untested"
    );
    Ok(())
}

//! Each limit on hand-built states.

use clap::Parser;
use shoal_api::pb::{
    ConfigSpec, Meta, Node, NodeDescription, Resources, SecretSpec, Service, ServiceMode,
    ServiceSpec,
};

use super::*;

fn spec(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        mode: ServiceMode::Replicated as i32,
        replicas,
        ..Default::default()
    }
}

/// A state holding `services`, put as a write puts them (so the store's
/// service index, which the checks read, counts them).
fn with_services(services: &[(&str, ServiceSpec)]) -> State {
    let mut state = State::default();
    for (id, spec) in services {
        state.put(shoal_api::pb::Object {
            object: Some(shoal_api::pb::object::Object::Service(Service {
                meta: Some(Meta {
                    id: id.to_string(),
                    ..Default::default()
                }),
                spec: Some(spec.clone()),
                ..Default::default()
            })),
        });
    }
    state
}

#[test]
fn replicas_over_the_limit_are_refused_naming_it() {
    let limits = Limits::default();
    let state = State::default();
    let err = limits
        .check_service(&state, &spec("web", 99_999_999_999), "new")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "service web: replicas 99999999999 exceeds the cluster's limit of 10000 replicas per service (shoal-manager --max-replicas-per-service)"
    );
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::InvalidArgument
    );
    limits
        .check_service(&state, &spec("web", 10_000), "new")
        .expect("the limit itself is allowed");
}

#[test]
fn scaling_up_past_the_limit_is_refused_and_scaling_down_always_passes() {
    let limits = Limits {
        max_replicas_per_service: 5,
        ..Default::default()
    };
    // Created when the limit was higher.
    let state = with_services(&[("s1", spec("web", 8))]);
    let err = limits
        .check_service(&state, &spec("web", 9), "s1")
        .unwrap_err();
    assert!(
        matches!(
            err,
            LimitError::Replicas {
                asked: 9,
                limit: 5,
                ..
            }
        ),
        "{err}"
    );
    limits
        .check_service(&state, &spec("web", 7), "s1")
        .expect("scaling down over the limit");
    limits
        .check_service(&state, &spec("web", 8), "s1")
        .expect("an update that keeps the replicas");
}

#[test]
fn tasks_in_the_cluster_count_every_service_and_global_ones_per_node() {
    let limits = Limits {
        max_tasks: 10,
        ..Default::default()
    };
    let mut global = spec("agent", 0);
    global.mode = ServiceMode::Global as i32;
    let mut state = with_services(&[("s1", spec("a", 4)), ("s2", global)]);
    for n in ["n1", "n2", "n3"] {
        state.nodes.insert(n.into(), Node::default());
    }
    // 4 + 3 (global on 3 nodes) = 7 already: 3 more fit, 4 do not.
    limits
        .check_service(&state, &spec("b", 3), "new")
        .expect("exactly at the limit");
    let err = limits
        .check_service(&state, &spec("b", 4), "new")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "service b: its 4 tasks would bring the cluster to 11 tasks, over its limit of 10 tasks (shoal-manager --max-tasks)"
    );
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::ResourceExhausted
    );
    // Growing an existing service counts its new size, not old + new.
    limits
        .check_service(&state, &spec("a", 7), "s1")
        .expect("a grows to 7: 7 + 3 = 10");
    assert!(limits.check_service(&state, &spec("a", 8), "s1").is_err());
}

#[test]
fn the_number_of_services_is_bounded_but_updates_pass() {
    let limits = Limits {
        max_services: 2,
        ..Default::default()
    };
    let state = with_services(&[("s1", spec("a", 1)), ("s2", spec("b", 1))]);
    let err = limits
        .check_service(&state, &spec("c", 1), "s3")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "service c: the cluster already has 2 services, its limit (shoal-manager --max-services)"
    );
    limits
        .check_service(&state, &spec("b", 2), "s2")
        .expect("updating an existing service");
}

#[test]
fn secrets_and_configs_are_bounded_by_size() {
    let limits = Limits::default();
    let secret = |len: usize| SecretSpec {
        name: "pw".into(),
        data: vec![b'x'; len],
        ..Default::default()
    };
    limits.check_secret(&secret(500 * 1024)).expect("500 KiB");
    let err = limits.check_secret(&secret(500 * 1024 + 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "secret pw: 512001 bytes exceed the cluster's limit of 512000 bytes per secret (shoal-manager --max-secret-size)"
    );
    assert_eq!(
        limits.check_secret(&secret(0)).unwrap_err().to_string(),
        "secret pw: data must not be empty"
    );
    let config = |len: usize| ConfigSpec {
        name: "conf".into(),
        data: vec![b'x'; len],
        ..Default::default()
    };
    limits.check_config(&config(0)).expect("an empty config");
    limits.check_config(&config(1000 * 1024)).expect("1000 KiB");
    let err = limits.check_config(&config(1000 * 1024 + 1)).unwrap_err();
    assert!(err.to_string().contains("--max-config-size"), "{err}");
    let small = Limits {
        max_secret_bytes: 10,
        ..Default::default()
    };
    assert!(small.check_secret(&secret(11)).is_err());
}

#[test]
fn log_streams_are_bounded() {
    let limits = Limits {
        max_log_streams: 2,
        ..Default::default()
    };
    limits.check_log_streams(1).expect("a second stream");
    let err = limits.check_log_streams(2).unwrap_err();
    assert!(err.to_string().contains("2 log streams are open"), "{err}");
    assert!(err.to_string().contains("--max-log-streams"), "{err}");
}

#[test]
fn a_node_holds_the_smaller_of_the_managers_limit_and_its_own() {
    let limits = Limits {
        max_tasks_per_node: 100,
        ..Default::default()
    };
    let node = |memory_bytes: i64, max_tasks: u64| Node {
        description: Some(NodeDescription {
            resources: Some(Resources {
                pids: Default::default(),
                nano_cpus: 1_000_000_000,
                memory_bytes,
            }),
            pids_max: 32768,
            max_tasks,
            ..Default::default()
        }),
        ..Default::default()
    };
    // 1 GiB holds 32 tasks: below the manager's 100.
    assert_eq!(limits.tasks_on_node(&node(1 << 30, 0)), 32);
    // 64 GiB holds 1024 (pids): the manager's 100 decides.
    assert_eq!(limits.tasks_on_node(&node(64 << 30, 0)), 100);
    // The agent's --max-tasks 3.
    assert_eq!(limits.tasks_on_node(&node(64 << 30, 3)), 3);
    // A node that described nothing: the manager's limit alone.
    assert_eq!(limits.tasks_on_node(&Node::default()), 100);
}

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    limits: Limits,
}

#[test]
fn flags_default_to_the_documented_values_and_refuse_zero() {
    let flags = Flags::try_parse_from(["m"]).unwrap();
    assert_eq!(flags.limits, Limits::default());
    let flags = Flags::try_parse_from([
        "m",
        "--max-replicas-per-service",
        "7",
        "--max-tasks-per-node",
        "3",
        "--max-secret-size",
        "100",
        "--max-log-streams",
        "1",
    ])
    .unwrap();
    assert_eq!(flags.limits.max_replicas_per_service, 7);
    assert_eq!(flags.limits.max_tasks_per_node, 3);
    assert_eq!(flags.limits.max_secret_bytes, 100);
    assert_eq!(flags.limits.max_log_streams, 1);
    assert!(Flags::try_parse_from(["m", "--max-tasks-per-node", "0"]).is_err());
}

use shoal_api::pb::{
    ContainerSpec, EndpointSpec, FileTarget, HealthConfig, Mount, NetworkAttachmentConfig,
    PortConfig, PublishMode, ResourceRequirements, Resources, RestartPolicy, SecretReference,
    ServiceMode, ServiceSpec, TaskSpec, UpdateConfig, UpdateFailureAction,
};

use super::check_service;

fn spec() -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "shoal/echo:1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        replicas: 1,
        ..Default::default()
    }
}

fn with_container(change: impl FnOnce(&mut ContainerSpec)) -> ServiceSpec {
    let mut s = spec();
    change(
        s.task
            .as_mut()
            .and_then(|t| t.container.as_mut())
            .expect("a container"),
    );
    s
}

fn with_task(change: impl FnOnce(&mut TaskSpec)) -> ServiceSpec {
    let mut s = spec();
    change(s.task.as_mut().expect("a task"));
    s
}

/// The error for `spec`, which must be refused.
fn refused(spec: &ServiceSpec) -> String {
    match check_service(spec, "") {
        Ok(()) => panic!("accepted: {spec:?}"),
        Err(e) => e.0,
    }
}

fn accepted(spec: &ServiceSpec) {
    if let Err(e) = check_service(spec, "") {
        panic!("refused ({e}): {spec:?}");
    }
}

fn mount(kind: &str, source: &str, target: &str) -> Mount {
    Mount {
        r#type: kind.into(),
        source: source.into(),
        target: target.into(),
        ..Default::default()
    }
}

#[test]
fn a_plain_spec_passes() {
    accepted(&spec());
}

#[test]
fn templates_in_hostname_env_and_mounts_are_checked_naming_the_field() {
    accepted(&with_container(|c| {
        c.hostname = "{{.Service.Name}}-{{.Task.Slot}}.{{.Node.Hostname}}".into();
        c.env = vec![
            "NODE_ID={{.Node.ID}}".into(),
            "OS={{.Node.Platform.OS}}/{{.Node.Platform.Architecture}}".into(),
            "LABELS={{.Service.Labels}} {{index .Service.Labels \"tier\"}}".into(),
        ];
        c.mounts = vec![mount("bind", "/srv/{{.Task.Slot}}", "/data")];
    }));
    assert_eq!(
        refused(&with_container(|c| c.hostname = "{{.Bogus}}".into())),
        r#"invalid hostname "{{.Bogus}}": unknown placeholder .Bogus"#
    );
    assert_eq!(
        refused(&with_container(|c| c.env = vec!["A={{.Task.Slot".into()])),
        r#"invalid env "A={{.Task.Slot": unclosed {{ (no matching }})"#
    );
    let err = refused(&with_container(|c| {
        c.mounts = vec![mount("bind", "/srv/{{.Nope}}", "/data")]
    }));
    assert_eq!(
        err,
        r#"invalid mount source "/srv/{{.Nope}}": unknown placeholder .Nope"#
    );
    let err = refused(&with_container(|c| {
        c.mounts = vec![mount("volume", "", "/data/{{.Task.Bogus}}")]
    }));
    assert!(err.starts_with("invalid mount target"), "{err}");
    // Field syntax on a label the service does not have fails at run time
    // in Swarm; here at create time.
    let err = refused(&with_container(|c| {
        c.hostname = "{{.Service.Labels.zone}}".into()
    }));
    assert!(err.contains("no service label \"zone\""), "{err}");
}

#[test]
fn a_hostname_must_be_valid_once_expanded() {
    accepted(&with_container(|c| c.hostname = "db_1.example".into()));
    let err = refused(&with_container(|c| c.hostname = "has space".into()));
    assert!(
        err.starts_with("invalid hostname \"has space\": use letters"),
        "{err}"
    );
    assert!(refused(&with_container(|c| c.hostname = "-lead".into())).contains("'-'"));
    assert!(refused(&with_container(|c| c.hostname = "a..b".into())).contains("none empty"));
    // A global service's task name holds two ids: too long for a hostname.
    let mut global = with_container(|c| c.hostname = "{{.Task.Name}}".into());
    global.name = "a-rather-long-service".into();
    global.mode = ServiceMode::Global as i32;
    global.replicas = 0;
    let err = refused(&global);
    assert!(
        err.contains("(for a task: \"a-rather-long-service.node0")
            && err.contains("longer than 64"),
        "{err}"
    );
}

#[test]
fn env_entries_need_a_name() {
    accepted(&with_container(|c| {
        c.env = vec!["A=1".into(), "B=".into(), "BARE".into()]
    }));
    assert_eq!(
        refused(&with_container(|c| c.env = vec!["=noval".into()])),
        r#"invalid env "=noval": empty variable name (expected NAME=VALUE)"#
    );
    assert!(refused(&with_container(|c| c.env = vec!["".into()])).contains("empty variable name"));
    assert!(refused(&with_container(|c| c.env = vec!["A=x\0y".into()])).contains("NUL"));
}

#[test]
fn mounts_follow_dockers_rules() {
    accepted(&with_container(|c| {
        c.mounts = vec![
            mount("bind", "/srv", "/data"),
            mount("volume", "cache", "/cache"),
            mount("volume", "", "/anon"),
            mount("tmpfs", "", "/tmp"),
        ]
    }));
    let cases = [
        (
            mount("bind", "relative", "/data"),
            r#"invalid mount source "relative": a bind mount's source must be an absolute path on the node"#,
        ),
        (
            mount("bind", "", "/data"),
            r#"invalid bind mount (target "/data"): a source is required"#,
        ),
        (
            mount("bind", "/srv", "data"),
            r#"invalid mount target "data": the mount path must be absolute"#,
        ),
        (
            mount("volume", "x", "/data"),
            "invalid mount source \"x\": a volume name is 2 or more",
        ),
        (
            mount("volume", "has space", "/data"),
            "invalid mount source \"has space\"",
        ),
        (
            mount("tmpfs", "/srv", "/t"),
            "a tmpfs mount takes no source",
        ),
        (mount("nfs", "/srv", "/t"), r#"invalid mount type "nfs""#),
        (mount("volume", "v1", ""), "a target is required"),
        (
            mount("bind", "/srv", "/"),
            "cannot replace the container's root",
        ),
    ];
    for (m, want) in cases {
        let err = refused(&with_container(|c| c.mounts = vec![m.clone()]));
        assert!(err.starts_with(want) || err.contains(want), "{m:?}: {err}");
    }
    let err = refused(&with_container(|c| {
        c.mounts = vec![mount("volume", "a1", "/d"), mount("tmpfs", "", "/d/")]
    }));
    assert!(err.starts_with("duplicate mount point"), "{err}");
    // A declared volume's labels and driver options: volume mounts only.
    let mut labelled = mount("volume", "data", "/data");
    labelled.volume_labels.insert("tier".into(), "db".into());
    labelled
        .volume_driver_opts
        .insert("type".into(), "tmpfs".into());
    accepted(&with_container(|c| c.mounts = vec![labelled.clone()]));
    let mut bind = mount("bind", "/srv", "/data");
    bind.volume_labels.insert("tier".into(), "db".into());
    let err = refused(&with_container(|c| c.mounts = vec![bind]));
    assert!(
        err.contains("volume labels apply to volume mounts only"),
        "{err}"
    );
    let mut with_option = mount("bind", "/srv", "/data");
    with_option
        .options
        .insert("tmpfs-size".into(), "64m".into());
    let err = refused(&with_container(|c| c.mounts = vec![with_option]));
    assert!(
        err.contains("applies to tmpfs mounts, not to a bind mount"),
        "{err}"
    );
    let mut sized = mount("tmpfs", "", "/t");
    sized.options.insert("tmpfs-size".into(), "lots".into());
    let err = refused(&with_container(|c| c.mounts = vec![sized]));
    assert!(err.contains("invalid tmpfs-size \"lots\""), "{err}");
}

#[test]
fn images_workdir_signal_and_grace_period() {
    assert_eq!(
        refused(&with_container(|c| c.image = " ".into())),
        "a service needs an image"
    );
    assert!(
        refused(&with_container(|c| c.image = "Shoal/Echo".into()))
            .contains("repository name must be lowercase")
    );
    assert!(refused(&with_container(|c| c.dir = "app".into())).contains("absolute path"));
    accepted(&with_container(|c| c.dir = "/app".into()));
    for good in ["SIGTERM", "int", "9", "SIGRTMIN+3"] {
        accepted(&with_container(|c| c.stop_signal = good.into()));
    }
    assert!(
        refused(&with_container(|c| c.stop_signal = "SIGNOPE".into()))
            .starts_with("invalid stop-signal \"SIGNOPE\"")
    );
    assert!(
        refused(&with_container(|c| c.stop_grace_period_ms = Some(-1)))
            .contains("stop-grace-period -1ms: cannot be negative")
    );
}

#[test]
fn healthchecks_have_dockers_forms_and_no_negative_durations() {
    let health = |test: &[&str], interval_ms| HealthConfig {
        test: test.iter().map(|s| s.to_string()).collect(),
        interval_ms,
        ..Default::default()
    };
    for ok in [
        health(&["CMD", "true"], 1000),
        health(&["CMD-SHELL", "curl -f localhost"], 0),
        health(&["NONE"], 0),
        health(&[], 5000),
    ] {
        accepted(&with_container(|c| c.healthcheck = Some(ok)));
    }
    for bad in [
        health(&["CMD"], 0),
        health(&["SHELL", "x"], 0),
        health(&["NONE", "x"], 0),
    ] {
        let err = refused(&with_container(|c| c.healthcheck = Some(bad)));
        assert!(err.starts_with("invalid healthcheck test"), "{err}");
    }
    let err = refused(&with_container(|c| c.healthcheck = Some(health(&[], -5))));
    assert_eq!(err, "invalid health-interval -5ms: cannot be negative");
}

#[test]
fn secret_files_are_checked_with_the_service_named() {
    let mut secret = SecretReference {
        secret_name: "pw".into(),
        ..Default::default()
    };
    accepted(&with_container(|c| c.secrets = vec![secret.clone()]));
    secret.file = Some(FileTarget {
        uid: "root".into(),
        ..Default::default()
    });
    let err = refused(&with_container(|c| c.secrets = vec![secret]));
    assert!(
        err.starts_with(r#"service web: invalid secret pw uid "root""#),
        "{err}"
    );
}

#[test]
fn labels_need_a_name() {
    let mut s = spec();
    s.labels.insert(" ".into(), "x".into());
    assert!(refused(&s).starts_with("invalid service label \" \"=\"x\": empty name"));
    let s = with_container(|c| {
        c.labels.insert(String::new(), "x".into());
    });
    assert!(refused(&s).starts_with("invalid container label"));
}

#[test]
fn resources_are_at_least_swarms_minimums_and_reservations_fit_limits() {
    let res = |limit_cpu, limit_mem, reserve_cpu, reserve_mem| {
        with_task(|t| {
            t.resources = Some(ResourceRequirements {
                generic_reservations: Default::default(),
                limits: Some(Resources {
                    pids: Default::default(),
                    nano_cpus: limit_cpu,
                    memory_bytes: limit_mem,
                }),
                reservations: Some(Resources {
                    pids: Default::default(),
                    nano_cpus: reserve_cpu,
                    memory_bytes: reserve_mem,
                }),
            })
        })
    };
    accepted(&res(1_000_000_000, 256 << 20, 500_000_000, 128 << 20));
    accepted(&res(0, 0, 500_000_000, 128 << 20));
    assert_eq!(
        refused(&res(-1, 0, 0, 0)),
        "invalid limit-cpu -0.000000001: must be at least 0.001"
    );
    assert!(
        refused(&res(0, 1024, 0, 0)).contains("invalid limit-memory 1024: must be at least 4MiB")
    );
    assert!(refused(&res(0, 0, 0, -(8 << 20))).contains("invalid reserve-memory"));
    assert_eq!(
        refused(&res(500_000_000, 0, 1_000_000_000, 0)),
        "invalid resources: reserve-cpu 1 is more than limit-cpu 0.5"
    );
    assert!(
        refused(&res(0, 64 << 20, 0, 128 << 20)).contains("reserve-memory 134217728 bytes is more")
    );
}

#[test]
fn restart_update_and_rollback_configs() {
    let restart = |delay_ms, window_ms| {
        with_task(|t| {
            t.restart = Some(RestartPolicy {
                delay_ms,
                window_ms,
                ..Default::default()
            })
        })
    };
    accepted(&restart(Some(0), 0));
    assert!(refused(&restart(Some(-1), 0)).contains("restart-delay -1ms: cannot be negative"));
    assert!(refused(&restart(None, -1)).contains("restart-window -1ms"));
    let mut bad_condition = restart(None, 0);
    bad_condition
        .task
        .as_mut()
        .unwrap()
        .restart
        .as_mut()
        .unwrap()
        .condition = 9;
    assert!(refused(&bad_condition).contains("invalid restart-condition 9"));

    let update = |u: UpdateConfig| {
        let mut s = spec();
        s.update = Some(u);
        s.rollback = Some(UpdateConfig {
            failure_action: UpdateFailureAction::Pause as i32,
            ..u
        });
        s
    };
    accepted(&update(UpdateConfig {
        parallelism: Some(0),
        max_failure_ratio: 1.0,
        failure_action: UpdateFailureAction::Rollback as i32,
        ..Default::default()
    }));
    let err = refused(&update(UpdateConfig {
        max_failure_ratio: 1.5,
        ..Default::default()
    }));
    assert_eq!(
        err,
        "invalid update-max-failure-ratio 1.5: expected a number from 0 to 1"
    );
    assert!(
        refused(&update(UpdateConfig {
            max_failure_ratio: f32::NAN,
            ..Default::default()
        }))
        .contains("max-failure-ratio NaN")
    );
    assert!(
        refused(&update(UpdateConfig {
            delay_ms: -1,
            ..Default::default()
        }))
        .contains("update-delay -1ms: cannot be negative")
    );
    assert!(
        refused(&update(UpdateConfig {
            monitor_ms: Some(-1),
            ..Default::default()
        }))
        .contains("update-monitor")
    );
    assert!(
        refused(&update(UpdateConfig {
            order: 5,
            ..Default::default()
        }))
        .contains("invalid update-order 5")
    );
    let mut s = spec();
    s.rollback = Some(UpdateConfig {
        failure_action: UpdateFailureAction::Rollback as i32,
        ..Default::default()
    });
    assert!(refused(&s).contains("rollback-failure-action rollback"));
}

#[test]
fn ports_follow_dockers_rules() {
    let ports = |mode: &str, ports: Vec<PortConfig>| {
        let mut s = spec();
        s.endpoint = Some(EndpointSpec {
            mode: mode.into(),
            ports,
            ..Default::default()
        });
        s
    };
    let port = |published, target, protocol: &str, mode: PublishMode| PortConfig {
        published_port: published,
        target_port: target,
        protocol: protocol.into(),
        publish_mode: mode as i32,
        ..Default::default()
    };
    accepted(&ports(
        "",
        vec![
            port(8080, 80, "", PublishMode::Ingress),
            port(8080, 80, "udp", PublishMode::Ingress),
            port(0, 81, "tcp", PublishMode::Ingress),
            port(0, 82, "tcp", PublishMode::Ingress),
        ],
    ));
    accepted(&ports(
        "dnsrr",
        vec![port(9000, 90, "tcp", PublishMode::Host)],
    ));
    assert_eq!(
        refused(&ports(
            "vip",
            vec![port(8080, 0, "tcp", PublishMode::Ingress)]
        )),
        "invalid port 8080:0/tcp: ports are 1 to 65535"
    );
    assert!(
        refused(&ports(
            "vip",
            vec![port(70000, 80, "tcp", PublishMode::Ingress)]
        ))
        .contains("1 to 65535")
    );
    assert!(
        refused(&ports(
            "vip",
            vec![port(1, 80, "sctp", PublishMode::Ingress)]
        ))
        .contains("sctp is not supported by Shoal")
    );
    assert!(
        refused(&ports(
            "vip",
            vec![port(1, 80, "icmp", PublishMode::Ingress)]
        ))
        .contains("expected tcp or udp")
    );
    let mut odd_mode = port(1, 80, "tcp", PublishMode::Ingress);
    odd_mode.publish_mode = 4;
    assert!(refused(&ports("vip", vec![odd_mode])).contains("invalid publish mode of port"));
    assert!(
        refused(&ports(
            "dnsrr",
            vec![port(8080, 80, "tcp", PublishMode::Ingress)]
        ))
        .contains("cannot be used with endpoint mode dnsrr")
    );
    assert!(
        refused(&ports(
            "vip",
            vec![
                port(8080, 80, "tcp", PublishMode::Ingress),
                port(8080, 81, "tcp", PublishMode::Host)
            ]
        ))
        .contains("8080/tcp is published twice")
    );
    assert!(refused(&ports("rr", vec![])).contains("invalid endpoint mode \"rr\""));
    let dsr = |published, target, mode| PortConfig {
        direct_server_return: true,
        ..port(published, target, "tcp", mode)
    };
    accepted(&ports(
        "vip",
        vec![
            dsr(8080, 80, PublishMode::Ingress),
            port(8080, 80, "udp", PublishMode::Ingress),
        ],
    ));
    assert!(
        refused(&ports("vip", vec![dsr(8080, 80, PublishMode::Host)]))
            .contains("dsr (direct server return) is for ports published in ingress mode")
    );
    assert!(
        refused(&ports(
            "vip",
            vec![
                dsr(8080, 80, PublishMode::Ingress),
                port(8081, 80, "", PublishMode::Ingress)
            ]
        ))
        .contains("target 80/tcp may be published in ingress mode once")
    );
}

#[test]
fn proxy_protocol_ports() {
    let ports = |mode: &str, ports: Vec<PortConfig>| {
        let mut s = spec();
        s.endpoint = Some(EndpointSpec {
            mode: mode.into(),
            ports,
            ..Default::default()
        });
        s
    };
    let port = |published, target, protocol: &str, mode: PublishMode| PortConfig {
        published_port: published,
        target_port: target,
        protocol: protocol.into(),
        publish_mode: mode as i32,
        ..Default::default()
    };
    let proxy = |protocol: &str, mode| PortConfig {
        proxy_protocol: "v2".into(),
        ..port(8080, 80, protocol, mode)
    };
    accepted(&ports("vip", vec![proxy("tcp", PublishMode::Ingress)]));
    accepted(&ports("vip", vec![proxy("", PublishMode::Ingress)]));
    assert!(
        refused(&ports("vip", vec![proxy("udp", PublishMode::Ingress)])).contains(
            "invalid port 8080:80/udp: proxy-protocol=v2 is for tcp ports; Shoal does not relay udp"
        )
    );
    assert!(
        refused(&ports("vip", vec![proxy("tcp", PublishMode::Host)])).contains(
            "invalid port 8080:80/tcp: proxy-protocol=v2 is for ports published in ingress mode"
        )
    );
    let with_dsr = PortConfig {
        direct_server_return: true,
        ..proxy("tcp", PublishMode::Ingress)
    };
    assert!(
        refused(&ports("vip", vec![with_dsr]))
            .contains("proxy-protocol=v2 and dsr (direct server return) cannot be combined")
    );
    let v1 = PortConfig {
        proxy_protocol: "v1".into(),
        ..port(8080, 80, "tcp", PublishMode::Ingress)
    };
    assert!(
        refused(&ports("vip", vec![v1]))
            .contains("proxy-protocol \"v1\" is not supported (expected v2)")
    );
}

#[test]
fn networks_and_mode() {
    let attach = |target: &str, aliases: &[&str]| NetworkAttachmentConfig {
        target: target.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
    };
    accepted(&with_task(|t| {
        t.networks = vec![attach("front", &["www"]), attach("back", &[])]
    }));
    assert!(
        refused(&with_task(
            |t| t.networks = vec![attach("front", &[]), attach("front", &["x"])]
        ))
        .contains("network front is attached twice")
    );
    assert!(
        refused(&with_task(|t| t.networks = vec![attach("", &[])])).contains("invalid network")
    );
    assert!(
        refused(&with_task(|t| t.networks = vec![attach("f", &["a b"])])).contains("alias \"a b\"")
    );
    let mut s = spec();
    s.mode = 7;
    assert_eq!(refused(&s), "invalid mode 7: not a value Shoal knows");
}

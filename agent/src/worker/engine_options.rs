//! Docker's per-container options of a task (`service create --init`, `-t`,
//! `--read-only`, `--host`, `--dns*`, `--sysctl`, `--cap-add/--cap-drop`,
//! `--ulimit`, `--group`, `--oom-score-adj`, `--log-driver`,
//! `--limit-pids`, `--health-start-interval`) onto the body the engine is
//! asked to create, as swarmkit's container adapter maps them. Pure: the
//! manager checked every value, and the engine applies them.
//!
//! DNS as Swarm has it: a task on a network resolves through the node's
//! DNS server (its resolv.conf, written by [`super::files`], names it), so
//! the service's `--dns` servers become that task's upstreams there
//! ([`crate::dns::Records`]) and its search domains and options go into that
//! resolv.conf; a task on no network gets Docker's own resolv.conf, built
//! from all three.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfigLogConfig, ResourcesUlimits};
use shoal_api::{
    engine,
    pb::{ContainerSpec, Task},
};

/// Sets `task`'s options on `body`. `own_resolv_conf`: the agent writes
/// the container's resolv.conf (the task is on a network with names).
pub fn apply(
    task: &Task,
    c: &ContainerSpec,
    own_resolv_conf: bool,
    body: &mut ContainerCreateBody,
) {
    let spec = task.spec.clone().unwrap_or_default();
    let host = body.host_config.get_or_insert_with(Default::default);
    let list = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    host.init = c.init;
    host.readonly_rootfs = c.read_only.then_some(true);
    let extra_hosts: Vec<String> = c
        .hosts
        .iter()
        .flat_map(|l| engine::extra_hosts(l))
        .collect();
    host.extra_hosts = list(&extra_hosts);
    if let Some(dns) = c.dns_config.as_ref().filter(|_| !own_resolv_conf) {
        host.dns = list(&dns.nameservers);
        host.dns_search = list(&dns.search);
        host.dns_options = list(&dns.options);
    }
    host.sysctls =
        (!c.sysctls.is_empty()).then(|| c.sysctls.clone().into_iter().collect::<HashMap<_, _>>());
    host.cap_add = list(&c.capability_add);
    host.cap_drop = list(&c.capability_drop);
    host.ulimits = (!c.ulimits.is_empty()).then(|| {
        c.ulimits
            .iter()
            .map(|u| ResourcesUlimits {
                name: Some(u.name.clone()),
                soft: Some(u.soft),
                hard: Some(u.hard),
            })
            .collect()
    });
    host.group_add = list(&c.groups);
    host.oom_score_adj = c.oom_score_adj;
    host.pids_limit = spec
        .resources
        .as_ref()
        .and_then(|r| r.limits)
        .map(|l| l.pids)
        .filter(|p| *p > 0);
    host.log_config = spec
        .log_driver
        .as_ref()
        .filter(|d| !d.name.is_empty())
        .map(|d| HostConfigLogConfig {
            typ: Some(d.name.clone()),
            config: (!d.options.is_empty())
                .then(|| d.options.clone().into_iter().collect::<HashMap<_, _>>()),
        });
    body.tty = c.tty.then_some(true);
    body.open_stdin = c.open_stdin.then_some(true);
    body.domainname = (!c.domainname.is_empty()).then(|| c.domainname.clone());
    if let (Some(health), Some(spec)) = (body.healthcheck.as_mut(), &c.healthcheck)
        && spec.start_interval_ms > 0
    {
        health.start_interval = Some(spec.start_interval_ms * 1_000_000);
    }
    let resources = engine::resource_env(&task.assigned_generic_resources);
    if !resources.is_empty() {
        body.env.get_or_insert_with(Vec::new).extend(resources);
    }
}

/// The resolv.conf of a task on a network: the node's DNS server, then the
/// service's search domains and options (`ndots:0` unless it sets ndots,
/// as Docker's embedded DNS writes it).
pub fn resolv_conf(nameserver: std::net::Ipv4Addr, c: &ContainerSpec) -> String {
    let dns = c.dns_config.clone().unwrap_or_default();
    let mut text = format!("nameserver {nameserver}\n");
    if !dns.search.is_empty() {
        text.push_str(&format!("search {}\n", dns.search.join(" ")));
    }
    let mut options = dns.options.clone();
    if !options.iter().any(|o| o.starts_with("ndots:")) {
        options.insert(0, "ndots:0".into());
    }
    text.push_str(&format!("options {}\n", options.join(" ")));
    text
}

#[cfg(test)]
mod tests {
    use shoal_api::{
        engine::named,
        pb::{
            DnsConfig, HealthConfig, LogDriver, ResourceRequirements, Resources, TaskSpec, Ulimit,
        },
    };

    use super::*;

    fn task(c: &ContainerSpec) -> Task {
        Task {
            spec: Some(TaskSpec {
                container: Some(c.clone()),
                log_driver: Some(LogDriver {
                    name: "json-file".into(),
                    options: [("max-size".to_owned(), "1m".to_owned())].into(),
                }),
                resources: Some(ResourceRequirements {
                    limits: Some(Resources {
                        pids: 64,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            assigned_generic_resources: vec![named("gpu", "UUID1")],
            ..Default::default()
        }
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            init: Some(true),
            tty: true,
            open_stdin: true,
            read_only: true,
            hosts: vec!["10.0.0.5 db db.local".into()],
            dns_config: Some(DnsConfig {
                nameservers: vec!["192.0.2.53".into()],
                search: vec!["example.com".into()],
                options: vec!["timeout:1".into()],
            }),
            sysctls: [("net.core.somaxconn".to_owned(), "512".to_owned())].into(),
            capability_add: vec!["CAP_NET_ADMIN".into()],
            capability_drop: vec!["CAP_MKNOD".into()],
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048,
            }],
            groups: vec!["audio".into()],
            domainname: "example.com".into(),
            oom_score_adj: Some(-100),
            healthcheck: Some(HealthConfig {
                start_interval_ms: 250,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_option_reaches_the_engine() {
        let c = spec();
        let mut body = ContainerCreateBody {
            env: Some(vec!["A=1".into()]),
            healthcheck: Some(Default::default()),
            ..Default::default()
        };
        apply(&task(&c), &c, false, &mut body);
        let host = body.host_config.clone().unwrap();
        assert_eq!(host.init, Some(true));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(
            host.extra_hosts.unwrap(),
            ["db:10.0.0.5", "db.local:10.0.0.5"]
        );
        assert_eq!(host.dns.unwrap(), ["192.0.2.53"]);
        assert_eq!(host.dns_search.unwrap(), ["example.com"]);
        assert_eq!(host.dns_options.unwrap(), ["timeout:1"]);
        assert_eq!(host.sysctls.unwrap()["net.core.somaxconn"], "512");
        assert_eq!(host.cap_add.unwrap(), ["CAP_NET_ADMIN"]);
        assert_eq!(host.cap_drop.unwrap(), ["CAP_MKNOD"]);
        let ulimit = &host.ulimits.unwrap()[0];
        assert_eq!(
            (ulimit.name.as_deref(), ulimit.soft, ulimit.hard),
            (Some("nofile"), Some(1024), Some(2048))
        );
        assert_eq!(host.group_add.unwrap(), ["audio"]);
        assert_eq!(host.oom_score_adj, Some(-100));
        assert_eq!(host.pids_limit, Some(64));
        let log = host.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(log.config.unwrap()["max-size"], "1m");
        assert_eq!((body.tty, body.open_stdin), (Some(true), Some(true)));
        assert_eq!(body.domainname.as_deref(), Some("example.com"));
        assert_eq!(body.healthcheck.unwrap().start_interval, Some(250_000_000));
        assert_eq!(body.env.unwrap(), ["A=1", "DOCKER_RESOURCE_GPU=UUID1"]);
    }

    #[test]
    fn a_task_on_a_network_keeps_the_nodes_resolver_with_the_services_search_and_options() {
        let c = spec();
        let mut body = ContainerCreateBody::default();
        apply(&task(&c), &c, true, &mut body);
        let host = body.host_config.unwrap();
        assert_eq!((host.dns, host.dns_search), (None, None));
        assert_eq!(
            resolv_conf("198.18.1.1".parse().unwrap(), &c),
            "nameserver 198.18.1.1\nsearch example.com\noptions ndots:0 timeout:1\n"
        );
        let mut own_ndots = c.clone();
        own_ndots.dns_config.as_mut().unwrap().options = vec!["ndots:3".into()];
        assert_eq!(
            resolv_conf("198.18.1.1".parse().unwrap(), &own_ndots),
            "nameserver 198.18.1.1\nsearch example.com\noptions ndots:3\n"
        );
        assert_eq!(
            resolv_conf("198.18.1.1".parse().unwrap(), &ContainerSpec::default()),
            "nameserver 198.18.1.1\noptions ndots:0\n"
        );
    }

    #[test]
    fn a_plain_spec_asks_for_nothing() {
        let c = ContainerSpec::default();
        let mut body = ContainerCreateBody::default();
        apply(&Task::default(), &c, false, &mut body);
        let host = body.host_config.unwrap();
        assert_eq!(host, Default::default());
        assert_eq!(
            (body.tty, body.open_stdin, body.domainname),
            (None, None, None)
        );
        assert_eq!(body.env, None);
    }
}

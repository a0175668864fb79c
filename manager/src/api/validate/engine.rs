//! Docker's per-container options in a task spec (init, tty, read-only
//! root, hosts, DNS, sysctls, capabilities, ulimits, groups, domain name,
//! OOM score, log driver, pids limit, generic resources): each checked with
//! the readers the CLI uses (`shoal_api::engine`), and refused with the
//! flag's name, so that a value the engine would refuse fails the create
//! or update instead of every task at run time.

use std::collections::BTreeSet;

use shoal_api::{
    engine,
    pb::{
        ContainerSpec, GenericResource, LogDriver, ResourceRequirements, TaskSpec, generic_resource,
    },
};

use super::{Check, Invalid, invalid};

/// A reader's refusal as the client sees it (its reasons name the field:
/// "invalid ulimit …", "invalid sysctl …").
fn refused(result: Result<(), String>) -> Check {
    result.map_err(Invalid)
}

pub(super) fn check(task: &TaskSpec) -> Check {
    if let Some(c) = &task.container {
        container(c)?;
    }
    if let Some(driver) = &task.log_driver {
        log_driver(driver)?;
    }
    if let Some(resources) = &task.resources {
        limits_and_generic(resources)?;
    }
    Ok(())
}

/// The most generic resources a node may advertise.
const MAX_NODE_GENERIC_RESOURCES: usize = 1024;

/// What a registering node says it offers (`--generic-resource`): each
/// well formed, a bounded number.
pub fn node_generic_resources(resources: &[GenericResource]) -> Check {
    if resources.len() > MAX_NODE_GENERIC_RESOURCES {
        return invalid!(
            "invalid generic resources: {} advertised, at most {MAX_NODE_GENERIC_RESOURCES}",
            resources.len()
        );
    }
    for r in resources {
        refused(engine::check_generic_resource(r))?;
    }
    Ok(())
}

fn container(c: &ContainerSpec) -> Check {
    for line in &c.hosts {
        refused(engine::check_host_line(line))?;
    }
    if let Some(dns) = &c.dns_config {
        for server in &dns.nameservers {
            refused(engine::check_nameserver(server).map(drop))?;
        }
        for domain in &dns.search {
            refused(engine::check_dns_search(domain))?;
        }
        for option in &dns.options {
            refused(engine::check_dns_option(option))?;
        }
    }
    for (name, value) in &c.sysctls {
        refused(engine::check_sysctl(name, value))?;
    }
    for (flag, list) in [
        ("cap-add", &c.capability_add),
        ("cap-drop", &c.capability_drop),
    ] {
        if let Some(unknown) = list.iter().find(|cap| !engine::is_capability(cap)) {
            return invalid!(
                "invalid {flag} {unknown:?}: not a Linux capability (e.g. NET_ADMIN, CAP_SYS_TIME, or ALL)"
            );
        }
    }
    let mut ulimits = BTreeSet::new();
    for ulimit in &c.ulimits {
        refused(engine::check_ulimit(ulimit))?;
        if !ulimits.insert(ulimit.name.as_str()) {
            return invalid!("invalid ulimit {}: given twice", ulimit.name);
        }
    }
    for group in &c.groups {
        refused(engine::check_group(group))?;
    }
    if !c.domainname.is_empty() {
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if c.domainname.len() > 255 || !c.domainname.split('.').all(label_ok) {
            return invalid!(
                "invalid domainname {:?}: dot-separated labels of letters, digits and '-' are expected",
                c.domainname
            );
        }
    }
    if let Some(adj) = c.oom_score_adj
        && !engine::OOM_SCORE_ADJ.contains(&adj)
    {
        return invalid!("invalid oom-score-adj {adj}: expected -1000 to 1000");
    }
    Ok(())
}

/// A driver name as the engine takes it (a plugin's may carry a tag), and
/// options with names.
fn log_driver(driver: &LogDriver) -> Check {
    let name_ok = driver
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'));
    if driver.name.is_empty() {
        if !driver.options.is_empty() {
            return invalid!("invalid log-opt: options need a log-driver");
        }
        return Ok(());
    }
    if !name_ok {
        return invalid!(
            "invalid log-driver {:?}: a driver name (json-file, local, syslog, journald, none, …) is expected",
            driver.name
        );
    }
    if let Some((key, value)) = driver
        .options
        .iter()
        .find(|(k, v)| k.trim().is_empty() || k.contains('\0') || v.contains('\0'))
    {
        return invalid!("invalid log-opt {key:?}={value:?}: an option needs a name");
    }
    Ok(())
}

fn limits_and_generic(r: &ResourceRequirements) -> Check {
    let limits = r.limits.unwrap_or_default();
    if limits.pids < 0 {
        return invalid!(
            "invalid limit-pids {}: cannot be negative (0 means unlimited)",
            limits.pids
        );
    }
    if r.reservations.is_some_and(|res| res.pids != 0) {
        return invalid!("invalid reservations: pids is a limit (limit-pids), not a reservation");
    }
    let mut kinds = BTreeSet::new();
    for resource in &r.generic_reservations {
        refused(engine::check_generic_resource(resource))?;
        if let Some(generic_resource::Value::Named(name)) = &resource.value {
            // Docker's words: a service reserves counts; nodes name theirs.
            return invalid!(
                "invalid generic-resource request `{}={name}`, Named Generic Resources is not supported for service create or update",
                resource.kind
            );
        }
        if !kinds.insert(resource.kind.as_str()) {
            return invalid!(
                "invalid generic-resource {}: reserved twice (give one count)",
                resource.kind
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use shoal_api::{
        engine::{discrete, named},
        pb::{
            DnsConfig, HealthConfig, ResourceRequirements, Resources, ServiceSpec, TaskSpec, Ulimit,
        },
    };

    use super::super::check_service;
    use super::*;

    fn with_task(change: impl FnOnce(&mut TaskSpec)) -> ServiceSpec {
        let mut task = TaskSpec {
            container: Some(ContainerSpec {
                image: "shoal/echo:1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        change(&mut task);
        ServiceSpec {
            name: "web".into(),
            replicas: 1,
            task: Some(task),
            ..Default::default()
        }
    }

    fn with_container(change: impl FnOnce(&mut ContainerSpec)) -> ServiceSpec {
        with_task(|t| change(t.container.as_mut().expect("a container")))
    }

    fn refused(spec: &ServiceSpec) -> String {
        match check_service(spec, "") {
            Ok(()) => panic!("accepted: {spec:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn every_option_docker_takes_passes() {
        let spec = with_task(|t| {
            let c = t.container.as_mut().unwrap();
            c.init = Some(true);
            c.tty = true;
            c.open_stdin = true;
            c.read_only = true;
            c.hosts = vec!["10.0.0.5 db db.local".into(), "::1 v6".into()];
            c.dns_config = Some(DnsConfig {
                nameservers: vec!["192.0.2.53".into()],
                search: vec!["example.com".into()],
                options: vec!["ndots:2".into()],
            });
            c.sysctls = [("net.core.somaxconn".to_owned(), "1024".to_owned())].into();
            c.capability_add = vec!["NET_ADMIN".into(), "CAP_SYS_TIME".into()];
            c.capability_drop = vec!["ALL".into()];
            c.ulimits = vec![Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048,
            }];
            c.groups = vec!["audio".into(), "1001".into()];
            c.domainname = "example.com".into();
            c.oom_score_adj = Some(-500);
            c.healthcheck = Some(HealthConfig {
                start_interval_ms: 500,
                ..Default::default()
            });
            t.log_driver = Some(LogDriver {
                name: "json-file".into(),
                options: [("max-size".to_owned(), "10m".to_owned())].into(),
            });
            t.resources = Some(ResourceRequirements {
                limits: Some(Resources {
                    pids: 100,
                    ..Default::default()
                }),
                generic_reservations: vec![discrete("gpu", 2)],
                ..Default::default()
            });
        });
        check_service(&spec, "").unwrap();
    }

    #[test]
    fn bad_values_are_refused_naming_the_field_and_the_value() {
        let cases: Vec<(ServiceSpec, &str)> = vec![
            (
                with_container(|c| {
                    c.ulimits = vec![Ulimit {
                        name: "nofiles".into(),
                        soft: 1,
                        hard: 1,
                    }]
                }),
                "invalid ulimit type: \"nofiles\"",
            ),
            (
                with_container(|c| {
                    c.ulimits = vec![Ulimit {
                        name: "nofile".into(),
                        soft: 4096,
                        hard: 1024,
                    }]
                }),
                "invalid ulimit nofile: soft limit must be less than or equal to hard limit: 4096 > 1024",
            ),
            (
                with_container(|c| {
                    let u = Ulimit {
                        name: "nproc".into(),
                        soft: 1,
                        hard: 1,
                    };
                    c.ulimits = vec![u.clone(), u];
                }),
                "invalid ulimit nproc: given twice",
            ),
            (
                with_container(|c| c.sysctls = [("vm.swappiness".into(), "1".into())].into()),
                "invalid sysctl vm.swappiness: not in a separate kernel namespace",
            ),
            (
                with_container(|c| c.sysctls = [("net..x".into(), "1".into())].into()),
                "invalid sysctl \"net..x\"",
            ),
            (
                with_container(|c| c.capability_add = vec!["NET_ADMINS".into()]),
                "invalid cap-add \"NET_ADMINS\": not a Linux capability",
            ),
            (
                with_container(|c| c.capability_drop = vec!["".into()]),
                "invalid cap-drop \"\"",
            ),
            (
                with_container(|c| c.hosts = vec!["db 10.0.0.5".into()]),
                "invalid host \"db 10.0.0.5\": \"db\" is not an IP address",
            ),
            (
                with_container(|c| c.hosts = vec!["10.0.0.5".into()]),
                "invalid host \"10.0.0.5\": no host name",
            ),
            (
                with_container(|c| {
                    c.dns_config = Some(DnsConfig {
                        nameservers: vec!["dns.example".into()],
                        ..Default::default()
                    })
                }),
                "invalid DNS server \"dns.example\"",
            ),
            (
                with_container(|c| {
                    c.dns_config = Some(DnsConfig {
                        search: vec!["-x.com".into()],
                        ..Default::default()
                    })
                }),
                "invalid DNS search domain \"-x.com\"",
            ),
            (
                with_container(|c| {
                    c.dns_config = Some(DnsConfig {
                        options: vec!["ndots: 2".into()],
                        ..Default::default()
                    })
                }),
                "invalid DNS option \"ndots: 2\"",
            ),
            (
                with_container(|c| c.groups = vec!["a b".into()]),
                "invalid group \"a b\"",
            ),
            (
                with_container(|c| c.domainname = "bad_domain".into()),
                "invalid domainname \"bad_domain\"",
            ),
            (
                with_container(|c| c.oom_score_adj = Some(1001)),
                "invalid oom-score-adj 1001: expected -1000 to 1000",
            ),
            (
                with_container(|c| {
                    c.healthcheck = Some(HealthConfig {
                        start_interval_ms: -1,
                        ..Default::default()
                    })
                }),
                "invalid health-start-interval -1ms: cannot be negative",
            ),
            (
                with_task(|t| {
                    t.resources = Some(ResourceRequirements {
                        limits: Some(Resources {
                            pids: -1,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                }),
                "invalid limit-pids -1: cannot be negative",
            ),
            (
                with_task(|t| {
                    t.resources = Some(ResourceRequirements {
                        reservations: Some(Resources {
                            pids: 5,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                }),
                "invalid reservations: pids is a limit",
            ),
            (
                with_task(|t| {
                    t.resources = Some(ResourceRequirements {
                        generic_reservations: vec![named("gpu", "UUID1")],
                        ..Default::default()
                    })
                }),
                "invalid generic-resource request `gpu=UUID1`, Named Generic Resources is not supported",
            ),
            (
                with_task(|t| {
                    t.resources = Some(ResourceRequirements {
                        generic_reservations: vec![discrete("gpu", 0)],
                        ..Default::default()
                    })
                }),
                "invalid generic resource gpu=0: a count is at least 1",
            ),
            (
                with_task(|t| {
                    t.resources = Some(ResourceRequirements {
                        generic_reservations: vec![discrete("gpu", 1), discrete("gpu", 2)],
                        ..Default::default()
                    })
                }),
                "invalid generic-resource gpu: reserved twice",
            ),
            (
                with_task(|t| {
                    t.log_driver = Some(LogDriver {
                        name: "json file".into(),
                        ..Default::default()
                    })
                }),
                "invalid log-driver \"json file\"",
            ),
            (
                with_task(|t| {
                    t.log_driver = Some(LogDriver {
                        name: String::new(),
                        options: [("max-size".to_owned(), "1m".to_owned())].into(),
                    })
                }),
                "invalid log-opt: options need a log-driver",
            ),
        ];
        for (spec, expected) in cases {
            let err = refused(&spec);
            assert!(
                err.starts_with(expected),
                "expected {expected:?}, got {err:?}"
            );
        }
    }
}

//! `service inspect` for Docker's per-container options: the fields of
//! Docker's JSON (`TaskTemplate.ContainerSpec.Init`, `.TTY`, `.ReadOnly`,
//! `.Hosts`, `.DNSConfig`, `.Sysctls`, `.CapabilityAdd`, `.Ulimits`, …,
//! `TaskTemplate.LogDriver`, `Resources.Limits.Pids`,
//! `Resources.Reservations.GenericResources`), present only when set, as Go's
//! `omitempty` leaves them; and their lines in `--pretty`.

use serde_json::{Value, json};
use shoal_api::{
    engine,
    pb::{ContainerSpec, GenericResource, TaskSpec, generic_resource},
};

/// Inserts `key` into the object `at` when `value` is not empty.
fn put(at: &mut Value, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Number(_) => false,
    };
    if !empty && let Some(object) = at.as_object_mut() {
        object.insert(key.to_owned(), value);
    }
}

/// Docker's JSON of one generic resource.
fn generic_json(r: &GenericResource) -> Value {
    match &r.value {
        Some(generic_resource::Value::Discrete(n)) => {
            json!({ "DiscreteResourceSpec": { "Kind": r.kind, "Value": n } })
        }
        Some(generic_resource::Value::Named(name)) => {
            json!({ "NamedResourceSpec": { "Kind": r.kind, "Value": name } })
        }
        None => Value::Null,
    }
}

/// Docker's JSON of a list of generic resources (a node's, a service's
/// reservations).
pub(crate) fn generic_resources_json(resources: &[GenericResource]) -> Value {
    resources.iter().map(generic_json).collect()
}

/// Adds the options of `task` to `template` (`Spec.TaskTemplate`).
pub(super) fn add_to_json(template: &mut Value, task: &TaskSpec) {
    let c = task.container.clone().unwrap_or_default();
    let container = &mut template["ContainerSpec"];
    put(container, "Command", json!(c.command));
    put(container, "Groups", json!(c.groups));
    // A pointer in Docker's spec: shown whenever set, false included.
    if let Some(init) = c.init
        && let Some(object) = container.as_object_mut()
    {
        object.insert("Init".into(), json!(init));
    }
    put(container, "TTY", json!(c.tty));
    put(container, "OpenStdin", json!(c.open_stdin));
    put(container, "ReadOnly", json!(c.read_only));
    put(container, "Hosts", json!(c.hosts));
    if let Some(dns) = &c.dns_config {
        let mut config = json!({});
        put(&mut config, "Nameservers", json!(dns.nameservers));
        put(&mut config, "Search", json!(dns.search));
        put(&mut config, "Options", json!(dns.options));
        container["DNSConfig"] = config;
    }
    put(container, "Sysctls", json!(c.sysctls));
    put(container, "CapabilityAdd", json!(c.capability_add));
    put(container, "CapabilityDrop", json!(c.capability_drop));
    put(
        container,
        "Ulimits",
        json!(
            c.ulimits
                .iter()
                .map(|u| json!({ "Name": u.name, "Hard": u.hard, "Soft": u.soft }))
                .collect::<Vec<_>>()
        ),
    );
    if let Some(adj) = c.oom_score_adj.filter(|a| *a != 0) {
        container["OomScoreAdj"] = json!(adj);
    }
    put(container, "Domainname", json!(c.domainname));
    if let Some(h) = c.healthcheck.as_ref().filter(|h| h.start_interval_ms > 0) {
        container["Healthcheck"]["StartInterval"] = json!(h.start_interval_ms * 1_000_000);
    }
    if let Some(driver) = task.log_driver.as_ref().filter(|d| !d.name.is_empty()) {
        let mut log = json!({ "Name": driver.name });
        put(&mut log, "Options", json!(driver.options));
        template["LogDriver"] = log;
    }
    let resources = task.resources.clone().unwrap_or_default();
    if let Some(pids) = resources.limits.map(|l| l.pids).filter(|p| *p > 0) {
        let limits = &mut template["Resources"]["Limits"];
        if limits.is_null() {
            *limits = json!({});
        }
        limits["Pids"] = json!(pids);
    }
    if !resources.generic_reservations.is_empty() {
        let reservations = &mut template["Resources"]["Reservations"];
        if reservations.is_null() {
            *reservations = json!({});
        }
        reservations["GenericResources"] = generic_resources_json(&resources.generic_reservations);
    }
}

/// The container's lines of `--pretty`, after its image, args and env
/// (Docker's wording where Docker prints them).
pub(super) fn print_container(c: &ContainerSpec) {
    if !c.command.is_empty() {
        println!(" Entrypoint:\t{}", c.command.join(" "));
    }
    if let Some(init) = c.init {
        println!(" Init:\t\t{init}");
    }
    if c.tty {
        println!(" TTY:\t\ttrue");
    }
    if c.read_only {
        println!(" Read only:\ttrue");
    }
    if !c.groups.is_empty() {
        println!(" Groups:\t{}", c.groups.join(", "));
    }
    if let Some(adj) = c.oom_score_adj.filter(|a| *a != 0) {
        println!(" OOM score adj:\t{adj}");
    }
    if !c.capability_add.is_empty() || !c.capability_drop.is_empty() {
        println!("Capabilities:");
        if !c.capability_add.is_empty() {
            println!(" Add: {}", c.capability_add.join(", "));
        }
        if !c.capability_drop.is_empty() {
            println!(" Drop: {}", c.capability_drop.join(", "));
        }
    }
    if !c.sysctls.is_empty() {
        println!("SysCtls:");
        for (k, v) in &c.sysctls {
            println!(" {k}: {v}");
        }
    }
    if !c.ulimits.is_empty() {
        println!("Ulimits:");
        for u in &c.ulimits {
            println!(" {}: {}:{}", u.name, u.soft, u.hard);
        }
    }
    if !c.hosts.is_empty() {
        println!("Hosts:");
        for line in &c.hosts {
            println!(" {line}");
        }
    }
    if let Some(dns) = &c.dns_config {
        println!("DNS:");
        for (title, list) in [
            ("Nameservers", &dns.nameservers),
            ("Search", &dns.search),
            ("Options", &dns.options),
        ] {
            if !list.is_empty() {
                println!(" {title}:\t{}", list.join(" "));
            }
        }
    }
}

/// The task's lines of `--pretty`: its log driver, pids limit and generic
/// resources.
pub(super) fn print_task(task: &TaskSpec) {
    if let Some(driver) = task.log_driver.as_ref().filter(|d| !d.name.is_empty()) {
        println!("Log Driver:");
        println!(" Name:\t\t{}", driver.name);
        if !driver.options.is_empty() {
            println!(" LogOpts:");
            for (k, v) in &driver.options {
                println!("  {k}:       {v}");
            }
        }
    }
    let resources = task.resources.clone().unwrap_or_default();
    if let Some(pids) = resources.limits.map(|l| l.pids).filter(|p| *p > 0) {
        println!("  PIDs:\t\t{pids}");
    }
    if !resources.generic_reservations.is_empty() {
        let list: Vec<String> = resources
            .generic_reservations
            .iter()
            .map(engine::format_generic_resource)
            .collect();
        println!(" Generic resources:\t{}", list.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use shoal_api::pb::{
        DnsConfig, HealthConfig, LogDriver, ResourceRequirements, Resources, Ulimit,
    };

    use super::*;

    #[test]
    fn the_options_take_dockers_names_and_unset_ones_stay_out() {
        let task = TaskSpec {
            container: Some(ContainerSpec {
                init: Some(false),
                tty: true,
                read_only: true,
                hosts: vec!["10.0.0.5 db".into()],
                dns_config: Some(DnsConfig {
                    search: vec!["example.com".into()],
                    ..Default::default()
                }),
                sysctls: [("net.core.somaxconn".to_owned(), "1024".to_owned())].into(),
                capability_add: vec!["CAP_NET_ADMIN".into()],
                ulimits: vec![Ulimit {
                    name: "nofile".into(),
                    soft: 1024,
                    hard: 2048,
                }],
                healthcheck: Some(HealthConfig {
                    start_interval_ms: 1_000,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            log_driver: Some(LogDriver {
                name: "json-file".into(),
                options: [("max-size".to_owned(), "10m".to_owned())].into(),
            }),
            resources: Some(ResourceRequirements {
                limits: Some(Resources {
                    pids: 100,
                    ..Default::default()
                }),
                generic_reservations: vec![engine::discrete("gpu", 2)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut template = json!({
            "ContainerSpec": { "Image": "x", "Healthcheck": { "Test": [] } },
            "Resources": { "Limits": { "NanoCPUs": 0 }, "Reservations": null },
        });
        add_to_json(&mut template, &task);
        let c = &template["ContainerSpec"];
        assert_eq!(c["Init"], json!(false), "set false: shown");
        assert_eq!(
            (c["TTY"].clone(), c["ReadOnly"].clone()),
            (json!(true), json!(true))
        );
        assert!(
            c.get("OpenStdin").is_none() && c.get("Groups").is_none(),
            "{c}"
        );
        assert_eq!(c["Hosts"], json!(["10.0.0.5 db"]));
        assert_eq!(c["DNSConfig"], json!({ "Search": ["example.com"] }));
        assert_eq!(c["Sysctls"]["net.core.somaxconn"], "1024");
        assert_eq!(c["CapabilityAdd"], json!(["CAP_NET_ADMIN"]));
        assert!(c.get("CapabilityDrop").is_none());
        assert_eq!(
            c["Ulimits"],
            json!([{ "Name": "nofile", "Hard": 2048, "Soft": 1024 }])
        );
        assert_eq!(c["Healthcheck"]["StartInterval"], json!(1_000_000_000i64));
        assert_eq!(
            template["LogDriver"],
            json!({ "Name": "json-file", "Options": { "max-size": "10m" } })
        );
        assert_eq!(template["Resources"]["Limits"]["Pids"], json!(100));
        assert_eq!(
            template["Resources"]["Reservations"]["GenericResources"],
            json!([{ "DiscreteResourceSpec": { "Kind": "gpu", "Value": 2 } }])
        );
    }
}

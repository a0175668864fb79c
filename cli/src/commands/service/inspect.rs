//! `service inspect`: Docker's JSON shape and the `--pretty` text.

use serde_json::json;
use shoal_api::pb::{Resources, Service};

use crate::commands::service_flags as flags;
use crate::output::rfc3339;

pub(super) fn inspect_json(s: &Service) -> serde_json::Value {
    let meta = s.meta.clone().unwrap_or_default();
    let spec = s.spec.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let c = task.container.clone().unwrap_or_default();
    let mode = super::job::mode_json(&spec);
    let restart = task.restart.unwrap_or_default();
    let placement = task.placement.clone().unwrap_or_default();
    let res = task.resources.clone().unwrap_or_default();
    let resources = |r: Option<Resources>| {
        r.map(|r| json!({ "NanoCPUs": r.nano_cpus, "MemoryBytes": r.memory_bytes }))
    };
    let endpoint = spec.endpoint.clone().unwrap_or_default();
    let ports: Vec<_> = endpoint
        .ports
        .iter()
        .map(|p| {
            let mut port = json!({ "Protocol": p.protocol, "TargetPort": p.target_port, "PublishedPort": p.published_port, "PublishMode": p.publish_mode().word() });
            // Shoal's own field, only where set (Docker has no allow-list).
            if !p.allow.is_empty() {
                port["Allow"] = json!(p.allow);
            }
            // Shoal's own, shown only when set (Docker has no such field).
            if p.direct_server_return {
                port["DirectServerReturn"] = json!(true);
            }
            if !p.proxy_protocol.is_empty() {
                port["ProxyProtocol"] = json!(p.proxy_protocol);
            }
            port
        })
        .collect();
    let update_config = |u: &Option<shoal_api::pb::UpdateConfig>| {
        u.as_ref().map(|u| {
            json!({
                "Parallelism": u.parallelism.unwrap_or(1),
                "Delay": u.delay_ms * 1_000_000,
                "FailureAction": format!("{:?}", u.failure_action()).to_lowercase(),
                "Monitor": u.monitor_ms.unwrap_or(5_000) * 1_000_000,
                "MaxFailureRatio": u.max_failure_ratio,
                "Order": if u.order() == shoal_api::pb::UpdateOrder::StartFirst { "start-first" } else { "stop-first" },
            })
        })
    };
    let update_status = s.update_status.as_ref().map(|u| {
        json!({
            "State": u.state,
            "StartedAt": rfc3339(u.started_at),
            "CompletedAt": if u.completed_at > 0 { Some(rfc3339(u.completed_at)) } else { None },
            "Message": u.message,
        })
    });
    let mut json = json!({
        "ID": meta.id,
        "Version": { "Index": meta.version },
        "UpdateStatus": update_status,
        "JobStatus": super::job::status_json(s),
        "CreatedAt": rfc3339(meta.created_at),
        "UpdatedAt": rfc3339(meta.updated_at),
        "Spec": {
            "Name": spec.name,
            "Labels": spec.labels,
            "UpdateConfig": update_config(&spec.update),
            "RollbackConfig": update_config(&spec.rollback),
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": c.image,
                    "Args": c.args,
                    "Env": c.env,
                    "Labels": c.labels,
                    "Hostname": c.hostname,
                    "User": c.user,
                    "Dir": c.dir,
                    "Mounts": c.mounts.iter().map(|m| json!({ "Type": m.r#type, "Source": m.source, "Target": m.target, "ReadOnly": m.read_only })).collect::<Vec<_>>(),
                    "Secrets": c.secrets.iter().map(|r| json!({ "SecretID": r.secret_id, "SecretName": r.secret_name, "File": r.file.as_ref().map(|f| json!({ "Name": f.name, "UID": f.uid, "GID": f.gid, "Mode": f.mode })) })).collect::<Vec<_>>(),
                    "Configs": c.configs.iter().map(|r| json!({ "ConfigID": r.config_id, "ConfigName": r.config_name, "File": r.file.as_ref().map(|f| json!({ "Name": f.name, "UID": f.uid, "GID": f.gid, "Mode": f.mode })) })).collect::<Vec<_>>(),
                    "Healthcheck": c.healthcheck.as_ref().map(|h| json!({ "Test": h.test, "Interval": h.interval_ms * 1_000_000, "Timeout": h.timeout_ms * 1_000_000, "Retries": h.retries, "StartPeriod": h.start_period_ms * 1_000_000 })),
                    "StopGracePeriod": c.stop_grace_period_ms.unwrap_or(10_000) * 1_000_000,
                    "StopSignal": c.stop_signal,
                },
                "Resources": { "Limits": resources(res.limits), "Reservations": resources(res.reservations) },
                "RestartPolicy": {
                    "Condition": restart.condition().word(),
                    "Delay": restart.delay_ms.unwrap_or(5_000) * 1_000_000,
                    "MaxAttempts": restart.max_attempts,
                    "Window": restart.window_ms * 1_000_000,
                },
                "Placement": {
                    "Constraints": placement.constraints,
                    "Preferences": placement.spread.iter().map(|d| json!({ "Spread": { "SpreadDescriptor": d } })).collect::<Vec<_>>(),
                    "MaxReplicas": placement.max_replicas_per_node,
                },
                "Networks": task.networks.iter().map(|n| json!({ "Target": n.target, "Aliases": n.aliases })).collect::<Vec<_>>(),
                "ForceUpdate": task.force_update,
            },
            "Mode": mode,
            "EndpointSpec": { "Mode": endpoint.mode, "Ports": ports },
        },
        "Endpoint": {
            "Spec": { "Mode": endpoint.mode, "Ports": ports },
            "Ports": ports,
            "VirtualIPs": s.endpoint.iter().flat_map(|e| &e.virtual_ips).map(|v| json!({ "NetworkID": v.network_id, "Addr": v.addr })).collect::<Vec<_>>(),
        },
    });
    super::inspect_engine::add_to_json(&mut json["Spec"]["TaskTemplate"], &task);
    super::lb_flags::add_to_json(&mut json["Spec"]["EndpointSpec"], &endpoint);
    super::lb_flags::add_to_json(&mut json["Endpoint"]["Spec"], &endpoint);
    json
}

pub(super) fn print_pretty(s: &Service, counters: &shoal_api::pb::ServiceCounters) {
    let meta = s.meta.clone().unwrap_or_default();
    let spec = s.spec.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let c = task.container.clone().unwrap_or_default();
    let restart = task.restart.unwrap_or_default();
    println!();
    println!("ID:\t\t{}", meta.id);
    println!("Name:\t\t{}", spec.name);
    if !spec.labels.is_empty() {
        println!("Labels:");
        for (k, v) in &spec.labels {
            println!(" {k}={v}");
        }
    }
    for line in super::job::pretty_mode(&spec) {
        println!("{line}");
    }
    if let Some(p) = &task.placement
        && (!p.constraints.is_empty() || !p.spread.is_empty() || p.max_replicas_per_node > 0)
    {
        {
            println!("Placement:");
            if !p.constraints.is_empty() {
                println!(" Constraints:\t{:?}", p.constraints);
            }
            for d in &p.spread {
                println!(" Preferences:\tspread={d}");
            }
            if p.max_replicas_per_node > 0 {
                println!(" Max Replicas Per Node:\t{}", p.max_replicas_per_node);
            }
        }
    }
    if let Some(u) = &s.update_status {
        println!("UpdateStatus:");
        println!(" State:\t\t{}", u.state);
        println!(" Started:\t{}", crate::output::ago(u.started_at));
        if u.completed_at > 0 {
            println!(" Completed:\t{}", crate::output::ago(u.completed_at));
        }
        println!(" Message:\t{}", u.message);
    }
    for (title, config) in [
        ("UpdateConfig", &spec.update),
        ("RollbackConfig", &spec.rollback),
    ] {
        if spec.mode().is_job() {
            // Jobs are not updated in rolling batches: they have neither.
            continue;
        }
        let u = config.unwrap_or_default();
        println!("{title}:");
        println!(" Parallelism:\t{}", u.parallelism.unwrap_or(1));
        if u.delay_ms > 0 {
            println!(" Delay:\t\t{}", human_ms(u.delay_ms));
        }
        println!(
            " On failure:\t{}",
            format!("{:?}", u.failure_action()).to_lowercase()
        );
        println!(
            " Monitoring Period: {}",
            human_ms(u.monitor_ms.unwrap_or(5_000))
        );
        println!(" Max failure ratio: {}", u.max_failure_ratio);
        println!(
            " Update order:      {}",
            if u.order() == shoal_api::pb::UpdateOrder::StartFirst {
                "start-first"
            } else {
                "stop-first"
            }
        );
    }
    println!("RestartPolicy:");
    println!(" Condition:\t{}", restart.condition().word());
    println!(" Delay:\t\t{}", human_ms(restart.delay_ms.unwrap_or(5_000)));
    println!(" Max attempts:\t{}", restart.max_attempts);
    if restart.window_ms > 0 {
        println!(" Window:\t{}", human_ms(restart.window_ms));
    }
    println!("ContainerSpec:");
    println!(" Image:\t\t{}", c.image);
    if !c.args.is_empty() {
        println!(" Args:\t\t{}", c.args.join(" "));
    }
    if !c.env.is_empty() {
        println!(" Env:\t\t{}", c.env.join(" "));
    }
    println!(
        " Stop grace period:\t{}",
        human_ms(c.stop_grace_period_ms.unwrap_or(10_000))
    );
    super::inspect_engine::print_container(&c);
    if !c.mounts.is_empty() {
        println!("Mounts:");
        for m in &c.mounts {
            println!(
                " Target:\t{}\n  Source:\t{}\n  ReadOnly:\t{}\n  Type:\t\t{}",
                m.target, m.source, m.read_only, m.r#type
            );
        }
    }
    if !c.secrets.is_empty() {
        println!("Secrets:");
        for r in &c.secrets {
            println!(
                " Target:\t{}\n  Source:\t{}",
                r.file.as_ref().map(|f| f.name.as_str()).unwrap_or(""),
                r.secret_name
            );
        }
    }
    if !c.configs.is_empty() {
        println!("Configs:");
        for r in &c.configs {
            println!(
                " Target:\t{}\n  Source:\t{}",
                r.file.as_ref().map(|f| f.name.as_str()).unwrap_or(""),
                r.config_name
            );
        }
    }
    if let Some(r) = &task.resources {
        println!("Resources:");
        for (title, res) in [("Reservations", r.reservations), ("Limits", r.limits)] {
            if let Some(res) = res {
                println!(" {title}:");
                if res.nano_cpus > 0 {
                    println!("  CPU:\t\t{}", res.nano_cpus as f64 / 1e9);
                }
                if res.memory_bytes > 0 {
                    println!("  Memory:\t{}", flags::format_bytes(res.memory_bytes));
                }
            }
        }
    }
    super::inspect_engine::print_task(&task);
    let endpoint = spec.endpoint.unwrap_or_default();
    println!("Endpoint Mode:\t{}", endpoint.mode);
    super::lb_flags::print(&endpoint, human_ms);
    for vip in s.endpoint.iter().flat_map(|e| &e.virtual_ips) {
        println!(" VIP:\t\t{} (network {})", vip.addr, vip.network_id);
    }
    println!(
        "Load balancer:\t{} connections, {} packets, {} bytes (routing mesh and VIP, all nodes)",
        counters.connections, counters.packets, counters.bytes
    );
    if !endpoint.ports.is_empty() {
        println!("Ports:");
        for p in &endpoint.ports {
            println!(
                " PublishedPort = {}\n  Protocol = {}\n  TargetPort = {}\n  PublishMode = {}",
                p.published_port,
                p.protocol,
                p.target_port,
                p.publish_mode().word()
            );
            if !p.allow.is_empty() {
                println!("  Allow = {}", p.allow.join(", "));
            }
            if p.direct_server_return {
                println!("  DirectServerReturn = true");
            }
            if !p.proxy_protocol.is_empty() {
                println!("  ProxyProtocol = {}", p.proxy_protocol);
            }
        }
    }
}

fn human_ms(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

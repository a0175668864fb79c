//! Merging a later file into an earlier one, by Docker's rules
//! (`cli/compose/loader/merge.go`: mergo with override and appended
//! slices, plus its special cases), checked against `docker stack config`:
//!
//! - a value set later wins, but an empty or zero one (`""`, `false`, `0`
//!   where Docker's field is not a pointer) leaves the earlier one;
//! - lists are appended (`dns`, `cap_add`, constraints, even
//!   `healthcheck.test`), except `command` and `entrypoint` (replaced);
//! - `ports` are merged by published port, `volumes` by target, `secrets`
//!   and `configs` by source, each then sorted by that key;
//! - `environment`, `labels`, `sysctls`, `deploy.labels`, logging options
//!   and service `networks` merge key by key, whatever list or map form
//!   each file used (the forms are one by now);
//! - `logging` with another driver replaces the whole block;
//! - a top-level network, volume, secret or config named in both files is
//!   the later file's, whole.
//!
//! One deliberate difference: Docker keys unpublished ports by their
//! published port (0), so all of them but one vanish when a service
//! appears in two files; Shoal keys those by target and protocol.

use std::collections::BTreeMap;

use super::model::{
    ComposeFile, Deploy, FileReference, Healthcheck, Limits, Logging, Placement, PortConfig,
    Reservations, Resources, RestartPolicy, Service, ServiceNetwork, ServiceVolume, UpdateConfig,
    units::GoDuration,
};

/// Merges `over` (a later file) into `base`.
pub fn merge(base: &mut ComposeFile, over: ComposeFile) {
    for (name, service) in over.services {
        match base.services.get_mut(&name) {
            Some(existing) => merge_service(existing, service),
            None => {
                base.services.insert(name, service);
            }
        }
    }
    base.networks.extend(over.networks);
    base.volumes.extend(over.volumes);
    base.secrets.extend(over.secrets);
    base.configs.extend(over.configs);
}

/// A non-pointer scalar of Docker's: the later one wins unless empty.
fn text(base: &mut Option<String>, over: Option<String>) {
    if let Some(over) = over
        && (!over.is_empty() || base.is_none())
    {
        *base = Some(over);
    }
}

fn string(base: &mut String, over: String) {
    if !over.is_empty() {
        *base = over;
    }
}

/// A pointer of Docker's (`*bool`, `*Duration`): set if unset, else
/// overridden by a non-zero value.
fn pointer<T: PartialEq + Default>(base: &mut Option<T>, over: Option<T>) {
    if let Some(over) = over
        && (base.is_none() || over != T::default())
    {
        *base = Some(over);
    }
}

/// Docker's `*uint64` special case: any value set later wins, 0 included.
fn counter(base: &mut Option<u64>, over: Option<u64>) {
    if over.is_some() {
        *base = over;
    }
}

fn append<T>(base: &mut Vec<T>, over: Vec<T>) {
    base.extend(over);
}

fn strings(base: &mut BTreeMap<String, String>, over: BTreeMap<String, String>) {
    base.extend(over);
}

/// `environment`'s values may be unset (None): a later unset or empty
/// value leaves an earlier one, as Docker's pointer values do.
fn environment(
    base: &mut BTreeMap<String, Option<String>>,
    over: BTreeMap<String, Option<String>>,
) {
    for (k, v) in over {
        match base.get_mut(&k) {
            None => {
                base.insert(k, v);
            }
            Some(existing) => {
                if v.as_ref().is_some_and(|v| !v.is_empty())
                    || existing.as_ref().is_none_or(String::is_empty)
                {
                    *existing = v;
                }
            }
        }
    }
}

/// Merges a list by key, later entries replacing earlier ones with the
/// same key, sorted by key.
fn keyed<T, K: Ord>(base: &mut Vec<T>, over: Vec<T>, key: impl Fn(&T) -> K) {
    let mut merged: BTreeMap<K, T> = BTreeMap::new();
    for item in std::mem::take(base).into_iter().chain(over) {
        merged.insert(key(&item), item);
    }
    *base = merged.into_values().collect();
}

fn port_key(p: &PortConfig) -> (u32, u32, String) {
    if p.published != 0 {
        (p.published, 0, String::new())
    } else {
        (0, p.target, p.protocol.clone())
    }
}

fn merge_service(base: &mut Service, over: Service) {
    if over.build.is_some() {
        base.build = over.build;
    }
    append(&mut base.cap_add, over.cap_add);
    append(&mut base.cap_drop, over.cap_drop);
    text(&mut base.cgroupns_mode, over.cgroupns_mode);
    text(&mut base.cgroup_parent, over.cgroup_parent);
    if over.command.as_ref().is_some_and(|c| !c.is_empty()) {
        base.command = over.command;
    }
    keyed(&mut base.configs, over.configs, |c: &FileReference| {
        c.source.clone()
    });
    text(&mut base.container_name, over.container_name);
    if let Some(over) = over.credential_spec {
        base.credential_spec.get_or_insert_default().extend(over);
    }
    append(&mut base.depends_on, over.depends_on);
    match (&mut base.deploy, over.deploy) {
        (Some(base), Some(over)) => merge_deploy(base, over),
        (base @ None, over) => *base = over,
        (_, None) => {}
    }
    append(&mut base.devices, over.devices);
    append(&mut base.dns, over.dns);
    append(&mut base.dns_opt, over.dns_opt);
    append(&mut base.dns_search, over.dns_search);
    text(&mut base.domainname, over.domainname);
    if over.entrypoint.as_ref().is_some_and(|c| !c.is_empty()) {
        base.entrypoint = over.entrypoint;
    }
    environment(&mut base.environment, over.environment);
    append(&mut base.env_file, over.env_file);
    append(&mut base.expose, over.expose);
    append(&mut base.external_links, over.external_links);
    append(&mut base.extra_hosts, over.extra_hosts);
    text(&mut base.hostname, over.hostname);
    match (&mut base.healthcheck, over.healthcheck) {
        (Some(base), Some(over)) => merge_healthcheck(base, over),
        (base @ None, over) => *base = over,
        (_, None) => {}
    }
    text(&mut base.image, over.image);
    pointer(&mut base.init, over.init);
    text(&mut base.ipc, over.ipc);
    text(&mut base.isolation, over.isolation);
    strings(&mut base.labels, over.labels);
    append(&mut base.links, over.links);
    match (&mut base.logging, over.logging) {
        (Some(base), Some(over)) => merge_logging(base, over),
        (base @ None, over) => *base = over,
        (_, None) => {}
    }
    text(&mut base.mac_address, over.mac_address);
    text(&mut base.network_mode, over.network_mode);
    for (name, network) in over.networks {
        match base.networks.get_mut(&name) {
            Some(Some(existing)) => {
                if let Some(network) = network {
                    merge_service_network(existing, network);
                }
            }
            Some(existing @ None) => *existing = network,
            None => {
                base.networks.insert(name, network);
            }
        }
    }
    text(&mut base.pid, over.pid);
    if over.pids_limit.is_some() {
        base.pids_limit = over.pids_limit;
    }
    keyed(&mut base.ports, over.ports, port_key);
    base.privileged |= over.privileged;
    base.read_only |= over.read_only;
    text(&mut base.restart, over.restart);
    keyed(&mut base.secrets, over.secrets, |s: &FileReference| {
        s.source.clone()
    });
    append(&mut base.security_opt, over.security_opt);
    text(&mut base.shm_size, over.shm_size);
    base.stdin_open |= over.stdin_open;
    pointer(&mut base.stop_grace_period, over.stop_grace_period);
    text(&mut base.stop_signal, over.stop_signal);
    strings(&mut base.sysctls, over.sysctls);
    append(&mut base.tmpfs, over.tmpfs);
    base.tty |= over.tty;
    // A later limit replaces an earlier one of the same name whole.
    base.ulimits.extend(over.ulimits);
    text(&mut base.user, over.user);
    if over.oom_score_adj != 0 {
        base.oom_score_adj = over.oom_score_adj;
    }
    text(&mut base.userns_mode, over.userns_mode);
    keyed(&mut base.volumes, over.volumes, |v: &ServiceVolume| {
        v.target.clone()
    });
    text(&mut base.working_dir, over.working_dir);
}

fn merge_service_network(base: &mut ServiceNetwork, over: ServiceNetwork) {
    // Docker replaces the aliases; addresses only when given.
    base.aliases = over.aliases;
    strings(&mut base.driver_opts, over.driver_opts);
    string(&mut base.ipv4_address, over.ipv4_address);
    string(&mut base.ipv6_address, over.ipv6_address);
}

fn merge_logging(base: &mut Logging, over: Logging) {
    if base.driver == over.driver || base.driver.is_empty() || over.driver.is_empty() {
        string(&mut base.driver, over.driver);
        strings(&mut base.options, over.options);
    } else {
        *base = over;
    }
}

fn merge_healthcheck(base: &mut Healthcheck, over: Healthcheck) {
    append(&mut base.test, over.test);
    pointer(&mut base.timeout, over.timeout);
    pointer(&mut base.interval, over.interval);
    counter(&mut base.retries, over.retries);
    pointer(&mut base.start_period, over.start_period);
    pointer(&mut base.start_interval, over.start_interval);
    base.disable |= over.disable;
}

fn merge_deploy(base: &mut Deploy, over: Deploy) {
    string(&mut base.mode, over.mode);
    counter(&mut base.replicas, over.replicas);
    strings(&mut base.labels, over.labels);
    for (base, over) in [
        (&mut base.update_config, over.update_config),
        (&mut base.rollback_config, over.rollback_config),
    ] {
        match (base, over) {
            (Some(base), Some(over)) => merge_update(base, over),
            (base @ None, over) => *base = over,
            (_, None) => {}
        }
    }
    merge_resources(&mut base.resources, over.resources);
    match (&mut base.restart_policy, over.restart_policy) {
        (Some(base), Some(over)) => merge_restart(base, over),
        (base @ None, over) => *base = over,
        (_, None) => {}
    }
    merge_placement(&mut base.placement, over.placement);
    string(&mut base.endpoint_mode, over.endpoint_mode);
}

fn merge_update(base: &mut UpdateConfig, over: UpdateConfig) {
    counter(&mut base.parallelism, over.parallelism);
    if over.delay != GoDuration(0) {
        base.delay = over.delay;
    }
    string(&mut base.failure_action, over.failure_action);
    if over.monitor != GoDuration(0) {
        base.monitor = over.monitor;
    }
    if over.max_failure_ratio != 0.0 {
        base.max_failure_ratio = over.max_failure_ratio;
    }
    string(&mut base.order, over.order);
}

fn merge_resources(base: &mut Resources, over: Resources) {
    match (&mut base.limits, over.limits) {
        (Some(base), Some(over)) => merge_limits(base, over),
        (base @ None, over) => *base = over,
        (_, None) => {}
    }
    match (&mut base.reservations, over.reservations) {
        (Some(base), Some(over)) => merge_reservations(base, over),
        (base @ None, over) => *base = over,
        (_, None) => {}
    }
}

fn merge_limits(base: &mut Limits, over: Limits) {
    string(&mut base.cpus, over.cpus);
    if !over.memory.is_zero() {
        base.memory = over.memory;
    }
    if over.pids != 0 {
        base.pids = over.pids;
    }
}

fn merge_reservations(base: &mut Reservations, over: Reservations) {
    string(&mut base.cpus, over.cpus);
    if !over.memory.is_zero() {
        base.memory = over.memory;
    }
    append(&mut base.generic_resources, over.generic_resources);
}

fn merge_restart(base: &mut RestartPolicy, over: RestartPolicy) {
    string(&mut base.condition, over.condition);
    pointer(&mut base.delay, over.delay);
    counter(&mut base.max_attempts, over.max_attempts);
    pointer(&mut base.window, over.window);
}

fn merge_placement(base: &mut Placement, over: Placement) {
    append(&mut base.constraints, over.constraints);
    append(&mut base.preferences, over.preferences);
    if over.max_replicas_per_node != 0 {
        base.max_replicas_per_node = over.max_replicas_per_node;
    }
}

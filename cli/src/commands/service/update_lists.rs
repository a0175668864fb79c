//! `service update`'s `-add`/`-rm` flags for the lists and maps of a spec
//! (constraints, placement preferences, mounts, networks, labels, container
//! labels, DNS servers/search/options, hosts, capabilities, sysctls,
//! ulimits, groups, generic resources) and `--args`, with Docker's
//! semantics: removals first, then additions; an addition replaces the entry
//! with the same key (a mount's target, a label's or sysctl's name, a
//! ulimit's name, a generic resource's kind). Removing what the service
//! does not have is an error that names the flag, as `--secret-rm`'s.

use anyhow::{Result, anyhow, bail};
use clap::Args;
use shoal_api::{engine, pb::ServiceSpec};

use super::engine_lists::{flag_error, service_generic_resources};
use crate::commands::service_flags as flags;

#[derive(Args, Default, Clone)]
pub struct UpdateLists {
    /// Service command args, in place of the current ones (split as a shell would).
    #[arg(long, value_name = "COMMAND")]
    pub args: Option<String>,
    /// Add or update a placement constraint; repeatable.
    #[arg(long)]
    pub constraint_add: Vec<String>,
    /// Remove a constraint; repeatable.
    #[arg(long)]
    pub constraint_rm: Vec<String>,
    /// Add a placement preference (spread=node.labels.NAME); repeatable.
    #[arg(long)]
    pub placement_pref_add: Vec<String>,
    /// Remove a placement preference; repeatable.
    #[arg(long)]
    pub placement_pref_rm: Vec<String>,
    /// Add or update a mount on a service (as --mount); repeatable.
    #[arg(long)]
    pub mount_add: Vec<String>,
    /// Remove a mount by its target path; repeatable.
    #[arg(long)]
    pub mount_rm: Vec<String>,
    /// Add a network (as --network); repeatable.
    #[arg(long)]
    pub network_add: Vec<String>,
    /// Remove a network; repeatable.
    #[arg(long)]
    pub network_rm: Vec<String>,
    /// Add or update a service label (key=value); repeatable.
    #[arg(long)]
    pub label_add: Vec<String>,
    /// Remove a label by its key; repeatable.
    #[arg(long)]
    pub label_rm: Vec<String>,
    /// Add or update a container label (key=value); repeatable.
    #[arg(long)]
    pub container_label_add: Vec<String>,
    /// Remove a container label by its key; repeatable.
    #[arg(long)]
    pub container_label_rm: Vec<String>,
    /// Add or update a custom DNS server; repeatable.
    #[arg(long)]
    pub dns_add: Vec<String>,
    /// Remove a custom DNS server; repeatable.
    #[arg(long)]
    pub dns_rm: Vec<String>,
    /// Add or update a DNS option; repeatable.
    #[arg(long)]
    pub dns_option_add: Vec<String>,
    /// Remove a DNS option; repeatable.
    #[arg(long)]
    pub dns_option_rm: Vec<String>,
    /// Add or update a custom DNS search domain; repeatable.
    #[arg(long)]
    pub dns_search_add: Vec<String>,
    /// Remove a DNS search domain; repeatable.
    #[arg(long)]
    pub dns_search_rm: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip); repeatable.
    #[arg(long)]
    pub host_add: Vec<String>,
    /// Remove a custom host-to-IP mapping (host:ip, or host for all its entries); repeatable.
    #[arg(long)]
    pub host_rm: Vec<String>,
    /// Add Linux capabilities (undoes a --cap-drop of the same; RESET clears the added list); repeatable.
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities (undoes a --cap-add of the same; RESET clears the dropped list); repeatable.
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Add or update a sysctl option (name=value); repeatable.
    #[arg(long)]
    pub sysctl_add: Vec<String>,
    /// Remove a sysctl option (its name); repeatable.
    #[arg(long)]
    pub sysctl_rm: Vec<String>,
    /// Add or update a ulimit option (name=soft[:hard]); repeatable.
    #[arg(long)]
    pub ulimit_add: Vec<String>,
    /// Remove a ulimit option (its name); repeatable.
    #[arg(long)]
    pub ulimit_rm: Vec<String>,
    /// Add an additional supplementary user group to the container; repeatable.
    #[arg(long)]
    pub group_add: Vec<String>,
    /// Remove a previously added supplementary user group from the container; repeatable.
    #[arg(long)]
    pub group_rm: Vec<String>,
    /// Add or update a generic resource reservation (kind=count); repeatable.
    #[arg(long)]
    pub generic_resource_add: Vec<String>,
    /// Remove a generic resource reservation (its kind); repeatable.
    #[arg(long)]
    pub generic_resource_rm: Vec<String>,
}

/// Removes from `list` each of `gone` that `matches`; an error naming `flag`
/// for one that matches nothing.
fn remove<T>(
    list: &mut Vec<T>,
    gone: &[String],
    flag: &str,
    what: &str,
    matches: impl Fn(&T, &str) -> bool,
) -> Result<()> {
    for g in gone {
        let before = list.len();
        list.retain(|item| !matches(item, g));
        if list.len() == before {
            bail!("--{flag} {g}: the service has no such {what}");
        }
    }
    Ok(())
}

/// `key=value` pairs into a map: removals (by key) then additions.
fn edit_map(
    map: &mut std::collections::BTreeMap<String, String>,
    add: &[String],
    rm: &[String],
    flag: &str,
    what: &str,
) -> Result<()> {
    for key in rm {
        if map.remove(key).is_none() {
            bail!("--{flag}-rm {key}: the service has no such {what}");
        }
    }
    for pair in add {
        let (k, v) = flags::parse_label(pair)?;
        map.insert(k, v);
    }
    Ok(())
}

impl UpdateLists {
    /// Applies the flags to `spec`. `network_id` resolves a network's name
    /// or id to its id (None: no such network).
    pub fn apply(
        &self,
        spec: &mut ServiceSpec,
        network_id: &dyn Fn(&str) -> Option<String>,
    ) -> Result<()> {
        edit_map(
            &mut spec.labels,
            &self.label_add,
            &self.label_rm,
            "label",
            "label",
        )?;
        let task = spec.task.get_or_insert_with(Default::default);
        self.apply_placement(task)?;
        // Networks: by id, whatever the user named them by.
        let resolve = |n: &str| network_id(n).unwrap_or_else(|| n.to_owned());
        let gone: Vec<String> = self.network_rm.iter().map(|n| resolve(n)).collect();
        for (given, id) in self.network_rm.iter().zip(&gone) {
            if !task.networks.iter().any(|a| &a.target == id) {
                bail!("--network-rm {given}: the service is not attached to that network");
            }
        }
        task.networks.retain(|a| !gone.contains(&a.target));
        for add in &self.network_add {
            let mut attachment = flags::parse_network(add)?;
            attachment.target = resolve(&attachment.target);
            if task.networks.iter().any(|a| a.target == attachment.target) {
                bail!("--network-add {add}: service is already attached to network {add}");
            }
            task.networks.push(attachment);
        }
        let generic =
            service_generic_resources(&self.generic_resource_add, "generic-resource-add")?;
        if !generic.is_empty() || !self.generic_resource_rm.is_empty() {
            let reserved = &mut task
                .resources
                .get_or_insert_with(Default::default)
                .generic_reservations;
            remove(
                reserved,
                &self.generic_resource_rm,
                "generic-resource-rm",
                "generic resource",
                |r, kind| r.kind == kind,
            )?;
            for r in generic {
                reserved.retain(|o| o.kind != r.kind);
                reserved.push(r);
            }
        }
        let c = task.container.get_or_insert_with(Default::default);
        if let Some(args) = &self.args {
            c.args = super::spec_flags::split_words(args, "--args")?;
        }
        edit_map(
            &mut c.labels,
            &self.container_label_add,
            &self.container_label_rm,
            "container-label",
            "container label",
        )?;
        remove(
            &mut c.mounts,
            &self.mount_rm,
            "mount-rm",
            "mount",
            |m, target| m.target.trim_end_matches('/') == target.trim_end_matches('/'),
        )?;
        for add in &self.mount_add {
            let mount = flags::parse_mount(add)?;
            c.mounts.retain(|m| m.target != mount.target);
            c.mounts.push(mount);
        }
        self.apply_dns(c)?;
        self.apply_hosts(c)?;
        self.apply_capabilities(c)?;
        for rm in &self.sysctl_rm {
            let name = rm.split_once('=').map_or(rm.as_str(), |(n, _)| n);
            if c.sysctls.remove(name).is_none() {
                bail!("--sysctl-rm {rm}: the service has no such sysctl");
            }
        }
        for add in &self.sysctl_add {
            let (name, value) = engine::parse_sysctl(add).map_err(flag_error("sysctl-add"))?;
            c.sysctls.insert(name, value);
        }
        remove(
            &mut c.ulimits,
            &self.ulimit_rm,
            "ulimit-rm",
            "ulimit",
            |u, name| u.name == name.split_once('=').map_or(name, |(n, _)| n),
        )?;
        for add in &self.ulimit_add {
            let u = engine::parse_ulimit(add).map_err(flag_error("ulimit-add"))?;
            c.ulimits.retain(|o| o.name != u.name);
            c.ulimits.push(u);
        }
        c.ulimits.sort_by(|a, b| a.name.cmp(&b.name));
        remove(
            &mut c.groups,
            &self.group_rm,
            "group-rm",
            "group",
            |g, rm| g == rm,
        )?;
        for add in &self.group_add {
            engine::check_group(add).map_err(flag_error("group-add"))?;
            if !c.groups.contains(add) {
                c.groups.push(add.clone());
            }
        }
        Ok(())
    }

    fn apply_placement(&self, task: &mut shoal_api::pb::TaskSpec) -> Result<()> {
        let any = [
            &self.constraint_add,
            &self.constraint_rm,
            &self.placement_pref_add,
            &self.placement_pref_rm,
        ]
        .iter()
        .any(|l| !l.is_empty());
        if !any {
            return Ok(());
        }
        let placement = task.placement.get_or_insert_with(Default::default);
        remove(
            &mut placement.constraints,
            &self.constraint_rm,
            "constraint-rm",
            "constraint",
            |c, g| c == g,
        )?;
        placement
            .constraints
            .extend(self.constraint_add.iter().cloned());
        let descriptor = |pref: &str, flag: &str| {
            pref.strip_prefix("spread=")
                .map(str::to_owned)
                .ok_or_else(|| {
                    anyhow!("invalid --{flag} {pref:?}: expected spread=node.labels.NAME")
                })
        };
        let gone = self
            .placement_pref_rm
            .iter()
            .map(|p| descriptor(p, "placement-pref-rm"))
            .collect::<Result<Vec<_>>>()?;
        remove(
            &mut placement.spread,
            &gone,
            "placement-pref-rm",
            "placement preference",
            |d, g| d == g,
        )?;
        for pref in &self.placement_pref_add {
            placement
                .spread
                .push(descriptor(pref, "placement-pref-add")?);
        }
        Ok(())
    }

    fn apply_dns(&self, c: &mut shoal_api::pb::ContainerSpec) -> Result<()> {
        let any = [
            &self.dns_add,
            &self.dns_rm,
            &self.dns_option_add,
            &self.dns_option_rm,
            &self.dns_search_add,
            &self.dns_search_rm,
        ]
        .iter()
        .any(|l| !l.is_empty());
        if !any {
            return Ok(());
        }
        let dns = c.dns_config.get_or_insert_with(Default::default);
        remove(
            &mut dns.nameservers,
            &self.dns_rm,
            "dns-rm",
            "DNS server",
            |s, g| s == g,
        )?;
        for server in &self.dns_add {
            engine::check_nameserver(server).map_err(flag_error("dns-add"))?;
            if !dns.nameservers.contains(server) {
                dns.nameservers.push(server.clone());
            }
        }
        remove(
            &mut dns.search,
            &self.dns_search_rm,
            "dns-search-rm",
            "DNS search domain",
            |s, g| s == g,
        )?;
        for domain in &self.dns_search_add {
            engine::check_dns_search(domain).map_err(flag_error("dns-search-add"))?;
            if !dns.search.contains(domain) {
                dns.search.push(domain.clone());
            }
        }
        remove(
            &mut dns.options,
            &self.dns_option_rm,
            "dns-option-rm",
            "DNS option",
            |s, g| s == g,
        )?;
        for option in &self.dns_option_add {
            engine::check_dns_option(option).map_err(flag_error("dns-option-add"))?;
            if !dns.options.contains(option) {
                dns.options.push(option.clone());
            }
        }
        Ok(())
    }

    /// Docker's updateHosts: `--host-rm host:ip` takes the name off entries
    /// of that address, `--host-rm host` off every entry; an entry left with
    /// no name goes; `--host-add` appends.
    fn apply_hosts(&self, c: &mut shoal_api::pb::ContainerSpec) -> Result<()> {
        for rm in &self.host_rm {
            let (name, ip) = rm
                .split_once('=')
                .or_else(|| rm.split_once(':'))
                .map_or((rm.as_str(), None), |(n, ip)| (n, Some(ip)));
            let mut found = false;
            c.hosts = c
                .hosts
                .iter()
                .filter_map(|line| {
                    let mut fields = line.split_whitespace();
                    let addr = fields.next()?;
                    let names: Vec<&str> = fields
                        .filter(|n| {
                            let hit = *n == name && ip.is_none_or(|ip| ip == addr);
                            found |= hit;
                            !hit
                        })
                        .collect();
                    (!names.is_empty()).then(|| format!("{addr} {}", names.join(" ")))
                })
                .collect();
            if !found {
                bail!("--host-rm {rm}: the service has no such host mapping");
            }
        }
        for add in &self.host_add {
            let line = engine::parse_host(add).map_err(flag_error("host-add"))?;
            if !c.hosts.contains(&line) {
                c.hosts.push(line);
            }
        }
        Ok(())
    }

    /// Docker's updateCapabilities: adding one the service drops takes it
    /// off the dropped list (and the other way round); `RESET` clears that
    /// list first; both stay normalized and sorted, `ALL` alone.
    fn apply_capabilities(&self, c: &mut shoal_api::pb::ContainerSpec) -> Result<()> {
        if self.cap_add.is_empty() && self.cap_drop.is_empty() {
            return Ok(());
        }
        use std::collections::BTreeSet;
        let read = |list: &[String], flag: &str| -> Result<(BTreeSet<String>, bool)> {
            let mut out = BTreeSet::new();
            let mut reset = false;
            for cap in list {
                let normal = engine::normalize_capability(cap);
                if cap.trim().eq_ignore_ascii_case("RESET") {
                    reset = true;
                } else if engine::is_capability(&normal) {
                    out.insert(normal);
                } else {
                    bail!(
                        "--{flag}: {cap:?} is not a Linux capability (e.g. NET_ADMIN, CAP_SYS_TIME, ALL, or RESET)"
                    );
                }
            }
            Ok((out, reset))
        };
        let (to_add, reset_add) = read(&self.cap_add, "cap-add")?;
        let (to_drop, reset_drop) = read(&self.cap_drop, "cap-drop")?;
        let existing = |list: &[String], reset: bool| -> BTreeSet<String> {
            if reset {
                BTreeSet::new()
            } else {
                list.iter()
                    .map(|c| engine::normalize_capability(c))
                    .collect()
            }
        };
        let mut add = existing(&c.capability_add, reset_add);
        let mut drop = existing(&c.capability_drop, reset_drop);
        for cap in to_drop.iter().filter(|cap| !to_add.contains(*cap)) {
            if !add.remove(cap) {
                drop.insert(cap.clone());
            }
        }
        for cap in &to_add {
            if !drop.remove(cap) {
                add.insert(cap.clone());
            }
        }
        let list = |set: BTreeSet<String>| -> Vec<String> {
            if set.contains(engine::ALL_CAPABILITIES) {
                vec![engine::ALL_CAPABILITIES.to_owned()]
            } else {
                set.into_iter().collect()
            }
        };
        c.capability_add = list(add);
        c.capability_drop = list(drop);
        Ok(())
    }
}

#[cfg(test)]
mod tests;

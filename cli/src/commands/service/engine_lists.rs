//! `service create`'s list flags for Docker's per-container options:
//! `--dns`, `--dns-option`, `--dns-search`, `--host`, `--cap-add`,
//! `--cap-drop`, `--sysctl`, `--ulimit`, `--group`, `--generic-resource`
//! (`service update` takes their `-add`/`-rm` forms: [`super::update_lists`]).
//! Values are read with `shoal_api::engine`, the manager's own readers.

use anyhow::{Result, anyhow};
use clap::Args;
use shoal_api::{
    engine,
    pb::{DnsConfig, TaskSpec},
};

#[derive(Args, Default, Clone)]
pub struct EngineLists {
    /// Set custom DNS servers (the tasks' resolver asks them for names the
    /// cluster does not know); repeatable.
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set DNS options (e.g. ndots:2); repeatable.
    #[arg(long)]
    pub dns_option: Vec<String>,
    /// Set custom DNS search domains; repeatable.
    #[arg(long)]
    pub dns_search: Vec<String>,
    /// Set one or more custom host-to-IP mappings (host:ip); repeatable.
    /// (Not the global -H/--host: give that before `service`, as Docker's.)
    #[arg(long = "host", id = "extra_host", value_name = "HOST:IP")]
    pub host: Vec<String>,
    /// Add Linux capabilities (NET_ADMIN, CAP_SYS_TIME, ALL); repeatable.
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities; repeatable.
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Sysctl options (name=value, e.g. net.core.somaxconn=1024); repeatable.
    #[arg(long)]
    pub sysctl: Vec<String>,
    /// Ulimit options (name=soft[:hard], e.g. nofile=1024:2048); repeatable.
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Set one or more supplementary user groups for the container; repeatable.
    #[arg(long)]
    pub group: Vec<String>,
    /// User defined resources to reserve (kind=count, e.g. gpu=1); repeatable.
    #[arg(long)]
    pub generic_resource: Vec<String>,
}

/// A reader's refusal, naming the flag.
pub(super) fn flag_error(flag: &str) -> impl Fn(String) -> anyhow::Error + '_ {
    move |why| anyhow!("--{flag}: {why}")
}

impl EngineLists {
    pub fn apply(&self, task: &mut TaskSpec) -> Result<()> {
        let c = task.container.get_or_insert_with(Default::default);
        if !self.dns.is_empty() || !self.dns_option.is_empty() || !self.dns_search.is_empty() {
            for server in &self.dns {
                engine::check_nameserver(server).map_err(flag_error("dns"))?;
            }
            for option in &self.dns_option {
                engine::check_dns_option(option).map_err(flag_error("dns-option"))?;
            }
            for domain in &self.dns_search {
                engine::check_dns_search(domain).map_err(flag_error("dns-search"))?;
            }
            c.dns_config = Some(DnsConfig {
                nameservers: self.dns.clone(),
                search: self.dns_search.clone(),
                options: self.dns_option.clone(),
            });
        }
        c.hosts = self
            .host
            .iter()
            .map(|h| engine::parse_host(h).map_err(flag_error("host")))
            .collect::<Result<_>>()?;
        for cap in self.cap_add.iter().chain(&self.cap_drop) {
            if !engine::is_capability(cap) {
                let flag = if self.cap_add.contains(cap) {
                    "cap-add"
                } else {
                    "cap-drop"
                };
                return Err(anyhow!(
                    "--{flag}: {cap:?} is not a Linux capability (e.g. NET_ADMIN, CAP_SYS_TIME, or ALL)"
                ));
            }
        }
        (c.capability_add, c.capability_drop) =
            engine::effective_capabilities(&self.cap_add, &self.cap_drop);
        c.sysctls = self
            .sysctl
            .iter()
            .map(|s| engine::parse_sysctl(s).map_err(flag_error("sysctl")))
            .collect::<Result<_>>()?;
        let mut ulimits: Vec<shoal_api::pb::Ulimit> = Vec::new();
        for text in &self.ulimit {
            let u = engine::parse_ulimit(text).map_err(flag_error("ulimit"))?;
            // The last one of a name wins, as Docker's UlimitOpt.
            ulimits.retain(|o| o.name != u.name);
            ulimits.push(u);
        }
        ulimits.sort_by(|a, b| a.name.cmp(&b.name));
        c.ulimits = ulimits;
        for group in &self.group {
            engine::check_group(group).map_err(flag_error("group"))?;
        }
        c.groups = self.group.clone();
        let generic = service_generic_resources(&self.generic_resource, "generic-resource")?;
        if !generic.is_empty() {
            task.resources
                .get_or_insert_with(Default::default)
                .generic_reservations = generic;
        }
        Ok(())
    }
}

/// `--generic-resource gpu=1`: counts only (a service does not ask for a
/// named instance; nodes name theirs), as Docker's ParseGenericResources.
pub(super) fn service_generic_resources(
    terms: &[String],
    flag: &str,
) -> Result<Vec<shoal_api::pb::GenericResource>> {
    let parsed = engine::parse_generic_resources(terms).map_err(flag_error(flag))?;
    if let Some(named) = parsed.iter().find(|r| {
        !matches!(
            r.value,
            Some(shoal_api::pb::generic_resource::Value::Discrete(_))
        )
    }) {
        return Err(anyhow!(
            "--{flag}: invalid generic-resource request `{}`, Named Generic Resources is not supported for service create or update",
            engine::format_generic_resource(named)
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        lists: EngineLists,
    }

    fn apply(argv: &[&str]) -> Result<TaskSpec> {
        let mut all = vec!["shoal"];
        all.extend_from_slice(argv);
        let mut task = TaskSpec::default();
        Cli::try_parse_from(all)?.lists.apply(&mut task)?;
        Ok(task)
    }

    #[test]
    fn lists_land_in_the_spec_in_dockers_forms() {
        let task = apply(&[
            "--dns",
            "192.0.2.53",
            "--dns-search",
            "example.com",
            "--dns-option",
            "ndots:2",
            "--host",
            "db:10.0.0.5",
            "--host",
            "cache=10.0.0.6",
            "--cap-add",
            "net_admin",
            "--cap-add",
            "SYS_TIME",
            "--cap-drop",
            "ALL",
            "--sysctl",
            "net.core.somaxconn=1024",
            "--ulimit",
            "nofile=1024:2048",
            "--ulimit",
            "nproc=64",
            "--ulimit",
            "nofile=10:20",
            "--group",
            "audio",
            "--generic-resource",
            "gpu=2",
        ])
        .unwrap();
        let c = task.container.unwrap();
        let dns = c.dns_config.unwrap();
        assert_eq!(
            (dns.nameservers, dns.search, dns.options),
            (
                vec!["192.0.2.53".to_owned()],
                vec!["example.com".to_owned()],
                vec!["ndots:2".to_owned()]
            )
        );
        assert_eq!(c.hosts, ["10.0.0.5 db", "10.0.0.6 cache"]);
        assert_eq!(c.capability_add, ["CAP_NET_ADMIN", "CAP_SYS_TIME"]);
        assert_eq!(c.capability_drop, ["ALL"]);
        assert_eq!(c.sysctls["net.core.somaxconn"], "1024");
        let ulimits: Vec<String> = c.ulimits.iter().map(engine::format_ulimit).collect();
        assert_eq!(ulimits, ["nofile=10:20", "nproc=64:64"]);
        assert_eq!(c.groups, ["audio"]);
        assert_eq!(
            task.resources.unwrap().generic_reservations,
            [engine::discrete("gpu", 2)]
        );
        assert_eq!(apply(&[]).unwrap().resources, None, "nothing asked");
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (argv, expected) in [
            (&["--dns", "dns.example"][..], "--dns: invalid DNS server"),
            (
                &["--dns-search=-x"],
                "--dns-search: invalid DNS search domain",
            ),
            (&["--host", "db"], "--host: bad format for add-host"),
            (
                &["--cap-add", "NOPE"],
                "--cap-add: \"NOPE\" is not a Linux capability",
            ),
            (
                &["--cap-drop", "NOPE"],
                "--cap-drop: \"NOPE\" is not a Linux capability",
            ),
            (
                &["--sysctl", "vm.swappiness=1"],
                "--sysctl: invalid sysctl vm.swappiness",
            ),
            (
                &["--ulimit", "nofile=2:1"],
                "--ulimit: invalid ulimit nofile: soft limit",
            ),
            (&["--ulimit", "files=1"], "--ulimit: invalid ulimit type"),
            (&["--group", "a b"], "--group: invalid group"),
            (
                &["--generic-resource", "gpu=UUID1"],
                "Named Generic Resources is not supported",
            ),
            (
                &["--generic-resource", "gpu"],
                "--generic-resource: invalid generic resource",
            ),
        ] {
            let err = apply(argv).unwrap_err().to_string();
            assert!(err.contains(expected), "{argv:?}: {err}");
        }
    }
}

//! The container of a service: image, command, environment, mounts,
//! secrets and configs, and the per-container engine options a stack
//! passes through (`init`, `tty`, `read_only`, `extra_hosts`, `dns*`,
//! `sysctls`, `cap_add`/`cap_drop`, `ulimits`, …) as Docker's converter
//! sets them.

use std::collections::BTreeMap;

use shoal_api::pb::{
    ConfigReference, ContainerSpec, DnsConfig, FileTarget, SecretReference, Ulimit,
};

use super::{Names, health, volumes};
use crate::compose::{ComposeError, Project, index, key, locate::Seg, model};

pub(super) fn container(
    project: &Project,
    names: &Names,
    service: &model::Service,
    image: String,
    at: &dyn Fn(&[Seg]) -> Vec<Seg>,
    warnings: &mut Vec<String>,
) -> Result<ContainerSpec, ComposeError> {
    let err = |rest: &[Seg], message: String| project.error_at(&at(rest), message);
    let _ = warnings;
    let (capability_add, capability_drop) =
        effective_capabilities(&service.cap_add, &service.cap_drop);
    let mut container = ContainerSpec {
        image,
        command: service.entrypoint.clone().unwrap_or_default(),
        args: service.command.clone().unwrap_or_default(),
        env: environment(&service.environment),
        labels: names.labels(&service.labels),
        hostname: service.hostname.clone().unwrap_or_default(),
        user: service.user.clone().unwrap_or_default(),
        dir: service.working_dir.clone().unwrap_or_default(),
        stop_grace_period_ms: service.stop_grace_period.map(|d| d.millis()),
        stop_signal: service.stop_signal.clone().unwrap_or_default(),
        init: service.init,
        tty: service.tty,
        open_stdin: service.stdin_open,
        read_only: service.read_only,
        hosts: service
            .extra_hosts
            .iter()
            .filter_map(|entry| entry.split_once(':'))
            .map(|(host, ip)| format!("{ip} {host}"))
            .collect(),
        dns_config: (!service.dns.is_empty()
            || !service.dns_search.is_empty()
            || !service.dns_opt.is_empty())
        .then(|| DnsConfig {
            nameservers: service.dns.clone(),
            search: service.dns_search.clone(),
            options: service.dns_opt.clone(),
        }),
        sysctls: service.sysctls.clone().into_iter().collect(),
        capability_add,
        capability_drop,
        ulimits: service
            .ulimits
            .iter()
            .map(|(name, limit)| {
                let (soft, hard) = limit.limits();
                Ulimit {
                    name: name.clone(),
                    soft,
                    hard,
                }
            })
            .collect(),
        domainname: service.domainname.clone().unwrap_or_default(),
        oom_score_adj: (service.oom_score_adj != 0).then_some(service.oom_score_adj),
        ..Default::default()
    };
    if let Some(check) = &service.healthcheck {
        container.healthcheck =
            Some(health::config(check).map_err(|(k, m)| err(&[key("healthcheck"), key(k)], m))?);
    }
    for (i, volume) in service.volumes.iter().enumerate() {
        let mount = volumes::mount(project, names, volume)
            .map_err(|m| err(&[key("volumes"), index(i)], m))?;
        container.mounts.push(mount);
    }
    for (i, tmpfs) in service.tmpfs.iter().enumerate() {
        let mount = volumes::short_tmpfs(tmpfs).map_err(|m| err(&[key("tmpfs"), index(i)], m))?;
        container.mounts.push(mount);
    }
    for (kind, refs, declared) in [
        ("secrets", &service.secrets, &names.secrets),
        ("configs", &service.configs, &names.configs),
    ] {
        for (i, reference) in refs.iter().enumerate() {
            let Some(cluster_name) = declared.get(&reference.source) else {
                return Err(err(
                    &[key(kind), index(i)],
                    format!(
                        "undefined {} {:?}: declare it in the top-level {kind}",
                        kind.trim_end_matches('s'),
                        reference.source
                    ),
                ));
            };
            let target = if reference.target.is_empty() {
                reference.source.clone()
            } else {
                reference.target.clone()
            };
            let file = FileTarget {
                // A relative config target is under `/` (the agent's rule,
                // as the engine's).
                name: target,
                uid: non_empty(&reference.uid, "0"),
                gid: non_empty(&reference.gid, "0"),
                mode: reference.mode.unwrap_or(0o444),
            };
            if kind == "secrets" {
                container.secrets.push(SecretReference {
                    secret_id: String::new(),
                    secret_name: cluster_name.clone(),
                    file: Some(file),
                });
            } else {
                container.configs.push(ConfigReference {
                    config_id: String::new(),
                    config_name: cluster_name.clone(),
                    file: Some(file),
                });
            }
        }
    }
    // Sorted, so that a redeploy of the same file changes nothing.
    container
        .secrets
        .sort_by(|a, b| a.secret_name.cmp(&b.secret_name));
    container
        .configs
        .sort_by(|a, b| a.config_name.cmp(&b.config_name));
    Ok(container)
}

fn non_empty(value: &str, default: &str) -> String {
    if value.is_empty() { default } else { value }.to_owned()
}

/// `KEY=VALUE`, sorted; a variable left unset (and not in the caller's
/// environment) is passed as `KEY` alone, as Docker passes it.
fn environment(env: &BTreeMap<String, Option<String>>) -> Vec<String> {
    let mut out: Vec<String> = env
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect();
    out.sort();
    out
}

/// `cap_add`/`cap_drop` as `docker stack deploy` passes them: Docker's
/// effective sets ([`shoal_api::engine::effective_capabilities`]), with
/// `RESET` (meaningful to `service update` only) dropped from both.
pub fn effective_capabilities(add: &[String], drop: &[String]) -> (Vec<String>, Vec<String>) {
    let without_reset = |caps: &[String]| -> Vec<String> {
        caps.iter()
            .filter(|c| !c.trim().eq_ignore_ascii_case("RESET"))
            .cloned()
            .collect()
    };
    shoal_api::engine::effective_capabilities(&without_reset(add), &without_reset(drop))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(add: &[&str], drop: &[&str]) -> (Vec<String>, Vec<String>) {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        effective_capabilities(&owned(add), &owned(drop))
    }

    #[test]
    fn capabilities_are_docker_s_effective_ones() {
        assert_eq!(
            caps(&["net_admin", "CAP_SYS_TIME"], &["mknod"]),
            (
                vec!["CAP_NET_ADMIN".to_owned(), "CAP_SYS_TIME".to_owned()],
                vec!["CAP_MKNOD".to_owned()]
            )
        );
        assert_eq!(
            caps(&["ALL", "NET_ADMIN"], &["NET_ADMIN", "CHOWN"]),
            (
                vec!["ALL".to_owned()],
                vec!["CAP_CHOWN".to_owned(), "CAP_NET_ADMIN".to_owned()]
            )
        );
        assert_eq!(
            caps(&["CHOWN"], &["chown", "RESET"]),
            (vec!["CAP_CHOWN".to_owned()], vec![])
        );
    }
}

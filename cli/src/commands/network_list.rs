//! `network ls` and `network inspect -v` as Docker's: the network context's
//! fields, its filters (names and IDs as regular expressions, `dangling`,
//! `type`), and the verbose inspect's services with their tasks.

use anyhow::{Result, bail};
use serde_json::json;
use shoal_api::pb::{Network, Service};

use crate::output::{Columns, Filters, Listing, listing::labels_text, rfc3339, short};

pub static COLUMNS: Columns = Columns {
    table: "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
    headers: &[
        ("ID", "NETWORK ID"),
        ("Name", "NAME"),
        ("Driver", "DRIVER"),
        ("Scope", "SCOPE"),
        ("IPv4", "IPV4"),
        ("IPv6", "IPV6"),
        ("Internal", "INTERNAL"),
        ("Labels", "LABELS"),
        ("CreatedAt", "CREATED AT"),
    ],
};

/// The keys Docker's `network ls` takes.
pub const FILTER_KEYS: &[&str] = &["dangling", "driver", "id", "label", "name", "scope", "type"];

pub fn id(n: &Network) -> &str {
    n.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

pub fn name(n: &Network) -> &str {
    n.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")
}

/// Docker's predefined networks; of these a cluster has `ingress`.
fn builtin(n: &Network) -> bool {
    n.spec.as_ref().is_some_and(|s| s.ingress)
}

/// `--filter` of `network ls`, its values checked as Docker's daemon does.
pub fn network_filters(flags: &[String]) -> Result<Filters> {
    let filters = Filters::parse(flags, FILTER_KEYS)?;
    match filters.get("dangling") {
        [] => {}
        [one] if ["0", "1", "true", "false"].contains(&one.as_str()) => {}
        [_] => bail!(
            "invalid value for filter 'dangling', must be \"true\" (or \"1\"), or \"false\" (or \"0\")"
        ),
        _ => bail!("got more than one value for filter key \"dangling\""),
    }
    for kind in filters.get("type") {
        if kind != "builtin" && kind != "custom" {
            bail!("invalid filter: 'type'='{kind}'");
        }
    }
    Ok(filters)
}

/// Whether a service's tasks attach to `n` (by the network's ID or name).
fn in_use(n: &Network, services: &[Service]) -> bool {
    services.iter().any(|s| {
        s.spec
            .as_ref()
            .and_then(|spec| spec.task.as_ref())
            .is_some_and(|t| {
                t.networks
                    .iter()
                    .any(|a| a.target == id(n) || a.target == name(n))
            })
    })
}

fn passes(filters: &Filters, n: &Network, services: &[Service]) -> bool {
    let spec = n.spec.clone().unwrap_or_default();
    let dangling = match filters.get("dangling").first().map(String::as_str) {
        Some("1" | "true") => !builtin(n) && !in_use(n, services),
        Some(_) => builtin(n) || in_use(n, services),
        None => true,
    };
    let kind = if builtin(n) { "builtin" } else { "custom" };
    filters.exact("driver", &spec.driver)
        && filters.matches("name", &spec.name)
        && filters.matches("id", id(n))
        && filters.labels("label", |k| spec.labels.get(k).map(String::as_str))
        && filters.exact("scope", "swarm")
        && filters.exact("type", kind)
        && dangling
}

/// `network ls` rows: Docker's network context.
pub fn listing(
    networks: &[Network],
    services: &[Service],
    filters: &Filters,
    no_trunc: bool,
) -> Listing {
    let mut listing = Listing::new(&COLUMNS);
    for n in networks.iter().filter(|n| passes(filters, n, services)) {
        let spec = n.spec.clone().unwrap_or_default();
        listing.row(json!({
            "ID": short(id(n), no_trunc),
            "Name": spec.name,
            "Driver": spec.driver,
            "Scope": "swarm",
            "IPv4": "true",
            "IPv6": "false",
            "Internal": spec.internal.to_string(),
            "Labels": labels_text(&spec.labels),
            "CreatedAt": go_time(n.meta.as_ref().map_or(0, |m| m.created_at)),
        }));
    }
    listing
}

/// Go's time.String of a UTC time, as Docker's `CreatedAt` column shows it.
fn go_time(ms: i64) -> String {
    let text = rfc3339(ms);
    match text.strip_suffix('Z').and_then(|t| t.split_once('T')) {
        Some((date, time)) => format!("{date} {time} +0000 UTC"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use shoal_api::pb::{Meta, NetworkAttachmentConfig, NetworkSpec, ServiceSpec, TaskSpec};

    use super::*;

    fn network(id: &str, name: &str, ingress: bool) -> Network {
        Network {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(NetworkSpec {
                name: name.into(),
                driver: "overlay".into(),
                ingress,
                labels: [("env".to_owned(), "prod".to_owned())].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn user_of(target: &str) -> Service {
        Service {
            spec: Some(ServiceSpec {
                name: "web".into(),
                task: Some(TaskSpec {
                    networks: vec![NetworkAttachmentConfig {
                        target: target.into(),
                        aliases: vec![],
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn names(flags: &[&str]) -> String {
        let networks = [
            network("in0000000000000000000000a", "ingress", true),
            network("fe0000000000000000000000b", "front", false),
            network("ba0000000000000000000000c", "back", false),
        ];
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let filters = network_filters(&flags).unwrap();
        listing(&networks, &[user_of("front")], &filters, false)
            .render(&"{{.Name}}".parse().unwrap(), false)
            .unwrap()
            .replace('\n', " ")
    }

    #[test]
    fn filters_match_as_dockers_daemon() {
        assert_eq!(names(&[]), "ingress front back ");
        assert_eq!(names(&["name=^b"]), "back ");
        assert_eq!(names(&["name=ont", "name=ack"]), "front back ");
        assert_eq!(names(&["id=fe0"]), "front ");
        assert_eq!(names(&["type=builtin"]), "ingress ");
        assert_eq!(names(&["type=custom", "driver=overlay"]), "front back ");
        assert_eq!(names(&["dangling=true"]), "back ");
        assert_eq!(names(&["dangling=0"]), "ingress front ");
        assert_eq!(
            names(&["label=env=prod", "scope=swarm"]),
            "ingress front back "
        );
        assert_eq!(names(&["scope=local"]), "");
        let refuse = |flags: &[&str]| {
            let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
            network_filters(&flags).unwrap_err().to_string()
        };
        assert_eq!(refuse(&["type=other"]), "invalid filter: 'type'='other'");
        assert_eq!(
            refuse(&["dangling=yes"]),
            "invalid value for filter 'dangling', must be \"true\" (or \"1\"), or \"false\" (or \"0\")"
        );
        assert_eq!(
            refuse(&["dangling=1", "dangling=0"]),
            "got more than one value for filter key \"dangling\""
        );
        assert_eq!(refuse(&["subnet=x"]), "invalid filter 'subnet'");
    }

    #[test]
    fn ids_are_cut_to_twelve_unless_no_trunc() {
        let networks = [network("fe0000000000000000000000b", "front", false)];
        let filters = Filters::default();
        let cut = listing(&networks, &[], &filters, false)
            .render(&"table".parse().unwrap(), false)
            .unwrap();
        assert_eq!(
            cut,
            "NETWORK ID     NAME      DRIVER    SCOPE\nfe0000000000   front     overlay   swarm\n"
        );
        let whole = listing(&networks, &[], &filters, true)
            .render(&"{{.ID}}".parse().unwrap(), true)
            .unwrap();
        assert_eq!(whole, "fe0000000000000000000000b\n");
    }
}

//! "No address handed out twice": the store's allocations (service VIPs,
//! the addresses of tasks that may still run) and the addresses the
//! running task containers really hold, each scanned for duplicates.

use std::collections::BTreeMap;

use shoal_api::pb::TaskState;
use shoal_lab::cmd;

use crate::view::View;

/// Each address held by more than one owner, with its owners.
pub fn duplicates(owners: &[(String, String)]) -> Vec<String> {
    let mut by_addr: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (addr, owner) in owners {
        by_addr.entry(addr).or_default().push(owner);
    }
    by_addr
        .into_iter()
        .filter(|(_, o)| o.len() > 1)
        .map(|(addr, o)| format!("{addr} held by {}", o.join(", ")))
        .collect()
}

fn bare(addr: &str) -> String {
    addr.split('/').next().unwrap_or(addr).to_owned()
}

/// (address, owner) of every allocation in the store: VIPs, and the
/// addresses of tasks not yet past running.
pub fn in_store(view: &View) -> Vec<(String, String)> {
    let mut owners = Vec::new();
    for service in &view.services {
        let name = service.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("");
        for vip in service.endpoint.iter().flat_map(|e| &e.virtual_ips) {
            owners.push((
                format!("{}@{}", bare(&vip.addr), vip.network_id),
                format!("VIP of {name}"),
            ));
        }
    }
    for task in &view.tasks {
        let state = task.status.as_ref().map(|s| s.state()).unwrap_or_default();
        if state > TaskState::Running {
            continue;
        }
        for attachment in &task.networks {
            for addr in &attachment.addresses {
                owners.push((
                    format!("{}@{}", bare(addr), attachment.network_id),
                    format!(
                        "task {}.{} ({})",
                        task.service_name,
                        task.slot,
                        task.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
                    ),
                ));
            }
        }
    }
    owners
}

/// (address, container) of every IPv4 address on a non-loopback interface
/// inside each running task container.
pub fn in_containers() -> Vec<(String, String)> {
    let ids = cmd::stdout(
        "docker",
        &["ps", "-q", "--filter", "label=com.shoal.task.id"],
    )
    .unwrap_or_default();
    let mut owners = Vec::new();
    for id in ids.split_whitespace() {
        let Ok(info) = cmd::stdout("docker", &["inspect", "-f", "{{.State.Pid}} {{.Name}}", id])
        else {
            continue;
        };
        let mut fields = info.split_whitespace();
        let (Some(pid), Some(name)) = (fields.next(), fields.next()) else {
            continue;
        };
        if pid == "0" {
            continue;
        }
        let Ok(addrs) = cmd::stdout(
            "nsenter",
            &["-t", pid, "-n", "ip", "-4", "-o", "addr", "show"],
        ) else {
            continue;
        };
        owners.extend(parse_ip_addr(&addrs).into_iter().map(|(dev, addr)| {
            (
                addr,
                format!("container {} ({dev})", name.trim_start_matches('/')),
            )
        }));
    }
    owners
}

/// (device, address) from `ip -4 -o addr show`, loopback left out.
fn parse_ip_addr(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dev = fields.get(1)?.trim_end_matches(':');
            let at = fields.iter().position(|f| *f == "inet")?;
            let addr = bare(fields.get(at + 1)?);
            (dev != "lo").then(|| (dev.to_owned(), addr))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_with_two_owners_is_reported_with_both() {
        let owners = vec![
            ("10.0.0.2".to_owned(), "task a".to_owned()),
            ("10.0.0.3".to_owned(), "task b".to_owned()),
            ("10.0.0.2".to_owned(), "task c".to_owned()),
        ];
        assert_eq!(
            duplicates(&owners),
            vec!["10.0.0.2 held by task a, task c".to_owned()]
        );
    }

    #[test]
    fn ip_addr_lines_give_devices_and_bare_addresses_without_loopback() {
        let text = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                    2: eth0    inet 198.18.0.5/24 brd 198.18.0.255 scope global eth0\\       valid_lft forever\n";
        assert_eq!(
            parse_ip_addr(text),
            vec![("eth0".to_owned(), "198.18.0.5".to_owned())]
        );
    }
}

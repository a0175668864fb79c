//! The few iptables rules an overlay needs in the node's namespace: egress
//! through the node (masquerade on the underlay) for ordinary networks, no
//! routing between two overlays through the node, and a drop of anything
//! leaving an `--internal` network. The routing mesh
//! never uses iptables ([5/6] is eBPF); this is egress only, as Docker's
//! own bridge does it.
//!
//! Traffic between two endpoints of one overlay (east-west, and every
//! connection to a service VIP once `vip_out` has picked its task) is
//! bridged, and with `br_netfilter` (which Docker loads) bridged IPv4
//! passes the node's iptables and conntrack. Tracking it would tie those
//! connections to the kernel's timeouts (`nf_conntrack_tcp_timeout_*`: an
//! idle connection's entry expires, and whatever a host firewall does with
//! the packets picked up afterwards, `--ctstate INVALID -j DROP` say, cuts
//! it): it is marked untracked instead (`raw` table, `NOTRACK`), except
//! what goes to the node's own addresses (DNS, replies to the node's
//! software), which may need conntrack. The routing mesh's own packets
//! never reach netfilter (TC redirects), so no kernel timeout applies to
//! a connection through Shoal's data plane.

use anyhow::{Context, Result, bail};
use tokio::process::Command;

async fn iptables(args: &[&str]) -> Result<bool> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .await
        .context("running iptables (is it installed?)")?;
    Ok(out.status.success())
}

/// Appends `rule` to `chain` of `table` unless it is there.
async fn ensure(table: &str, chain: &str, rule: &[&str]) -> Result<()> {
    let check = [&["-t", table, "-C", chain], rule].concat();
    if iptables(&check).await? {
        return Ok(());
    }
    let add = [&["-t", table, "-I", chain], rule].concat();
    if !iptables(&add).await? {
        bail!("iptables -t {table} -I {chain} {} failed", rule.join(" "));
    }
    Ok(())
}

fn rules<'a>(
    subnet: &'a str,
    bridge: &'a str,
    internal: bool,
) -> Vec<(&'static str, &'static str, Vec<&'a str>)> {
    let untracked = (
        "raw",
        "PREROUTING",
        vec![
            "-i",
            bridge,
            "-s",
            subnet,
            "-d",
            subnet,
            "-m",
            "addrtype",
            "!",
            "--dst-type",
            "LOCAL",
            "-j",
            "NOTRACK",
        ],
    );
    if internal {
        return vec![
            (
                "filter",
                "FORWARD",
                vec!["-i", bridge, "!", "-o", bridge, "-j", "DROP"],
            ),
            untracked,
        ];
    }
    vec![
        untracked,
        (
            "nat",
            "POSTROUTING",
            vec!["-s", subnet, "!", "-o", bridge, "-j", "MASQUERADE"],
        ),
        ("filter", "FORWARD", vec!["-i", bridge, "-j", "ACCEPT"]),
        (
            "filter",
            "FORWARD",
            vec![
                "-o",
                bridge,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ],
        ),
        // Networks are isolated from each other: the node holds a gateway
        // on each and must not route between them. Inserted last, these
        // stand first: within the bridge (bridged traffic shows in and out
        // on it) accept, into any other overlay bridge drop.
        (
            "filter",
            "FORWARD",
            vec!["-i", bridge, "-o", "shbr+", "-j", "DROP"],
        ),
        (
            "filter",
            "FORWARD",
            vec!["-i", bridge, "-o", bridge, "-j", "ACCEPT"],
        ),
    ]
}

/// Egress (or its absence) for one network's bridge.
pub async fn apply(subnet: &str, bridge: &str, internal: bool) -> Result<()> {
    if !internal {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .context("enabling IPv4 forwarding for overlay egress")?;
    }
    for (table, chain, rule) in rules(subnet, bridge, internal) {
        ensure(table, chain, &rule).await?;
    }
    Ok(())
}

/// Takes away every rule that names `bridge` (whatever its subnet or kind
/// was), when its network leaves the node.
pub async fn clear(bridge: &str) {
    for (table, chain) in [
        ("nat", "POSTROUTING"),
        ("filter", "FORWARD"),
        ("raw", "PREROUTING"),
    ] {
        let Ok(out) = Command::new("iptables")
            .args(["-w", "-t", table, "-S", chain])
            .output()
            .await
        else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let names_bridge = line.split_whitespace().any(|w| w == bridge);
            if let (true, Some(rule)) = (names_bridge, line.strip_prefix(&format!("-A {chain} "))) {
                let rule: Vec<&str> = rule.split_whitespace().collect();
                let del = [&["-t", table, "-D", chain], rule.as_slice()].concat();
                let _ = iptables(&del).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn east_west_traffic_is_untracked_except_to_the_node() {
        for internal in [false, true] {
            let all = rules("198.18.1.0/24", "shbr4097", internal);
            let raw: Vec<_> = all.iter().filter(|(t, _, _)| *t == "raw").collect();
            assert_eq!(raw.len(), 1, "internal={internal}");
            let (_, chain, rule) = raw[0];
            assert_eq!(*chain, "PREROUTING");
            let text = rule.join(" ");
            assert!(
                text.starts_with("-i shbr4097 -s 198.18.1.0/24 -d 198.18.1.0/24"),
                "{text}"
            );
            assert!(
                text.ends_with("-m addrtype ! --dst-type LOCAL -j NOTRACK"),
                "{text}"
            );
        }
    }
}

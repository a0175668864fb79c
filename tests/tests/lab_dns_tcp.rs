//! Service-name DNS as real resolvers use it, on real agents: a 60-replica
//! service's `tasks.web` does not fit a plain 512-byte UDP answer. `dig`
//! without EDNS gets TC with the records that fit, `dig +tcp` gets all 60,
//! `dig ANY` gets RFC 8482's HINFO, and glibc's getaddrinfo (`getent
//! ahosts`, no EDNS) in a container gets all 60 through its TC->TCP retry.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use shoal_tests::{cmd, containers_of, lab_cluster::LabCluster, pid_of};

const REPLICAS: usize = 60;
/// Sixty containers over three nodes on a shared 2-core machine.
const WAIT: Duration = Duration::from_secs(150);

/// The container's address on eth0.
fn address_of(container: &str) -> Result<String> {
    let pid = pid_of(container)?;
    let out = cmd::stdout(
        "nsenter",
        &[
            "-t", &pid, "-n", "ip", "-4", "-o", "addr", "show", "dev", "eth0",
        ],
    )?;
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_owned)
        .with_context(|| format!("no IPv4 address on eth0 of {container}: {out}"))
}

/// The nameserver a container's resolv.conf names (its node's DNS server).
fn nameserver_of(container: &str) -> Result<String> {
    let pid = pid_of(container)?;
    let conf = std::fs::read_to_string(format!("/proc/{pid}/root/etc/resolv.conf"))?;
    conf.lines()
        .find_map(|l| l.trim().strip_prefix("nameserver"))
        .map(|a| a.trim().to_owned())
        .with_context(|| format!("no nameserver in {container}'s resolv.conf: {conf}"))
}

/// The host's `dig` in `container`'s network namespace, asking its server.
fn dig(container: &str, server: &str, args: &[&str]) -> Result<String> {
    let pid = pid_of(container)?;
    let at = format!("@{server}");
    let mut all = vec!["-t", &pid, "-n", "dig", &at, "+time=3", "+tries=1"];
    all.extend(args);
    let out = std::process::Command::new("nsenter")
        .args(&all)
        .output()
        .context("running dig (cargo xtask setup installs bind9-dnsutils)")?;
    ensure!(out.status.success(), "dig {args:?}: {out:?}");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The records of a `+noall +answer` listing: (type, data) per line.
fn answers(listing: &str) -> Vec<(String, String)> {
    listing
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            Some((fields.get(3)?.to_string(), fields[4..].join(" ")))
        })
        .collect()
}

fn a_records(listing: &str) -> BTreeSet<String> {
    answers(listing)
        .into_iter()
        .filter(|(kind, _)| kind == "A")
        .map(|(_, addr)| addr)
        .collect()
}

fn running(cluster: &LabCluster, service: &str, n: usize) -> Result<Vec<String>> {
    cluster.wait(&format!("{n} running {service} tasks"), WAIT, || {
        let rows = cluster
            .json_rows(&["service", "ps", service, "-f", "desired-state=running"])
            .ok()?;
        let up = rows
            .iter()
            .filter(|r| {
                r["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Running"))
            })
            .count();
        let ids = containers_of(service).ok()?;
        (up == n && ids.len() == n).then_some(ids)
    })
}

#[test]
fn dig_and_glibc_get_all_sixty_tasks_through_tc_and_tcp_and_any_gets_rfc8482() -> Result<()> {
    if cmd::run("docker", &["image", "inspect", "shoal/glibc:latest"]).is_err() {
        bail!("image shoal/glibc:latest is missing: run `cargo xtask images`");
    }
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&["network", "create", "-d", "overlay", "appnet"])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "client",
        "--network",
        "appnet",
        "shoal/glibc",
    ])?;
    // The lightest task there is: the toolbox idling.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        &REPLICAS.to_string(),
        "--network",
        "appnet",
        "shoal/toolbox",
    ])?;
    let client = running(&cluster, "client", 1)?.remove(0);
    let web = running(&cluster, "web", REPLICAS)?;
    let tasks: BTreeSet<String> = web.iter().map(|c| address_of(c)).collect::<Result<_>>()?;
    ensure!(tasks.len() == REPLICAS, "task addresses: {tasks:?}");
    let server = nameserver_of(&client)?;
    // Names follow tasks within a second or so of them running.
    cluster.wait("tasks.web to list every task over TCP", WAIT, || {
        let listing = dig(
            &client,
            &server,
            &["+tcp", "+noall", "+answer", "tasks.web"],
        )
        .ok()?;
        (a_records(&listing) == tasks).then_some(())
    })?;

    // (a) UDP without EDNS (as glibc asks): TC, and the whole records that
    // fit 512 bytes; `+ignore` keeps dig from retrying over TCP itself.
    let udp = dig(
        &client,
        &server,
        &[
            "+noedns",
            "+ignore",
            "+noall",
            "+comments",
            "+answer",
            "tasks.web",
        ],
    )?;
    let flags = udp
        .lines()
        .find(|l| l.starts_with(";; flags:"))
        .with_context(|| format!("no flags in {udp}"))?;
    ensure!(flags.contains(" tc"), "no TC over UDP: {udp}");
    let cut = a_records(&udp);
    ensure!(
        cut.len() == 30 && cut.is_subset(&tasks),
        "UDP without EDNS: {} records, of the tasks: {}\n{udp}",
        cut.len(),
        cut.is_subset(&tasks)
    );
    // Over TCP: all of them, no TC.
    let tcp = dig(
        &client,
        &server,
        &["+tcp", "+noall", "+comments", "+answer", "tasks.web"],
    )?;
    ensure!(!tcp.contains(" tc"), "TC over TCP: {tcp}");
    ensure!(a_records(&tcp) == tasks, "over TCP:\n{tcp}");
    // dig's own default (EDNS, 1232 bytes) fits all 60 over UDP.
    let edns = dig(&client, &server, &["+noall", "+answer", "tasks.web"])?;
    ensure!(a_records(&edns) == tasks, "UDP with EDNS:\n{edns}");
    // ANY: one synthesized HINFO, over either transport.
    for transport in ["+notcp", "+tcp"] {
        let any = dig(
            &client,
            &server,
            &[transport, "+noall", "+answer", "web", "ANY"],
        )?;
        ensure!(
            answers(&any) == [("HINFO".to_owned(), "\"RFC8482\" \"\"".to_owned())],
            "ANY web {transport}:\n{any}"
        );
    }

    // (b) glibc: getaddrinfo asks over UDP without EDNS, gets TC, asks again
    // over TCP; every task address must come back.
    let out = std::process::Command::new("docker")
        .args(["exec", &client, "/usr/bin/getent", "ahosts", "tasks.web"])
        .output()?;
    ensure!(out.status.success(), "getent ahosts tasks.web: {out:?}");
    let listed: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    ensure!(
        listed == tasks,
        "glibc resolved {} of {} task addresses: {listed:?}",
        listed.len(),
        tasks.len()
    );
    println!(
        "tasks.web: UDP without EDNS {} records + TC, TCP {}, glibc {}",
        cut.len(),
        tasks.len(),
        listed.len()
    );
    Ok(())
}

//! Service-name DNS answered in eBPF at the task's veth, on real agents
//! with real containers: `dig +noedns` (a plain A query) and glibc
//! (`getent hosts`) get the server's own answer while the veth program's
//! counter rises; EDNS, AAAA and upstream names still reach the server
//! (the program leaves them, its other counter rises, its answers do not);
//! a bare unknown name gets the server's NXDOMAIN at the veth, a dotted one
//! from the server; scaling a service, and creating one under a name the
//! veth said NXDOMAIN to, reach the veth's answer.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use shoal_agent::datapath::{
    BpfRoot,
    dns::{DnsCounts, read_counts},
};
use shoal_tests::{cmd, containers_of, lab_cluster::LabCluster, pid_of};

const WAIT: Duration = Duration::from_secs(120);

/// The veth programs' counters, over every lab node (the client's task
/// runs on one of them).
fn counts() -> Result<DnsCounts> {
    let mut total = DnsCounts::default();
    for entry in std::fs::read_dir(shoal_lab::BPFFS_ROOT)? {
        let root = BpfRoot::new(entry?.path());
        if let Ok(c) = read_counts(&root) {
            total.answered += c.answered;
            total.passed += c.passed;
        }
    }
    Ok(total)
}

fn nameserver_of(container: &str) -> Result<String> {
    let pid = pid_of(container)?;
    let conf = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/root/etc/resolv.conf")))?;
    conf.lines()
        .find_map(|l| l.trim().strip_prefix("nameserver"))
        .map(|a| a.trim().to_owned())
        .with_context(|| format!("no nameserver in {container}'s resolv.conf: {conf}"))
}

/// The host's `dig` in `container`'s network namespace, asking `server`.
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

/// The answer section's lines (name, TTL, class, type, data), sorted: the
/// two paths may rotate multi-address answers differently.
fn answer_lines(listing: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn status(listing: &str) -> Option<String> {
    let at = listing.find("status: ")? + "status: ".len();
    Some(listing[at..].split(',').next()?.to_owned())
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
fn plain_queries_are_answered_at_the_veth_as_the_server_answers_them() -> Result<()> {
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
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "--network",
        "appnet",
        "shoal/toolbox",
    ])?;
    let client = running(&cluster, "client", 1)?.remove(0);
    running(&cluster, "web", 2)?;
    let server = nameserver_of(&client)?;
    // Over TCP: the server's answer, never the veth program's.
    let server_answer = |name: &str| -> Result<BTreeSet<String>> {
        Ok(answer_lines(&dig(
            &client,
            &server,
            &["+tcp", "+noall", "+answer", name],
        )?))
    };
    let veth_answer = |name: &str| -> Result<BTreeSet<String>> {
        Ok(answer_lines(&dig(
            &client,
            &server,
            &["+noedns", "+noall", "+answer", name],
        )?))
    };
    cluster.wait("tasks.web to list both tasks", WAIT, || {
        (server_answer("tasks.web").ok()?.len() == 2).then_some(())
    })?;

    // (a) Plain A queries: the server's answer (name, TTL, class, type,
    // addresses), counted at the veth.
    let before = counts()?;
    for name in ["web", "WEB", "tasks.web"] {
        for _ in 0..3 {
            let (veth, tcp) = (veth_answer(name)?, server_answer(name)?);
            ensure!(
                !veth.is_empty() && veth == tcp,
                "{name}: veth {veth:?}, server {tcp:?}"
            );
        }
    }
    let after = counts()?;
    ensure!(
        after.answered >= before.answered + 9,
        "9 plain queries, {} answered at the veth",
        after.answered - before.answered
    );

    // (b) glibc's resolver in the container.
    let vip = server_answer("web")?
        .into_iter()
        .next()
        .and_then(|l| l.split_whitespace().last().map(str::to_owned))
        .context("web's VIP")?;
    let before = counts()?;
    let out = std::process::Command::new("docker")
        .args(["exec", &client, "/usr/bin/getent", "hosts", "web"])
        .output()?;
    ensure!(out.status.success(), "getent hosts web: {out:?}");
    let resolved = String::from_utf8_lossy(&out.stdout);
    ensure!(
        resolved.split_whitespace().next() == Some(vip.as_str()),
        "glibc: {resolved}"
    );
    let after = counts()?;
    ensure!(
        after.answered > before.answered,
        "glibc's A query was not answered at the veth"
    );

    // (c) EDNS, AAAA and an upstream name: the server's, unchanged.
    let before = counts()?;
    let edns = dig(&client, &server, &["+noall", "+answer", "web"])?;
    ensure!(answer_lines(&edns) == server_answer("web")?, "EDNS: {edns}");
    let aaaa = dig(&client, &server, &["+noedns", "web", "AAAA"])?;
    ensure!(status(&aaaa).is_some(), "AAAA got no answer: {aaaa}");
    let upstream = dig(
        &client,
        &server,
        &["+noedns", "+noall", "+answer", "www.upstream.test"],
    )?;
    let expected = shoal_lab::topology::UPSTREAM_RECORDS[0].1.to_string();
    ensure!(upstream.contains(&expected), "upstream name: {upstream}");
    let after = counts()?;
    ensure!(
        after.answered == before.answered,
        "the veth answered {} of EDNS/AAAA/upstream",
        after.answered - before.answered
    );
    ensure!(
        after.passed >= before.passed + 2,
        "AAAA and upstream reach the server"
    );

    // (d) NXDOMAIN: a bare name the cluster does not hold is answered at
    // the veth, as the server answers it; a dotted one is the server's.
    let before = counts()?;
    for name in ["late", "Late"] {
        let veth = dig(&client, &server, &["+noedns", name])?;
        let tcp = dig(&client, &server, &["+tcp", name])?;
        ensure!(
            status(&veth).as_deref() == Some("NXDOMAIN") && status(&tcp) == status(&veth),
            "{name}: veth {veth}\nserver {tcp}"
        );
    }
    let after = counts()?;
    ensure!(
        after.answered >= before.answered + 2,
        "2 bare unknown names, {} answered at the veth",
        after.answered - before.answered
    );
    let before = counts()?;
    let dotted = dig(&client, &server, &["+noedns", "tasks.late"])?;
    ensure!(
        status(&dotted).as_deref() == Some("NXDOMAIN"),
        "tasks.late: {dotted}"
    );
    let after = counts()?;
    ensure!(
        after.passed > before.passed && after.answered == before.answered,
        "tasks.late: left to the server ({before:?} -> {after:?})"
    );

    // (e) Scaling reaches the veth's answer.
    cluster.shoal(&["service", "scale", "web=3"])?;
    running(&cluster, "web", 3)?;
    cluster.wait("the veth to answer tasks.web with 3 tasks", WAIT, || {
        let veth = veth_answer("tasks.web").ok()?;
        (veth.len() == 3 && veth == server_answer("tasks.web").ok()?).then_some(())
    })?;
    // (f) A name the veth said NXDOMAIN to, once a service holds it.
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "late",
        "--network",
        "appnet",
        "shoal/toolbox",
    ])?;
    cluster.wait("the veth to answer late", WAIT, || {
        let veth = veth_answer("late").ok()?;
        (veth.len() == 1 && veth == server_answer("late").ok()?).then_some(())
    })?;
    println!("answered at the veth: {:?}", counts()?);
    Ok(())
}

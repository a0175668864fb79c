//! `cargo xtask demo`: the README's main job. It shows what exists today: a
//! 3-node lab with a 3-manager cluster (Raft across the underlay) and an
//! agent on every node running a 6-replica service, driven by the `shoal` CLI, a real `shoal/echo` container plugged into every node,
//! the eBPF counters on every node's underlay interface, and the upstream
//! resolver. It says plainly what is not there yet and leaves the lab
//! running (`cargo xtask demo down`).

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use shoal_lab::{Lab, cmd, container, topology};

use crate::{build, images};

const NODES: usize = 3;

#[derive(Args)]
pub struct DemoArgs {
    #[command(subcommand)]
    command: Option<DemoCommand>,
}

#[derive(Subcommand)]
enum DemoCommand {
    /// Stop the demo and take the lab down.
    Down,
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let lab = Lab::new();
    if let Some(DemoCommand::Down) = args.command {
        return lab
            .down(&mut |line| println!("[demo] {line}"))
            .context("lab down");
    }
    let bins = build::run(&build::BuildArgs::default())?;
    images::build_all()?;
    lab.up(NODES, &mut |line| println!("[lab] {line}"))?;
    lab.start_managers(NODES, &bins, &mut |line| println!("[lab] {line}"))?;
    lab.start_agents(&bins, &mut |line| println!("[lab] {line}"))?;

    println!("\n== The cluster: shoal node ls");
    print!("{}", lab.shoal(&bins, &["node", "ls"])?);
    let services = lab.shoal(&bins, &["service", "ls", "-q"])?;
    if services.trim().is_empty() {
        let create = ["service", "create", "--name", "web", "--replicas", "6"];
        let create = [&create[..], &["--publish", "8080:80", "shoal/echo:1"]].concat();
        lab.shoal(&bins, &create)?;
    }
    // Agents pull nothing: the images are local. Give them a moment.
    for _ in 0..30 {
        let ls = lab.shoal(&bins, &["service", "ls"])?;
        if ls.contains(" 6/6 ") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    println!("\n== shoal service ls; shoal service ps web (real containers on every node)");
    print!("{}", lab.shoal(&bins, &["service", "ls"])?);
    print!("{}", lab.shoal(&bins, &["service", "ps", "web"])?);
    println!("\n== shoal service logs web");
    print!("{}", lab.shoal(&bins, &["service", "logs", "web"])?);
    let agent = bins.join("shoal-agent").display().to_string();
    let toolbox =
        crate::sh::workspace_root().join("target/x86_64-unknown-linux-gnu/release/shoal-toolbox");
    let toolbox = toolbox.display().to_string();

    println!("\n== One shoal/echo:1 container on every node, plugged in by hand");
    for index in 1..=NODES {
        let node = topology::Host::node(index);
        let name = format!("shoal-demo-echo-{}", node.name);
        let echo =
            container::run_detached(&name, "shoal/echo:1", &[("SHOAL_TASK_NAME", &name)], &[])?;
        let (host_side, container_side) =
            (Ipv4Addr::new(198, 19, 0, 1), Ipv4Addr::new(198, 19, 0, 2));
        container::plug_into_node(&echo, &node, "demo0", host_side, container_side)?;
        datapath(&node, &agent, &["attach", "eth0"])?;
        let url = format!("http://{container_side}/");
        let answer = in_node(&node, &toolbox, &["http-get", &url])?;
        println!("{} ({}): {}", node.name, node.addr, answer.trim());
    }

    println!("\n== The upstream resolver, asked from n1");
    let n1 = topology::Host::node(1);
    let dns = topology::UPSTREAM_DNS_ADDR.to_string();
    let answer = in_node(
        &n1,
        &toolbox,
        &["dns", "www.upstream.test", "--server", &dns],
    )?;
    println!("www.upstream.test -> {}", answer.trim());

    println!("\n== eBPF packet counters on each node's eth0 (TC ingress/egress, pinned)");
    for index in 1..=NODES {
        let node = topology::Host::node(index);
        let counts = datapath(&node, &agent, &["counters"])?;
        println!("{}:\n{}", node.name, counts.trim_end());
    }

    println!(
        "\n== Not there yet\n\
         The tasks run as real containers, but with no network yet: overlays and service DNS\n\
         come in [4/6], the eBPF routing mesh in [5/6] (then this demo serves port 8080 from\n\
         every node), stacks in [6/6].\n\
         \nThe lab stays up: `cargo xtask lab shoal -- service ps web`, `cargo xtask lab kill n2`,\n\
         `cargo xtask lab status`. Stop it with `cargo xtask demo down`."
    );
    Ok(())
}

/// Runs `program ARGS` in a node's network namespace; returns its stdout.
fn in_node(node: &topology::Host, program: &str, args: &[&str]) -> Result<String> {
    let netns = format!("--net=/run/netns/{}", node.netns);
    let mut full = vec![netns.as_str(), program];
    full.extend_from_slice(args);
    Ok(cmd::stdout("nsenter", &full)?)
}

/// `shoal-agent datapath ARGS` on a node, with the node's own bpffs tree.
fn datapath(node: &topology::Host, agent: &str, args: &[&str]) -> Result<String> {
    let root = Lab::bpffs_root(node).display().to_string();
    let mut full = vec!["--bpffs", root.as_str(), "datapath"];
    full.extend_from_slice(args);
    in_node(node, agent, &full)
}

//! `cargo xtask demo`: the README's main job, the first command on a fresh
//! machine: it runs the same setup as `cargo xtask ci`, builds the binaries
//! and images, and brings the lab up. It shows what exists today: a
//! 3-node lab with a 3-manager cluster (Raft across the underlay) and an
//! agent on every node, driven by the `shoal` CLI: an overlay network, a
//! 6-replica service on it and a probe container that finds it by name and
//! reaches every task across the nodes, and the eBPF counters on every
//! node's underlay interface. It says plainly what is not there yet and
//! leaves the lab running (`cargo xtask demo down`).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use shoal_lab::{Lab, cmd, topology};

use crate::{build, images, setup, sh};

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
    // A fresh machine has none of the tools: the same idempotent setup as
    // `cargo xtask ci` (one line per step; a present tool costs a probe).
    sh::stage("demo", "setup", setup::run)?;
    let mut bins = std::path::PathBuf::new();
    sh::stage("demo", "build", || {
        bins = build::run(&build::BuildArgs::default())?;
        Ok(())
    })?;
    sh::stage("demo", "images", images::build_all)?;
    sh::stage("demo", "lab and cluster", || {
        lab.up(NODES, &mut |line| println!("[lab] {line}"))?;
        lab.start_cluster(NODES, &bins, &mut |line| println!("[lab] {line}"))?;
        Ok(())
    })?;
    let agent = bins.join("shoal-agent").display().to_string();
    for index in 1..=NODES {
        datapath(&topology::Host::node(index), &agent, &["attach", "eth0"])?;
    }

    println!("\n== The cluster: shoal node ls");
    print!("{}", lab.shoal(&bins, &["node", "ls"])?);
    let services = lab.shoal(&bins, &["service", "ls", "-q"])?;
    if services.trim().is_empty() {
        lab.shoal(&bins, &["network", "create", "-d", "overlay", "demo-net"])?;
        let create = ["service", "create", "--name", "web", "--replicas", "6"];
        let create = [
            &create[..],
            &[
                "--network",
                "demo-net",
                "--publish",
                "8080:80",
                "shoal/echo:1",
            ],
        ]
        .concat();
        lab.shoal(&bins, &create)?;
        lab.shoal(
            &bins,
            &[
                "service",
                "create",
                "--name",
                "probe",
                "--network",
                "demo-net",
                "shoal/toolbox",
            ],
        )?;
    }
    // Agents pull nothing: the images are local. Give them a moment.
    for _ in 0..50 {
        let ls = lab.shoal(&bins, &["service", "ls"])?;
        if ls.contains(" 6/6 ") && ls.contains(" 1/1 ") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    println!(
        "\n== shoal network ls; shoal service ls; shoal service ps web (real containers on every node)"
    );
    print!("{}", lab.shoal(&bins, &["network", "ls"])?);
    print!("{}", lab.shoal(&bins, &["service", "ls"])?);
    print!("{}", lab.shoal(&bins, &["service", "ps", "web"])?);
    println!("\n== shoal service logs web");
    print!("{}", lab.shoal(&bins, &["service", "logs", "web"])?);

    let probe = cmd::stdout(
        "docker",
        &["ps", "-q", "--filter", "label=com.shoal.service.name=probe"],
    )?;
    let probe = probe
        .split_whitespace()
        .next()
        .context("the probe container is not running")?;
    let in_probe = |args: &[&str]| -> Result<String> {
        let mut full = vec!["exec", probe, "/toolbox"];
        full.extend_from_slice(args);
        Ok(cmd::stdout("docker", &full)?)
    };
    println!("\n== Service names, asked from inside the probe container (the node's Shoal DNS)");
    for name in ["web", "tasks.web", "www.upstream.test"] {
        let answer = in_probe(&["dns", name])?;
        println!(
            "{name:<18} -> {}",
            answer.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    println!("\n== Each web task over the overlay (VXLAN between the nodes), by its address");
    for addr in in_probe(&["dns", "tasks.web"])?.split_whitespace() {
        let answer = in_probe(&["http-get", &format!("http://{addr}/")])?;
        println!("{addr:<14} {}", answer.trim());
    }
    println!("\n== http://web/ from the probe: the VIP, balanced in eBPF at the probe's veth");
    print!(
        "{}",
        in_probe(&["http-get", "http://web/", "--count", "6"])?
    );

    let toolbox =
        crate::sh::workspace_root().join("target/x86_64-unknown-linux-gnu/release/shoal-toolbox");
    let toolbox = toolbox.display().to_string();
    let client = topology::Host::client();
    println!(
        "\n== The routing mesh: port 8080 on every node, from the outside ({} at {})",
        client.netns, client.addr
    );
    for index in 1..=NODES {
        let node = topology::Host::node(index);
        let url = format!("http://{}:8080/", node.addr);
        let answer = in_node(&client, &toolbox, &["http-get", &url, "--count", "2"])?;
        for line in answer.lines() {
            println!(
                "{} {url} -> {}",
                node.name,
                line.split_whitespace()
                    .skip(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }

    println!(
        "\n== eBPF packet counters on each node's eth0 (TC ingress/egress, pinned): Raft, agent sessions, VXLAN"
    );
    for index in 1..=NODES {
        let node = topology::Host::node(index);
        let counts = datapath(&node, &agent, &["counters"])?;
        println!("{}:\n{}", node.name, counts.trim_end());
    }

    crate::demo_metrics::show(&lab, &bins, NODES, NODES)?;
    visualizer()?;

    println!(
        "\n== Next steps\n\
         A rolling update: `cargo xtask lab shoal -- service update --image shoal/echo:2 \\\n\
         \x20   --update-parallelism 2 --update-delay 2s web` (progress shown; `service rollback web` undoes it).\n\
         A stack: `cargo xtask lab shoal -- stack deploy -c tests/stacks/fleetman.yml fleet`,\n\
         then `stack ps fleet`, `stack rm fleet`.\n\
         \nFrom the outside: `ip netns exec shoal-client curl http://192.0.2.12:8080/` (any node).\n\
         \nThe lab stays up: `cargo xtask lab shoal -- service ps web`, `cargo xtask lab kill n2`,\n\
         `cargo xtask lab status`. Stop it with `cargo xtask demo down`."
    );
    Ok(())
}

/// Where the visualizer is and how to open it: every manager serves it on
/// its node's address (TLS, with a client certificate) and, in the lab, on
/// the node's loopback (plain HTTP, for a browser in its namespace).
fn visualizer() -> Result<()> {
    let port = shoal_lab::cluster::WEB_PORT;
    let n1 = topology::Host::node(1);
    let answer = in_node(
        &n1,
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{port}/"),
        ],
    )?;
    let tls: Vec<String> = (1..=NODES)
        .map(|i| format!("https://{}:{port}/", topology::Host::node(i).addr))
        .collect();
    println!(
        "\n== The visualizer: nodes as columns, tasks as cards, live (every manager serves it; n1's page answered {answer})\n\
         In a browser in n1's namespace (plain HTTP on the node's loopback, no certificate):\n\
         \x20   ip netns exec {} chromium --no-sandbox --user-data-dir=$(mktemp -d) http://127.0.0.1:{port}/\n\
         On the managers' addresses, TLS asking a client certificate: {}\n\
         \x20   cargo xtask lab shoal -- cert issue --out /tmp/shoal-admin   (ca.pem, cert.pem, key.pem: an admin certificate)\n\
         \x20   ip netns exec shoal-client curl --cacert /tmp/shoal-admin/ca.pem --cert /tmp/shoal-admin/cert.pem \\\n\
         \x20       --key /tmp/shoal-admin/key.pem --resolve shoal-manager:{port}:{} https://shoal-manager:{port}/\n\
         (Managers' certificates name `shoal-manager`, not their address.)\n\
         (A browser takes the same certificate as a PKCS#12 file: openssl pkcs12 -export -in cert.pem -inkey key.pem.)",
        n1.netns,
        tls.join(" "),
        n1.addr,
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

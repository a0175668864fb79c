//! `proxy-v2`: a port published with `proxy-protocol=v2` (the agent's relay
//! in userspace, a PROXY v2 header before each connection's bytes) beside
//! the same tasks' port through the eBPF mesh, in one run: two
//! `shoal/echo` services of two tasks each on n1 and n2 (the relayed one
//! reading the header, `ECHO_PROXY_PROTOCOL=v2`), wrk in the lab's client
//! host entering at n3, which runs no task. No target: the ratio is what
//! the relay costs against the eBPF path.

use std::path::PathBuf;

use anyhow::Result;
use shoal_lab::{Lab, topology};

use crate::mesh::{running, shoal, wait, wrk};

#[derive(clap::Args)]
pub struct Args {
    /// Directory of the release binaries (shoal, shoal-manager, shoal-agent).
    #[arg(long)]
    bin_dir: PathBuf,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// wrk connections (2 threads).
    #[arg(long, default_value_t = 50)]
    connections: usize,
}

pub fn run(args: Args) -> Result<()> {
    let lab = Lab::new();
    lab.up(3, &mut |_| {})?;
    lab.stop_cluster()?;
    lab.start_managers(1, &args.bin_dir, &mut |_| {})?;
    lab.start_agents(&args.bin_dir, &mut |_| {})?;
    // As in `mesh`: the client's ports in TIME_WAIT must not run out.
    shoal_lab::netns::write_sysctl(topology::CLIENT_NS, "net/ipv4/tcp_tw_reuse", "1")?;
    let bins = args.bin_dir.as_path();
    wait("3 ready nodes", || {
        shoal(&lab, bins, &["node", "ls"]).is_ok_and(|o| o.matches(" Ready ").count() == 3)
    })?;
    for (name, publish, env) in [
        ("web", "8080:80", "ECHO_PROXY_PROTOCOL="),
        (
            "web-proxy",
            "published=8086,target=80,proxy-protocol=v2",
            "ECHO_PROXY_PROTOCOL=v2",
        ),
    ] {
        shoal(
            &lab,
            bins,
            &[
                "service",
                "create",
                "--name",
                name,
                "--replicas",
                "2",
                "--constraint",
                "node.hostname!=n3",
                "--publish",
                publish,
                "--env",
                env,
                "shoal/echo:1",
            ],
        )?;
        wait(&format!("2 running {name} tasks"), || {
            running(&lab, bins, name) == 2
        })?;
    }
    // Let every node's tables and relays follow the last push.
    std::thread::sleep(std::time::Duration::from_secs(2));
    println!(
        "proxy-v2: 2 shoal/echo tasks per service (n1, n2); wrk -t2 -c{} -d{}s from {}; entry node n3 runs no task",
        args.connections,
        args.seconds,
        topology::CLIENT_NS
    );
    println!(
        "\n{:<32} {:>12} {:>10} {:>14} {:>10} {:>7}",
        "path", "keep-alive/s", "p99 ms", "new conns/s", "p99 ms", "errors"
    );
    let mut results = Vec::new();
    for (name, url) in [
        ("shoal ingress, eBPF (n3)", "http://192.0.2.13:8080/"),
        (
            "shoal ingress, proxy-protocol v2",
            "http://192.0.2.13:8086/",
        ),
    ] {
        let keep = wrk(url, args.connections, 2, args.seconds, false)?;
        let close = wrk(url, args.connections, 2, args.seconds, true)?;
        crate::mesh::print_row(name, &keep, &close);
        results.push((keep, close));
    }
    let ((mesh_k, mesh_c), (relay_k, relay_c)) = (&results[0], &results[1]);
    println!(
        "\nproxy-protocol v2 (relay) / eBPF mesh: keep-alive {:.2}x, new connections {:.2}x, p99 {:.2}x / {:.2}x",
        relay_k.rps / mesh_k.rps,
        relay_c.rps / mesh_c.rps,
        relay_k.p99_ms / mesh_k.p99_ms,
        relay_c.p99_ms / mesh_c.p99_ms,
    );
    println!("\nThe lab cluster stays up (cargo xtask lab down).");
    Ok(())
}

//! Docker containers in the lab: starting them with no network, plugging
//! them into a node by hand (what the agent will do through netlink), and
//! removing them.

use std::net::Ipv4Addr;

use crate::{CONTAINER_LABEL, LabError, cmd, topology::Host};

/// A running container started by the lab or a test.
#[derive(Clone, Debug)]
pub struct Container {
    pub id: String,
    pub pid: i32,
}

/// `docker run -d --network none` with the lab label; `args` go after the image.
pub fn run_detached(
    name: &str,
    image: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> Result<Container, LabError> {
    let _ = cmd::run("docker", &["rm", "-f", name]);
    let label = format!("{CONTAINER_LABEL}=1");
    let mut full = vec![
        "run",
        "-d",
        "--network",
        "none",
        "--label",
        &label,
        "--name",
        name,
        "--hostname",
        name,
    ];
    let env_args: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for e in &env_args {
        full.extend(["--env", e.as_str()]);
    }
    full.push(image);
    full.extend_from_slice(args);
    let id = cmd::stdout("docker", &full)?.trim().to_owned();
    let pid = cmd::stdout("docker", &["inspect", "--format", "{{.State.Pid}}", &id])?
        .trim()
        .parse()
        .map_err(|_| LabError::Command {
            command: format!("docker inspect {id}"),
            status: None,
            stderr: "no pid: the container is not running".into(),
        })?;
    Ok(Container { id, pid })
}

/// Connects a container to a node with a veth pair on a point-to-point /30:
/// `node_side` (named `host_if` in the node) and `container_side` (its eth0).
pub fn plug_into_node(
    container: &Container,
    node: &Host,
    host_if: &str,
    node_side: Ipv4Addr,
    container_side: Ipv4Addr,
) -> Result<(), LabError> {
    let _ = cmd::ip_in(&node.netns, &["link", "del", host_if]);
    let pid = container.pid.to_string();
    cmd::ip_in(
        &node.netns,
        &[
            "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", &pid,
        ],
    )?;
    cmd::ip_in(
        &node.netns,
        &["addr", "add", &format!("{node_side}/30"), "dev", host_if],
    )?;
    cmd::ip_in(&node.netns, &["link", "set", host_if, "up"])?;
    let in_container = |args: &[&str]| {
        let mut full = vec!["-t", pid.as_str(), "-n", "ip"];
        full.extend_from_slice(args);
        cmd::run("nsenter", &full)
    };
    in_container(&[
        "addr",
        "add",
        &format!("{container_side}/30"),
        "dev",
        "eth0",
    ])?;
    in_container(&["link", "set", "eth0", "up"])?;
    in_container(&["link", "set", "lo", "up"])?;
    Ok(())
}

pub fn remove(container: &Container) -> Result<(), LabError> {
    cmd::run("docker", &["rm", "-f", &container.id])?;
    Ok(())
}

/// Removes every container carrying `label`; returns how many.
pub fn remove_labelled(label: &str) -> Result<usize, LabError> {
    let filter = format!("label={label}");
    let ids = cmd::stdout("docker", &["ps", "-aq", "--filter", &filter])?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(&ids);
        cmd::run("docker", &args)?;
    }
    Ok(ids.len())
}

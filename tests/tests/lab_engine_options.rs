//! Docker's per-container options on the real lab: a service created with
//! `--init`, `-t`, `--read-only`, `--ulimit`, `--sysctl`, `--cap-add` /
//! `--cap-drop`, `--log-driver` / `--log-opt`, `--limit-pids`, `--host`,
//! `--dns*`, `--group` and `--oom-score-adj` runs a container that has them
//! (`docker inspect`, and their effect seen from the host: PID 1, limits,
//! capabilities, the sysctl in its namespace, its root mount, its hosts and
//! resolv.conf); `--dns` servers answer its names; `service update`
//! replaces the task with the new values in effect.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use shoal_tests::{cmd, containers_of, lab_cluster::LabCluster, toolbox_in};

const WAIT: Duration = Duration::from_secs(45);
const CAP_NET_ADMIN: u32 = 12;
const CAP_MKNOD: u32 = 27;

/// The service's one running container, once it is not `old`.
fn new_container(cluster: &LabCluster, service: &str, old: Option<&str>) -> Result<String> {
    cluster.wait(&format!("a new running {service} container"), WAIT, || {
        let ids = containers_of(service).ok()?;
        match ids.as_slice() {
            [one] if Some(one.as_str()) != old && cluster.running_tasks(service) == 1 => {
                Some(one.clone())
            }
            _ => None,
        }
    })
}

fn inspect(container: &str) -> Result<Value> {
    let text = cmd::stdout("docker", &["inspect", container])?;
    let all: Value = serde_json::from_str(&text)?;
    Ok(all[0].clone())
}

/// A file of the container's, read from the host through its root.
fn file_in(pid: &str, path: &str) -> Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/root{path}"))
        .with_context(|| format!("reading {path} of process {pid}"))
}

/// The effective capability set of a process.
fn capabilities(pid: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("no CapEff line")?;
    Ok(u64::from_str_radix(hex.trim(), 16)?)
}

/// `Max open files   SOFT   HARD   files` of a process.
fn open_files_limit(pid: &str) -> Result<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open files limit")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    Ok((fields[3].to_owned(), fields[4].to_owned()))
}

/// A sysctl as the container's network namespace has it.
fn net_sysctl(pid: &str, name: &str) -> Result<String> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    Ok(cmd::stdout("nsenter", &["-t", pid, "-n", "cat", &path])?
        .trim()
        .to_owned())
}

/// The options of the container's root mount.
fn root_mount_options(pid: &str) -> Result<Vec<String>> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4) == Some(&"/") {
            return Ok(fields[5].split(',').map(str::to_owned).collect());
        }
    }
    bail!("no root mount in /proc/{pid}/mountinfo")
}

/// `toolbox dns NAME` in the container: Some(address) or None when it fails.
fn resolves(container: &str, name: &str) -> Result<Option<String>> {
    let out = toolbox_in(container, &["--timeout-ms", "6000", "dns", name])?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

#[test]
fn engine_options_reach_the_container_and_an_update_changes_them() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&["network", "create", "-d", "overlay", "appnet"])?;
    let secret = tempfile::NamedTempFile::new()?;
    std::fs::write(secret.path(), "sesame")?;
    cluster.shoal(&[
        "secret",
        "create",
        "pw",
        &secret.path().display().to_string(),
    ])?;

    // A value the engine would refuse is refused at once, naming the flag.
    let refused = cluster
        .shoal(&[
            "service",
            "create",
            "--name",
            "bad",
            "--sysctl",
            "vm.swappiness=10",
            "shoal/toolbox",
        ])
        .expect_err("a sysctl outside the container's namespaces was accepted")
        .to_string();
    ensure!(
        refused
            .contains("--sysctl: invalid sysctl vm.swappiness: not in a separate kernel namespace"),
        "{refused}"
    );

    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "opts",
        "--network",
        "appnet",
        "--init",
        "-t",
        "--read-only",
        "--ulimit",
        "nofile=1024:2048",
        "--sysctl",
        "net.core.somaxconn=512",
        "--cap-add",
        "NET_ADMIN",
        "--cap-drop",
        "CAP_MKNOD",
        "--log-driver",
        "local",
        "--log-opt",
        "max-size=1m",
        "--limit-pids",
        "64",
        "--host",
        "db.example:192.0.2.200",
        "--dns",
        "192.0.2.99",
        "--dns-search",
        "upstream.test",
        "--dns-option",
        "timeout:1",
        "--group",
        "4242",
        // Positive: this machine's engine cannot lower a score (a limit of
        // its sandbox, not of the option).
        "--oom-score-adj",
        "100",
        "--secret",
        "pw",
        "shoal/toolbox",
    ])?;
    let first = new_container(&cluster, "opts", None)?;
    let info = inspect(&first)?;
    let host = &info["HostConfig"];
    let pid = info["State"]["Pid"].to_string();
    ensure!(host["Init"] == true, "{host}");
    ensure!(info["Config"]["Tty"] == true, "{}", info["Config"]);
    ensure!(host["ReadonlyRootfs"] == true, "{host}");
    ensure!(
        host["Ulimits"] == serde_json::json!([{ "Name": "nofile", "Soft": 1024, "Hard": 2048 }]),
        "{}",
        host["Ulimits"]
    );
    ensure!(host["Sysctls"]["net.core.somaxconn"] == "512", "{host}");
    ensure!(
        host["CapAdd"] == serde_json::json!(["CAP_NET_ADMIN"]),
        "{host}"
    );
    ensure!(
        host["CapDrop"] == serde_json::json!(["CAP_MKNOD"]),
        "{host}"
    );
    ensure!(
        host["LogConfig"]["Type"] == "local",
        "{}",
        host["LogConfig"]
    );
    ensure!(
        host["LogConfig"]["Config"]["max-size"] == "1m",
        "{}",
        host["LogConfig"]
    );
    ensure!(host["PidsLimit"] == 64, "{host}");
    ensure!(
        host["ExtraHosts"] == serde_json::json!(["db.example:192.0.2.200"]),
        "{host}"
    );
    ensure!(host["GroupAdd"] == serde_json::json!(["4242"]), "{host}");
    ensure!(host["OomScoreAdj"] == 100, "{host}");

    // Their effect, seen from the host.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
    ensure!(
        comm.trim() == "docker-init",
        "PID 1 is {comm:?}, not the init"
    );
    ensure!(
        open_files_limit(&pid)? == ("1024".into(), "2048".into()),
        "{:?}",
        open_files_limit(&pid)?
    );
    let caps = capabilities(&pid)?;
    ensure!(
        caps & (1 << CAP_NET_ADMIN) != 0 && caps & (1 << CAP_MKNOD) == 0,
        "CapEff {caps:x}"
    );
    ensure!(net_sysctl(&pid, "net.core.somaxconn")? == "512");
    let root = root_mount_options(&pid)?;
    ensure!(root.contains(&"ro".to_owned()), "root mounted {root:?}");
    let oom = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))?;
    ensure!(oom.trim() == "100", "oom_score_adj {oom}");
    let hosts = file_in(&pid, "/etc/hosts")?;
    ensure!(
        hosts
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["192.0.2.200", "db.example"]),
        "{hosts}"
    );
    // The node's resolver stays the nameserver; search and options are the service's.
    let resolv = file_in(&pid, "/etc/resolv.conf")?;
    ensure!(
        resolv
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("nameserver ") && !l.contains("192.0.2.99")),
        "{resolv}"
    );
    ensure!(resolv.contains("search upstream.test\n"), "{resolv}");
    ensure!(resolv.contains("options ndots:0 timeout:1\n"), "{resolv}");
    // The agent's own mounts still work on a read-only root.
    ensure!(file_in(&pid, "/run/secrets/pw")? == "sesame");
    // --dns: the cluster's names still answer; others go to 192.0.2.99,
    // where nothing answers.
    ensure!(
        resolves(&first, "opts")?.is_some(),
        "the service's own name"
    );
    ensure!(
        resolves(&first, "www.upstream.test")?.is_none(),
        "a name outside the cluster was answered without asking the service's DNS server"
    );
    // The local log driver keeps what the container writes for `docker logs`.
    cmd::run("docker", &["logs", &first])?;

    // Docker's inspect shape.
    let spec: Value = serde_json::from_str(&cluster.shoal(&["service", "inspect", "opts"])?)?;
    let template = &spec[0]["Spec"]["TaskTemplate"];
    let c = &template["ContainerSpec"];
    ensure!(
        c["Init"] == true && c["TTY"] == true && c["ReadOnly"] == true,
        "{c}"
    );
    ensure!(
        c["Hosts"] == serde_json::json!(["192.0.2.200 db.example"]),
        "{c}"
    );
    ensure!(
        c["DNSConfig"]["Nameservers"] == serde_json::json!(["192.0.2.99"]),
        "{c}"
    );
    ensure!(
        c["CapabilityAdd"] == serde_json::json!(["CAP_NET_ADMIN"]),
        "{c}"
    );
    ensure!(template["LogDriver"]["Name"] == "local", "{template}");
    ensure!(template["Resources"]["Limits"]["Pids"] == 64, "{template}");
    let pretty = cluster.shoal(&["service", "inspect", "--pretty", "opts"])?;
    ensure!(
        pretty.contains(" Init:\t\ttrue") && pretty.contains("  PIDs:\t\t64"),
        "{pretty}"
    );

    // An update replaces the task with the new values.
    cluster.shoal(&[
        "service",
        "update",
        "--ulimit-add",
        "nofile=4096:8192",
        "--sysctl-rm",
        "net.core.somaxconn",
        "--cap-drop",
        "NET_ADMIN",
        "--read-only=false",
        "--tty=false",
        "--dns-rm",
        "192.0.2.99",
        "--dns-add",
        "192.0.2.53",
        "--host-rm",
        "db.example",
        "--limit-pids",
        "128",
        "opts",
    ])?;
    let second = new_container(&cluster, "opts", Some(&first))?;
    let info = inspect(&second)?;
    let host = &info["HostConfig"];
    let pid = info["State"]["Pid"].to_string();
    ensure!(
        host["ReadonlyRootfs"] == false && info["Config"]["Tty"] == false,
        "{host}"
    );
    ensure!(
        host["Ulimits"] == serde_json::json!([{ "Name": "nofile", "Soft": 4096, "Hard": 8192 }]),
        "{}",
        host["Ulimits"]
    );
    ensure!(
        host["Sysctls"].as_object().is_none_or(|m| m.is_empty()),
        "{host}"
    );
    // The capability the service added is taken off its list (Docker's
    // tri-state), not dropped: the engine's default set is back.
    ensure!(
        host["CapAdd"].as_array().is_none_or(|a| a.is_empty()),
        "{host}"
    );
    ensure!(
        host["CapDrop"] == serde_json::json!(["CAP_MKNOD"]),
        "{host}"
    );
    ensure!(host["PidsLimit"] == 128, "{host}");
    ensure!(
        host["ExtraHosts"].as_array().is_none_or(|a| a.is_empty()),
        "{host}"
    );
    ensure!(host["Init"] == true, "untouched options stay: {host}");
    ensure!(open_files_limit(&pid)? == ("4096".into(), "8192".into()));
    ensure!(capabilities(&pid)? & (1 << CAP_NET_ADMIN) == 0);
    ensure!(!root_mount_options(&pid)?.contains(&"ro".to_owned()));
    let hosts = file_in(&pid, "/etc/hosts")?;
    ensure!(!hosts.contains("db.example"), "{hosts}");
    // Now the service's DNS server is the lab's resolver: the name answers.
    ensure!(
        resolves(&second, "www.upstream.test")?.is_some_and(|a| a.contains("192.0.2.200")),
        "www.upstream.test did not resolve through --dns 192.0.2.53"
    );
    Ok(())
}

#[test]
fn a_service_given_no_name_gets_one_from_the_manager() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    // -q: the id alone (the lab's CLI runs detached: no progress either way).
    let out = cluster.shoal(&["service", "create", "-q", "shoal/echo:1"])?;
    let id = out.trim();
    ensure!(out.lines().count() == 1 && id.len() == 25, "{out:?}");
    let rows = cluster.json_rows(&["service", "ls"])?;
    let name = rows[0]["Name"].as_str().unwrap_or_default().to_owned();
    let (adjective, surname) = name
        .split_once('_')
        .with_context(|| format!("{name:?} is not adjective_surname"))?;
    ensure!(!adjective.is_empty() && !surname.is_empty(), "{name}");
    cluster.wait("the named service running", WAIT, || {
        (cluster.running_tasks(&name) == 1).then_some(())
    })?;
    Ok(())
}

//! Compose files with the keys issue 15 added, deployed on real agents and
//! containers: a config whose `template_driver` is `golang` is expanded
//! for each task (and the container reads its own), declared volume labels
//! and driver options are on the volume Docker creates, `restart:` is the
//! restart policy; and the per-container engine keys (`init`, `ulimits`,
//! `sysctls`, `logging`, `cap_add`, `read_only`…) take effect in the
//! running containers.

use std::{collections::BTreeSet, path::Path, time::Duration};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use shoal_tests::{cmd, containers_of, get_in_container, lab_cluster::LabCluster};

const WAIT: Duration = Duration::from_secs(60);

const TEMPLATED: &str = "services:
  web:
    image: shoal/echo:1
    restart: on-failure:2
    environment:
      GREETING: hello
    secrets:
      - source: pw
        target: db_password
    configs:
      - source: app
        target: /etc/app.conf
    volumes:
      - data:/data
    deploy:
      replicas: 2
configs:
  app:
    file: ./app.conf.tmpl
    template_driver: golang
secrets:
  pw:
    file: ./pw.txt
volumes:
  data:
    labels:
      com.example.tier: db
    driver_opts:
      type: tmpfs
      device: tmpfs
      o: size=16m
";

const TEMPLATE: &str = "service={{.Service.Name}}
task={{.Task.Name}}
slot={{.Task.Slot}}
node={{.Node.Hostname}}
greeting={{env \"GREETING\"}}
password={{secret \"db_password\"}}
";

fn deploy(cluster: &LabCluster, dir: &Path, file: &str, stack: &str) -> Result<String> {
    let path = dir.join(file);
    cluster
        .shoal(&["stack", "deploy", "-c", &path.display().to_string(), stack])
        .with_context(|| format!("deploying {file}"))
}

/// The running tasks of `service`: (slot name `SERVICE.SLOT`, node).
fn running(cluster: &LabCluster, service: &str) -> Option<Vec<(String, String)>> {
    let rows = cluster
        .json_rows(&[
            "service",
            "ps",
            service,
            "--filter",
            "desired-state=running",
        ])
        .ok()?;
    let tasks: Vec<(String, String)> = rows
        .iter()
        .filter(|r| {
            r["CurrentState"]
                .as_str()
                .is_some_and(|s| s.starts_with("Running"))
        })
        .filter_map(|r| {
            Some((
                r["Name"].as_str()?.to_owned(),
                r["Node"].as_str()?.to_owned(),
            ))
        })
        .collect();
    Some(tasks)
}

fn lines(body: &str) -> std::collections::BTreeMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn a_templated_config_is_expanded_for_each_task_and_declared_volumes_keep_their_labels()
-> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    let dir = tempfile::tempdir()?;
    let password = format!("pw-{}", std::process::id());
    std::fs::write(dir.path().join("pw.txt"), &password)?;
    std::fs::write(dir.path().join("app.conf.tmpl"), TEMPLATE)?;
    std::fs::write(dir.path().join("stack.yml"), TEMPLATED)?;
    deploy(&cluster, dir.path(), "stack.yml", "tmpl")?;
    let tasks = cluster.wait("two tmpl_web tasks running", WAIT, || {
        running(&cluster, "tmpl_web").filter(|t| t.len() == 2)
    })?;
    let containers = cluster.wait("two tmpl_web containers", WAIT, || {
        containers_of("tmpl_web").ok().filter(|c| c.len() == 2)
    })?;

    // Each container reads its own expansion: its slot, its task, its node.
    let mut slots = BTreeSet::new();
    for container in &containers {
        let (code, body) = get_in_container(container, "/file/etc/app.conf")?;
        ensure!(
            code == 200,
            "reading /etc/app.conf in {container}: {code} {body}"
        );
        let got = lines(&body);
        ensure!(got["service"] == "tmpl_web", "{body}");
        ensure!(got["greeting"] == "hello", "{body}");
        ensure!(got["password"] == password, "{body}");
        let slot = got["slot"].clone();
        ensure!(
            got["task"].starts_with(&format!("tmpl_web.{slot}.")),
            "task name {:?} for slot {slot}",
            got["task"]
        );
        let node = tasks
            .iter()
            .find(|(name, _)| *name == format!("tmpl_web.{slot}"))
            .map(|(_, node)| node.clone())
            .with_context(|| format!("no running task in slot {slot}: {tasks:?}"))?;
        ensure!(
            got["node"] == node,
            "node {:?}, the task runs on {node}",
            got["node"]
        );
        slots.insert(slot);
    }
    ensure!(
        slots == BTreeSet::from(["1".to_owned(), "2".to_owned()]),
        "{slots:?}"
    );
    // The declared volume: its labels (and the stack's) and driver options.
    let volume: Value =
        serde_json::from_str(&cmd::stdout("docker", &["volume", "inspect", "tmpl_data"])?)?;
    let labels = &volume[0]["Labels"];
    ensure!(labels["com.example.tier"] == "db", "{volume}");
    ensure!(labels["com.docker.stack.namespace"] == "tmpl", "{volume}");
    ensure!(volume[0]["Options"]["type"] == "tmpfs", "{volume}");

    // `restart: on-failure:2` is the restart policy, as in Docker.
    let service: Value =
        serde_json::from_str(&cluster.shoal(&["service", "inspect", "tmpl_web"])?)?;
    let policy = &service[0]["Spec"]["TaskTemplate"]["RestartPolicy"];
    ensure!(
        policy["Condition"] == "on-failure" && policy["MaxAttempts"] == 2,
        "{policy}"
    );

    cluster.shoal(&["stack", "rm", "tmpl"])?;
    cluster.wait("tmpl_web's containers gone", WAIT, || {
        containers_of("tmpl_web").ok()?.is_empty().then_some(())
    })?;
    cmd::stdout("docker", &["volume", "rm", "tmpl_data"])?;
    Ok(())
}

#[test]
fn a_bad_template_is_refused_when_the_stack_is_deployed() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("pw.txt"), "x")?;
    std::fs::write(dir.path().join("app.conf.tmpl"), "{{.Service.Nmae}}\n")?;
    std::fs::write(dir.path().join("stack.yml"), TEMPLATED)?;
    let error = deploy(&cluster, dir.path(), "stack.yml", "badtmpl")
        .err()
        .context("a config with an unknown placeholder was accepted")?;
    ensure!(
        format!("{error:#}")
            .contains("config badtmpl_app: invalid template: unknown placeholder .Service.Nmae"),
        "{error:#}"
    );
    let _ = cluster.shoal(&["stack", "rm", "badtmpl"]);
    Ok(())
}

const ENGINE_KEYS: &str = "services:
  web:
    image: shoal/echo:1
    init: true
    read_only: true
    tmpfs: /tmp
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    sysctls:
      net.core.somaxconn: 1024
    ulimits:
      nofile:
        soft: 2048
        hard: 4096
      nproc: 512
    logging:
      driver: json-file
      options:
        max-size: 1m
        max-file: \"2\"
    extra_hosts:
      - db.example:192.0.2.77
    stop_signal: SIGINT
";

/// The per-container keys of a compose file, as `docker inspect` shows
/// them on the running container.
#[test]
fn a_stack_s_engine_keys_take_effect_in_its_containers() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("stack.yml"), ENGINE_KEYS)?;
    deploy(&cluster, dir.path(), "stack.yml", "eng")?;
    let container = cluster.wait("eng_web running", WAIT, || {
        containers_of("eng_web").ok()?.into_iter().next()
    })?;
    let inspect: Value = serde_json::from_str(&cmd::stdout("docker", &["inspect", &container])?)?;
    let host = &inspect[0]["HostConfig"];
    ensure!(host["Init"] == true, "init: {}", host["Init"]);
    ensure!(host["ReadonlyRootfs"] == true, "read-only root");
    ensure!(
        host["CapAdd"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "CAP_NET_ADMIN" || c == "NET_ADMIN")),
        "cap_add: {}",
        host["CapAdd"]
    );
    ensure!(
        host["CapDrop"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "CAP_MKNOD" || c == "MKNOD")),
        "cap_drop: {}",
        host["CapDrop"]
    );
    ensure!(
        host["Sysctls"]["net.core.somaxconn"] == "1024",
        "sysctls: {}",
        host["Sysctls"]
    );
    let ulimits = host["Ulimits"].as_array().context("no ulimits")?;
    let limit = |name: &str| {
        ulimits
            .iter()
            .find(|u| u["Name"] == name)
            .map(|u| (u["Soft"].as_i64(), u["Hard"].as_i64()))
    };
    ensure!(
        limit("nofile") == Some((Some(2048), Some(4096))),
        "{ulimits:?}"
    );
    ensure!(
        limit("nproc") == Some((Some(512), Some(512))),
        "{ulimits:?}"
    );
    let log = &host["LogConfig"];
    ensure!(
        log["Type"] == "json-file" && log["Config"]["max-size"] == "1m",
        "log driver: {log}"
    );
    ensure!(
        host["ExtraHosts"].as_array().is_some_and(|h| h
            .iter()
            .any(|h| h.as_str().is_some_and(|h| h.contains("192.0.2.77")))),
        "extra hosts: {}",
        host["ExtraHosts"]
    );
    ensure!(
        inspect[0]["Config"]["StopSignal"] == "SIGINT",
        "stop signal"
    );
    cluster.shoal(&["stack", "rm", "eng"])?;
    Ok(())
}

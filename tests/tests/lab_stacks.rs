//! Stacks on real agents and containers: every example stack from the
//! material Shoal started from deploys and reaches its replica counts,
//! `stack rm` leaves nothing, a redeploy touches only what changed, and a
//! rolling update under a stream of new connections through the mesh
//! loses none, while a bad image rolls back by itself.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use shoal_tests::{bin, client, containers_of, lab_cluster::LabCluster, toolbox_in};

const WAIT: Duration = Duration::from_secs(60);

fn stacks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks")
}

/// Every service of `stack` runs as many tasks as it wants.
fn converged(cluster: &LabCluster, stack: &str) -> Option<usize> {
    let rows = cluster.json_rows(&["stack", "services", stack]).ok()?;
    let all = rows.iter().all(|r| {
        let replicas = r["Replicas"].as_str().unwrap_or("0/1");
        let (running, desired) = replicas.split_once('/').unwrap_or(("0", "1"));
        running == desired && desired != "0"
    });
    (all && !rows.is_empty()).then_some(rows.len())
}

fn deploy(cluster: &LabCluster, file: &Path, stack: &str) -> Result<String> {
    cluster
        .shoal(&["stack", "deploy", "-c", &file.display().to_string(), stack])
        .with_context(|| format!("deploying {}", file.display()))
}

fn names(cluster: &LabCluster, what: &str) -> Result<Vec<String>> {
    Ok(cluster
        .json_rows(&[what, "ls"])?
        .iter()
        .filter_map(|r| r["Name"].as_str().map(str::to_owned))
        .collect())
}

fn shoal_containers() -> Result<usize> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=com.shoal.service.name"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

#[test]
fn every_example_stack_deploys_and_stack_rm_leaves_nothing() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    let dir = stacks_dir();
    // What the examples' README asks for before deploying.
    cluster.shoal(&["network", "create", "-d", "overlay", "--attachable", "ch03"])?;
    cluster.shoal(&["node", "update", "--label-add", "storage=db", "n2"])?;
    let networks_before = names(&cluster, "network")?;

    // fleetman and ingress both publish port 80: one at a time.
    for (file, stack, services) in [
        ("fleetman.yml", "fleet", 2),
        ("webapi.yml", "webapi", 2),
        ("visualizer.yml", "viz", 1),
        ("resources.yml", "res", 1),
        ("configs-secrets.yml", "cs", 2),
        ("volumes.yml", "vol", 1),
        ("global-update.yml", "glob", 1),
    ] {
        let out = deploy(&cluster, &dir.join(file), stack)?;
        ensure!(
            out.contains(&format!("Creating service {stack}_")),
            "{file}: {out}"
        );
        let got = cluster.wait(&format!("{file} to converge"), WAIT, || {
            converged(&cluster, stack)
        })?;
        ensure!(got == services, "{file}: {got} services, want {services}");
        println!("{file} as {stack}: {services} services converged");
    }
    // Placement as the files say: webapi off the manager (n1), volumes on n2.
    let ps = cluster.json_rows(&["stack", "ps", "webapi"])?;
    ensure!(
        ps.iter()
            .filter(|r| r["DesiredState"] == "Running")
            .all(|r| r["Node"] != "n1"),
        "webapi ran on the manager: {ps:?}"
    );
    let ps = cluster.json_rows(&["stack", "ps", "vol"])?;
    ensure!(
        ps.iter()
            .any(|r| r["Node"] == "n2" && r["DesiredState"] == "Running"),
        "{ps:?}"
    );
    // Secrets: file-based, named by the stack; data never shown.
    let secrets = names(&cluster, "secret")?;
    ensure!(secrets == ["cs_db_password"], "{secrets:?}");
    ensure!(names(&cluster, "config")? == ["cs_registry_config"]);

    cluster.shoal(&["stack", "rm", "fleet"])?;
    let out = deploy(&cluster, &dir.join("ingress.yml"), "ingress-stack")?;
    ensure!(
        out.contains("Creating service ingress-stack_haproxy"),
        "{out}"
    );
    cluster.wait("ingress.yml to converge", WAIT, || {
        converged(&cluster, "ingress-stack")
    })?;
    let ps = cluster.json_rows(&["stack", "ps", "ingress-stack"])?;
    ensure!(
        ps.iter().all(|r| r["Node"] == "n1"),
        "global on managers only: {ps:?}"
    );

    let stacks = cluster.json_rows(&["stack", "ls"])?;
    ensure!(stacks.len() == 7, "stack ls: {stacks:?}");
    for stack in ["webapi", "viz", "res", "cs", "vol", "glob", "ingress-stack"] {
        let out = cluster.shoal(&["stack", "rm", stack])?;
        ensure!(out.contains("Removing service"), "{stack}: {out}");
    }
    ensure!(names(&cluster, "service")?.is_empty());
    ensure!(names(&cluster, "secret")?.is_empty() && names(&cluster, "config")?.is_empty());
    ensure!(
        names(&cluster, "network")? == networks_before,
        "networks left behind"
    );
    cluster.wait("every task container gone", WAIT, || {
        (shoal_containers().ok()? == 0).then_some(())
    })?;
    Ok(())
}

const ROLLING: &str = "services:
  web:
    image: ${WEB_IMAGE:-shoal/echo:1}
    ports: [\"8080:80\"]
    deploy:
      replicas: 4
      update_config:
        parallelism: 2
        delay: 2s
        failure_action: rollback
        monitor: 2s
      rollback_config:
        parallelism: 0
        monitor: 5s
  db:
    image: shoal/echo:1
    deploy:
      replicas: 2
  tb:
    image: shoal/toolbox
";

fn task_ids(cluster: &LabCluster, service: &str) -> Result<Vec<String>> {
    let mut ids: Vec<String> = cluster
        .json_rows(&[
            "service",
            "ps",
            service,
            "--filter",
            "desired-state=running",
        ])?
        .iter()
        .filter_map(|r| r["ID"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    Ok(ids)
}

/// The images of app_web's running tasks.
fn web_images(cluster: &LabCluster) -> Option<Vec<String>> {
    Some(
        cluster
            .json_rows(&[
                "service",
                "ps",
                "app_web",
                "--filter",
                "desired-state=running",
            ])
            .ok()?
            .iter()
            .filter_map(|r| r["Image"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// All four app_web tasks run `want`.
fn images_are(cluster: &LabCluster, want: &str) -> Option<()> {
    let images = web_images(cluster)?;
    (images.len() == 4 && images.iter().all(|i| i == want)).then_some(())
}

fn update_state(cluster: &LabCluster, service: &str) -> Option<String> {
    let inspect: serde_json::Value =
        serde_json::from_str(&cluster.shoal(&["service", "inspect", service]).ok()?).ok()?;
    inspect[0]["UpdateStatus"]["State"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn a_rolling_update_loses_no_connection_and_a_bad_image_rolls_back() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    let t0 = std::time::Instant::now();
    let phase = |what: &str| println!("[{:>5.1?}] {what}", t0.elapsed());
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("app.yml");
    std::fs::write(&file, ROLLING)?;
    let file_arg = file.display().to_string();
    let deploy_with = |image: &str| -> Result<String> {
        let host = cluster.lab_host()?;
        let out = Command::new(bin("shoal")?)
            .args([
                "--host", &host, "stack", "deploy", "--detach", "-c", &file_arg, "app",
            ])
            .env("WEB_IMAGE", image)
            .output()?;
        ensure!(
            out.status.success(),
            "deploy {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    deploy_with("shoal/echo:1")?;
    cluster.wait("app to converge", WAIT, || converged(&cluster, "app"))?;
    let db_before = task_ids(&cluster, "app_db")?;
    // Services find each other by their short names on the stack's network.
    let tb = containers_of("app_tb")?
        .pop()
        .context("no app_tb container")?;
    for (name, count) in [("web", 1), ("db", 1), ("app_web", 1), ("tasks.web", 4)] {
        let out = toolbox_in(&tb, &["dns", name])?;
        let addrs = String::from_utf8_lossy(&out.stdout).lines().count();
        ensure!(out.status.success() && addrs == count, "{name}: {out:?}");
    }
    phase("converged");
    // Every node answers before the stream starts.
    cluster.wait("the mesh to serve app_web", WAIT, || {
        let out = client::toolbox_output(&["http-get", "http://192.0.2.12:8080/", "--count", "4"])
            .ok()?;
        (String::from_utf8_lossy(&out.stdout)
            .matches(" 200 ")
            .count()
            == 4)
            .then_some(())
    })?;

    phase("mesh serves");
    // The update: parallelism 2, delay 2 s, under ~50 new connections/s.
    let stream = client::http_stream("http://192.0.2.12:8080/", 600)?;
    let started = std::time::Instant::now();
    let out = deploy_with("shoal/echo:2")?;
    ensure!(out.contains("Updating service app_web"), "{out}");
    ensure!(
        !out.contains("app_db"),
        "the unchanged service was touched: {out}"
    );
    cluster.wait("the update to complete", WAIT, || {
        (update_state(&cluster, "app_web")? == "completed").then_some(())
    })?;
    let took = started.elapsed();
    let out = stream.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ok = text.lines().filter(|l| l.contains(" 200 ")).count();
    let failed: Vec<&str> = text.lines().filter(|l| !l.contains(" 200 ")).collect();
    println!(
        "rolling update took {took:.1?}; {ok} connections answered, {} failed; client: {}",
        failed.len(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    ensure!(
        failed.is_empty() && ok == 600,
        "failed connections: {failed:?}"
    );
    ensure!(
        text.contains("\"version\":\"2\""),
        "no answer from the new image"
    );
    ensure!(
        images_are(&cluster, "shoal/echo:2").is_some(),
        "{:?}",
        web_images(&cluster)
    );
    ensure!(
        task_ids(&cluster, "app_db")? == db_before,
        "app_db's tasks changed"
    );

    phase("rolling update checked");
    // A bad image fails its first batch and rolls back by itself.
    deploy_with("shoal/missing:1")?;
    cluster.wait("the update to roll back", WAIT, || {
        (update_state(&cluster, "app_web")? == "rollback_completed").then_some(())
    })?;
    cluster.wait("echo:2 back on every task", WAIT, || {
        images_are(&cluster, "shoal/echo:2")
    })?;
    let inspect = cluster.shoal(&["service", "inspect", "--pretty", "app_web"])?;
    ensure!(inspect.contains("rollback_completed"), "{inspect}");
    ensure!(
        task_ids(&cluster, "app_db")? == db_before,
        "app_db's tasks changed"
    );

    phase("rolled back by itself");
    // By hand: `service update --image`, then `service rollback`.

    cluster.shoal(&[
        "service",
        "update",
        "--image",
        "shoal/echo:1",
        "--update-parallelism",
        "0",
        "app_web",
    ])?;
    let show = |cluster: &LabCluster| {
        for args in [
            &["service", "inspect", "app_web"][..],
            &["service", "ps", "app_web"],
        ] {
            println!("{}", cluster.shoal(args).unwrap_or_else(|e| e.to_string()));
        }
    };
    let updated = cluster.wait("service update to complete", WAIT, || {
        (update_state(&cluster, "app_web")? == "completed").then_some(())
    });
    if updated.is_err() {
        show(&cluster);
    }
    updated?;
    cluster.wait("echo:1 on every task", WAIT, || {
        images_are(&cluster, "shoal/echo:1")
    })?;
    cluster.shoal(&["service", "rollback", "app_web"])?;
    let rolled_back = cluster.wait("service rollback to complete", WAIT, || {
        (update_state(&cluster, "app_web")? == "rollback_completed").then_some(())
    });
    if rolled_back.is_err() {
        show(&cluster);
    }
    rolled_back?;
    cluster.wait("echo:2 back on every task", WAIT, || {
        images_are(&cluster, "shoal/echo:2")
    })?;

    phase("update and rollback by hand");
    // A file-based secret whose content changed is refused, clearly.
    std::fs::write(dir.path().join("pw.txt"), "one")?;
    let with_secret = format!("{ROLLING}    secrets: [pw]\nsecrets:\n  pw:\n    file: ./pw.txt\n");
    std::fs::write(&file, with_secret)?;
    deploy_with("shoal/echo:2")?;
    std::fs::write(dir.path().join("pw.txt"), "two")?;
    let err = deploy_with("shoal/echo:2")
        .err()
        .context("a changed secret was accepted")?;
    ensure!(
        err.to_string().contains("app_pw: its content changed"),
        "{err}"
    );
    phase("secret refused");
    cluster.shoal(&["stack", "rm", "app"])?;
    phase("stack removed");
    Ok(())
}

#[test]
fn broken_compose_files_name_file_line_and_column() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cases = [
        (
            "tab.yml",
            "services:\n  web:\n\timage: x\n",
            "tab.yml:3:1: ",
        ),
        (
            "type.yml",
            "services:\n  web:\n    image: x\n    deploy:\n      replicas: two\n",
            "type.yml:5:17: services.web.deploy.replicas: expected a whole number, found \"two\"",
        ),
        (
            "key.yml",
            "services:\n  web:\n    image: x\n    deploy:\n      replica: 2\n",
            "key.yml:5:7: services.web.deploy.replica: unknown key `replica`",
        ),
        (
            "var.yml",
            "services:\n  web:\n    image: shoal/echo:${SHOAL_TEST_UNSET_TAG:?set the tag}\n",
            "var.yml:3:12: services.web.image: invalid interpolation format: \"required variable SHOAL_TEST_UNSET_TAG is missing a value: set the tag\"",
        ),
    ];
    for (name, text, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        // No cluster needed: `stack config` reads and checks the files.
        let out = Command::new(bin("shoal")?)
            .args(["stack", "config", "-c", &path.display().to_string()])
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{name} was accepted");
        ensure!(stderr.contains(want), "{name}: {stderr:?} lacks {want:?}");
        ensure!(
            stderr.lines().count() == 1,
            "{name}: one error, got {stderr:?}"
        );
    }
    Ok(())
}

//! `--format` templates, `--filter` and `node ps` through the real CLI
//! against a real cluster with real agents: the same field names Docker's
//! templates see, Docker's filter keys and errors.

use std::time::Duration;

use anyhow::{Result, ensure};
use shoal_tests::lab_cluster::LabCluster;

const WAIT: Duration = Duration::from_secs(30);

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

#[test]
fn templates_and_filters_read_the_cluster_as_dockers_do() -> Result<()> {
    let cluster = LabCluster::start(1, true)?;
    cluster.shoal(&[
        "network", "create", "-d", "overlay", "--label", "env=test", "fmtnet",
    ])?;
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), "s3cret")?;
    let path = file.path().display().to_string();
    cluster.shoal(&["secret", "create", "--label", "env=test", "fmt_pw", &path])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "fmt_web",
        "--replicas",
        "3",
        "--label",
        "tier=front",
        "--network",
        "fmtnet",
        "shoal/echo:1",
    ])?;
    cluster.shoal(&[
        "service",
        "create",
        "--name",
        "fmt_all",
        "--mode",
        "global",
        "shoal/echo:1",
    ])?;
    cluster.wait("fmt_web's 3 tasks and fmt_all's 3 running", WAIT, || {
        let running = cluster
            .shoal(&["service", "ls", "--format", "{{.Name}} {{.Replicas}}"])
            .ok()?;
        (running.contains("fmt_web 3/3") && running.contains("fmt_all 3/3")).then_some(())
    })?;

    // Listings: templates over Docker's field names, table templates with
    // Docker's headings, filters with Docker's keys.
    let names = cluster.shoal(&[
        "service",
        "ls",
        "--filter",
        "label=tier=front",
        "--format",
        "{{.Name}}",
    ])?;
    ensure!(lines(&names) == ["fmt_web"], "{names}");
    let table = cluster.shoal(&[
        "service",
        "ls",
        "--filter",
        "mode=global",
        "--format",
        r"table {{.Name}}\t{{.Mode}}",
    ])?;
    ensure!(
        lines(&table) == ["NAME      MODE", "fmt_all   global"],
        "{table}"
    );
    let managers = cluster.shoal(&["node", "ls", "--filter", "role=manager", "-q"])?;
    ensure!(lines(&managers).len() == 1, "{managers}");
    let self_row = cluster.shoal(&[
        "node",
        "ls",
        "--format",
        "{{.Hostname}} {{.Self}} {{.TLSStatus}}",
    ])?;
    ensure!(
        lines(&self_row).contains(&"n1 true Ready".to_owned()),
        "{self_row}"
    );
    let default = cluster.shoal(&["node", "ls"])?;
    ensure!(
        default
            .lines()
            .any(|l| l.contains(" * ") && l.contains("n1")),
        "no self mark:\n{default}"
    );

    // node ps: the tasks on one node, by hostname or `self`.
    let on_n2 = cluster.shoal(&[
        "node",
        "ps",
        "n2",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}}",
    ])?;
    ensure!(
        !on_n2.is_empty() && lines(&on_n2).iter().all(|n| n == "n2"),
        "{on_n2}"
    );
    let global_here = cluster.shoal(&[
        "node",
        "ps",
        "--filter",
        "name=fmt_all",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Name}} {{.Node}}",
    ])?;
    ensure!(
        lines(&global_here).len() == 1 && global_here.ends_with(" n1\n"),
        "{global_here}"
    );
    let ps = cluster.shoal(&[
        "service",
        "ps",
        "fmt_web",
        "--no-resolve",
        "--format",
        "{{.Name}}",
    ])?;
    ensure!(
        lines(&ps).iter().all(|n| !n.starts_with("fmt_web")),
        "--no-resolve kept names: {ps}"
    );

    // Inspect: templates over the inspect JSON, -f json.
    let labels = cluster.shoal(&[
        "service",
        "inspect",
        "-f",
        "{{.Spec.Name}} {{json .Spec.Labels}}",
        "fmt_web",
    ])?;
    ensure!(labels.trim() == r#"fmt_web {"tier":"front"}"#, "{labels}");
    let host = cluster.shoal(&[
        "node",
        "inspect",
        "--format",
        "{{.Description.Hostname}}",
        "self",
    ])?;
    ensure!(host.trim() == "n1", "{host}");
    let compact = cluster.shoal(&["network", "inspect", "-f", "json", "fmtnet"])?;
    ensure!(
        compact.starts_with("[{") && compact.lines().count() == 1,
        "{compact}"
    );
    let verbose = cluster.shoal(&[
        "network",
        "inspect",
        "-v",
        "-f",
        "{{len .Services.fmt_web.Tasks}}",
        "fmtnet",
    ])?;
    ensure!(verbose.trim() == "3", "{verbose}");
    let secret = cluster.shoal(&[
        "secret",
        "ls",
        "--filter",
        "label=env=test",
        "--format",
        "{{.Name}} {{.Labels}}",
    ])?;
    ensure!(secret.trim() == "fmt_pw env=test", "{secret}");
    let networks = cluster.shoal(&[
        "network",
        "ls",
        "--filter",
        "name=^fmt",
        "--filter",
        "dangling=false",
        "--format",
        "{{.Name}} {{.Scope}}",
    ])?;
    ensure!(networks.trim() == "fmtnet swarm", "{networks}");

    // Bad input: Docker's words.
    let err = cluster
        .shoal(&["node", "ls", "--filter", "colour=red"])
        .unwrap_err()
        .to_string();
    ensure!(err.contains("invalid filter 'colour'"), "{err}");
    let err = cluster
        .shoal(&["service", "ls", "--format", "{{.Nope}}"])
        .unwrap_err()
        .to_string();
    ensure!(
        err.contains("template parsing error") && err.contains("Nope"),
        "{err}"
    );
    let err = cluster
        .shoal(&["service", "inspect", "fmt_web", "nope"])
        .unwrap_err()
        .to_string();
    ensure!(err.contains("service nope not found"), "{err}");
    Ok(())
}

//! `service update`'s add/rm flags, on a spec that has one of everything.

use clap::Parser;
use shoal_api::pb::{
    ContainerSpec, DnsConfig, NetworkAttachmentConfig, Placement, TaskSpec, Ulimit,
};

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    lists: UpdateLists,
}

fn spec() -> ServiceSpec {
    ServiceSpec {
        labels: [("tier".to_owned(), "web".to_owned())].into(),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                args: vec!["old".into()],
                hosts: vec!["10.0.0.5 db db.local".into(), "10.0.0.6 db".into()],
                dns_config: Some(DnsConfig {
                    nameservers: vec!["192.0.2.53".into()],
                    search: vec!["a.test".into()],
                    options: vec!["ndots:2".into()],
                }),
                capability_add: vec!["CAP_NET_ADMIN".into()],
                capability_drop: vec!["CAP_MKNOD".into()],
                sysctls: [("net.core.somaxconn".to_owned(), "128".to_owned())].into(),
                ulimits: vec![Ulimit {
                    name: "nofile".into(),
                    soft: 1,
                    hard: 2,
                }],
                groups: vec!["audio".into()],
                mounts: vec![flags::parse_mount("type=tmpfs,target=/cache").unwrap()],
                ..Default::default()
            }),
            placement: Some(Placement {
                constraints: vec!["node.role==worker".into()],
                spread: vec!["node.labels.zone".into()],
                ..Default::default()
            }),
            networks: vec![NetworkAttachmentConfig {
                target: "net1".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ids(name: &str) -> Option<String> {
    match name {
        "front" | "net1" => Some("net1".into()),
        "back" | "net2" => Some("net2".into()),
        _ => None,
    }
}

fn update(argv: &[&str]) -> Result<ServiceSpec> {
    let mut all = vec!["shoal"];
    all.extend_from_slice(argv);
    let mut s = spec();
    Cli::try_parse_from(all)?.lists.apply(&mut s, &ids)?;
    Ok(s)
}

#[test]
fn adds_and_removes_edit_each_list() {
    assert_eq!(
        update(&[]).unwrap(),
        spec(),
        "nothing asked, nothing changed"
    );
    let s = update(&[
        "--args",
        "serve --port '8 0'",
        "--label-add",
        "tier=api",
        "--label-rm",
        "tier",
        "--label-add",
        "team=x",
        "--constraint-rm",
        "node.role==worker",
        "--constraint-add",
        "node.labels.ssd==true",
        "--placement-pref-rm",
        "spread=node.labels.zone",
        "--placement-pref-add",
        "spread=node.labels.rack",
        "--network-rm",
        "front",
        "--network-add",
        "name=back,alias=db",
        "--container-label-add",
        "a=b",
        "--mount-rm",
        "/cache",
        "--mount-add",
        "type=tmpfs,target=/scratch",
        "--dns-rm",
        "192.0.2.53",
        "--dns-add",
        "192.0.2.54",
        "--dns-search-add",
        "b.test",
        "--dns-option-rm",
        "ndots:2",
        "--dns-option-add",
        "timeout:1",
        "--host-rm",
        "db:10.0.0.6",
        "--host-add",
        "cache:10.0.0.7",
        "--sysctl-add",
        "net.core.somaxconn=1024",
        "--sysctl-add",
        "net.ipv4.ip_forward=1",
        "--ulimit-rm",
        "nofile",
        "--ulimit-add",
        "nproc=64:128",
        "--group-add",
        "video",
        "--group-rm",
        "audio",
        "--generic-resource-add",
        "gpu=1",
    ])
    .unwrap();
    // Removals first, then additions (Docker's order).
    assert_eq!(
        s.labels,
        [
            ("team".to_owned(), "x".to_owned()),
            ("tier".to_owned(), "api".to_owned())
        ]
        .into()
    );
    let task = s.task.unwrap();
    let p = task.placement.unwrap();
    assert_eq!(
        (p.constraints, p.spread),
        (
            vec!["node.labels.ssd==true".to_owned()],
            vec!["node.labels.rack".to_owned()]
        )
    );
    assert_eq!(task.networks.len(), 1);
    assert_eq!(
        (
            task.networks[0].target.as_str(),
            task.networks[0].aliases.as_slice()
        ),
        ("net2", &["db".to_owned()][..])
    );
    assert_eq!(
        task.resources.unwrap().generic_reservations,
        [engine::discrete("gpu", 1)]
    );
    let c = task.container.unwrap();
    assert_eq!(c.args, ["serve", "--port", "8 0"]);
    assert_eq!(c.labels["a"], "b");
    assert_eq!(c.mounts.len(), 1);
    assert_eq!(c.mounts[0].target, "/scratch");
    let dns = c.dns_config.unwrap();
    assert_eq!(dns.nameservers, ["192.0.2.54"]);
    assert_eq!(dns.search, ["a.test", "b.test"]);
    assert_eq!(dns.options, ["timeout:1"]);
    assert_eq!(c.hosts, ["10.0.0.5 db db.local", "10.0.0.7 cache"]);
    assert_eq!(c.sysctls.len(), 2);
    assert_eq!(c.sysctls["net.core.somaxconn"], "1024");
    assert_eq!(
        c.ulimits
            .iter()
            .map(engine::format_ulimit)
            .collect::<Vec<_>>(),
        ["nproc=64:128"]
    );
    assert_eq!(c.groups, ["video"]);
    // A host name alone leaves every entry.
    let s = update(&["--host-rm", "db"]).unwrap();
    assert_eq!(
        s.task.unwrap().container.unwrap().hosts,
        ["10.0.0.5 db.local"]
    );
}

#[test]
fn capabilities_follow_dockers_tri_state() {
    let caps = |argv: &[&str]| {
        let c = update(argv).unwrap().task.unwrap().container.unwrap();
        (c.capability_add, c.capability_drop)
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // Adding what is dropped un-drops it, and dropping what is added un-adds it.
    assert_eq!(
        caps(&["--cap-add", "mknod"]),
        (s(&["CAP_NET_ADMIN"]), s(&[]))
    );
    assert_eq!(
        caps(&["--cap-drop", "NET_ADMIN"]),
        (s(&[]), s(&["CAP_MKNOD"]))
    );
    assert_eq!(
        caps(&["--cap-add", "SYS_TIME"]),
        (s(&["CAP_NET_ADMIN", "CAP_SYS_TIME"]), s(&["CAP_MKNOD"]))
    );
    assert_eq!(
        caps(&["--cap-drop", "RESET", "--cap-drop", "chown"]),
        (s(&["CAP_NET_ADMIN"]), s(&["CAP_CHOWN"]))
    );
    assert_eq!(
        caps(&["--cap-drop", "ALL"]),
        (s(&["CAP_NET_ADMIN"]), s(&["ALL"]))
    );
    let err = update(&["--cap-add", "nope"]).unwrap_err().to_string();
    assert!(
        err.contains("--cap-add: \"nope\" is not a Linux capability"),
        "{err}"
    );
}

#[test]
fn removing_what_is_not_there_names_the_flag() {
    for (argv, expected) in [
        (
            &["--constraint-rm", "node.role==manager"][..],
            "--constraint-rm node.role==manager: the service has no such constraint",
        ),
        (
            &["--label-rm", "nope"],
            "--label-rm nope: the service has no such label",
        ),
        (
            &["--network-rm", "back"],
            "--network-rm back: the service is not attached to that network",
        ),
        (
            &["--network-add", "front"],
            "--network-add front: service is already attached to network front",
        ),
        (
            &["--mount-rm", "/nope"],
            "--mount-rm /nope: the service has no such mount",
        ),
        (
            &["--dns-rm", "192.0.2.1"],
            "--dns-rm 192.0.2.1: the service has no such DNS server",
        ),
        (
            &["--host-rm", "web"],
            "--host-rm web: the service has no such host mapping",
        ),
        (
            &["--sysctl-rm", "net.x"],
            "--sysctl-rm net.x: the service has no such sysctl",
        ),
        (
            &["--ulimit-rm", "nproc"],
            "--ulimit-rm nproc: the service has no such ulimit",
        ),
        (
            &["--group-rm", "video"],
            "--group-rm video: the service has no such group",
        ),
        (
            &["--generic-resource-rm", "gpu"],
            "--generic-resource-rm gpu: the service has no such generic resource",
        ),
        (
            &["--ulimit-add", "nofile=3:2"],
            "--ulimit-add: invalid ulimit nofile",
        ),
        (
            &["--sysctl-add", "kernel.panic=1"],
            "--sysctl-add: invalid sysctl kernel.panic",
        ),
        (&["--args", "'unterminated"], "invalid --args"),
    ] {
        let err = update(argv).unwrap_err().to_string();
        assert!(err.contains(expected), "{argv:?}: {err}");
    }
}

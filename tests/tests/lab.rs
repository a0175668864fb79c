//! The lab itself: hosts answer each other, containers can be plugged into a
//! node, `up` is idempotent and `down` leaves nothing behind.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::Result;
use shoal_tests::{NODES, container, lab, netns, require_images, topology};

/// A host "answers" when its kernel replies: an accepted connection or a
/// refusal (RST). A timeout means the packet went nowhere.
fn answers(from: &str, to: Ipv4Addr) -> Result<bool> {
    let addr = SocketAddr::from((to, 9));
    let outcome = netns::run_in(from, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })?;
    Ok(match outcome {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    })
}

#[test]
fn every_node_answers_the_client_and_each_other() -> Result<()> {
    let _lab = lab()?;
    let hosts = topology::hosts(NODES);
    for from in &hosts {
        for to in hosts.iter().filter(|h| *h != from) {
            assert!(
                answers(&from.netns, to.addr)?,
                "{} does not answer {}",
                to.name,
                from.name
            );
        }
    }
    Ok(())
}

#[test]
fn nothing_outside_the_lab_is_routed() -> Result<()> {
    let _lab = lab()?;
    for host in topology::hosts(NODES) {
        let routes = shoal_tests::cmd::stdout("ip", &["-n", &host.netns, "route", "show"])?;
        assert!(
            !routes.contains("default"),
            "{} has a default route: {routes}",
            host.name
        );
        for route in routes.lines() {
            assert!(
                route.starts_with("192.0.2.0/24"),
                "{}: route out of the lab: {route}",
                host.name
            );
        }
    }
    Ok(())
}

#[test]
fn a_container_plugged_into_a_node_is_reachable_from_it() -> Result<()> {
    let lab = lab()?;
    require_images()?;
    let n1 = lab.host("n1")?;
    for (version, last_octet) in [("1", 2u8), ("2", 6u8)] {
        let name = format!("shoal-test-echo-{version}");
        let echo = container::run_detached(&name, &format!("shoal/echo:{version}"), &[], &[])?;
        let host_side = Ipv4Addr::new(198, 19, 255, last_octet - 1);
        let container_side = Ipv4Addr::new(198, 19, 255, last_octet);
        container::plug_into_node(
            &echo,
            &n1,
            &format!("ct-echo{version}"),
            host_side,
            container_side,
        )?;

        let addr = SocketAddr::from((container_side, 80));
        let response = netns::run_in(&n1.netns, move || {
            shoal_testbins::http::get(addr, "echo", "/", Duration::from_secs(2))
        })??;
        container::remove(&echo)?;

        assert_eq!(response.status, 200);
        let body: serde_json::Value = serde_json::from_str(&response.body)?;
        assert_eq!(body["hostname"], name.as_str());
        assert_eq!(body["version"], version, "shoal/echo:{version} must say so");
        assert_eq!(
            body["client"]
                .as_str()
                .map(|c| c.starts_with(&format!("{host_side}:"))),
            Some(true)
        );
    }
    Ok(())
}

#[test]
fn up_is_idempotent() -> Result<()> {
    let lab = lab()?;
    let links = |ns: &str| shoal_tests::cmd::stdout("ip", &["-n", ns, "-br", "link"]);
    let before: Vec<String> = topology::hosts(NODES)
        .iter()
        .map(|h| links(&h.netns))
        .collect::<Result<_, _>>()?;
    let dnsmasq_before = lab.state().process("dnsmasq").map(|p| p.pid);
    let mut lines = Vec::new();
    lab.up(NODES, &mut |l| lines.push(l.to_owned()))?;
    let after: Vec<String> = topology::hosts(NODES)
        .iter()
        .map(|h| links(&h.netns))
        .collect::<Result<_, _>>()?;
    assert_eq!(before, after);
    assert_eq!(
        dnsmasq_before,
        lab.state().process("dnsmasq").map(|p| p.pid),
        "dnsmasq restarted"
    );
    assert!(
        lines.iter().all(|l| !l.starts_with("created")),
        "a second up created something: {lines:?}"
    );
    Ok(())
}

#[test]
fn down_leaves_namespaces_and_containers_as_they_were() -> Result<()> {
    let lab = lab()?;
    require_images()?;
    lab.down(&mut |_| {})?;
    let baseline = shoal_tests::host_snapshot()?;
    assert!(
        !shoal_tests::process_running("dnsmasq"),
        "dnsmasq outlived the lab"
    );

    // Build a lab with something of every kind in it: namespaces and links,
    // a process, a container, pinned eBPF objects.
    lab.up(NODES, &mut |_| {})?;
    let n2 = lab.host("n2")?;
    let echo = container::run_detached("shoal-test-down", "shoal/echo:1", &[], &[])?;
    container::plug_into_node(
        &echo,
        &n2,
        "ct-down",
        Ipv4Addr::new(198, 19, 254, 1),
        Ipv4Addr::new(198, 19, 254, 2),
    )?;
    let root = shoal_lab::Lab::bpffs_root(&n2);
    shoal_tests::run_in_host(
        &n2.netns,
        "shoal-agent",
        &[
            "--bpffs",
            &root.display().to_string(),
            "datapath",
            "attach",
            "eth0",
        ],
    )?;
    assert!(root.exists());

    lab.down(&mut |_| {})?;
    assert_eq!(shoal_tests::host_snapshot()?, baseline);
    assert!(!shoal_tests::process_running("dnsmasq"));
    assert!(!std::path::Path::new(shoal_lab::BPFFS_ROOT).exists());
    assert!(!lab.state().path().exists());
    let root_links = shoal_tests::cmd::stdout("ip", &["-br", "link"])?;
    assert!(
        !root_links.contains("wan-"),
        "underlay ports leaked into the root namespace: {root_links}"
    );

    lab.up(NODES, &mut |_| {})?; // leave the lab up for the other tests
    Ok(())
}

#[test]
fn the_toolbox_image_talks_to_a_node() -> Result<()> {
    let lab = lab()?;
    require_images()?;
    let n2 = lab.host("n2")?;
    let node_side = Ipv4Addr::new(198, 19, 253, 1);
    let echo_addr = SocketAddr::from((node_side, 9998));
    let toolbox = container::run_detached("shoal-test-toolbox", "shoal/toolbox:latest", &[], &[])?;
    container::plug_into_node(
        &toolbox,
        &n2,
        "ct-toolbox",
        node_side,
        Ipv4Addr::new(198, 19, 253, 2),
    )?;
    let _echo = shoal_tests::UdpEcho::start(&n2.netns, echo_addr)?;
    let reply = shoal_tests::cmd::stdout(
        "docker",
        &[
            "exec",
            &toolbox.id,
            "/toolbox",
            "udp-send",
            &echo_addr.to_string(),
            "ping-from-toolbox",
        ],
    );
    container::remove(&toolbox)?;
    assert_eq!(reply?.trim(), "ping-from-toolbox");
    Ok(())
}

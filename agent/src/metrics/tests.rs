use super::*;

fn value_of(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn stats(connections: u64, packets: u64, bytes: u64) -> ServiceStats {
    ServiceStats {
        connections,
        packets,
        bytes,
        drops: connections * 2,
    }
}

#[test]
fn ports_and_vips_get_their_own_labels() {
    let reading = Reading {
        mesh: MeshReading {
            slots: vec![
                ("svc1:8080/6".into(), stats(3, 30, 3000)),
                ("svc1:8053/17".into(), stats(1, 2, 100)),
                ("svc2/net9".into(), stats(5, 50, 5000)),
            ],
            occupancy: vec![("MESH_PORTS", 2), ("MESH_VIPS", 1)],
        },
        drops: Some(vec![("vxlan-source", 4), ("container-to-node", 0)]),
        dns_answers: vec![("NOERROR", 7), ("NXDOMAIN", 2)],
        dns_refused: 1,
        dns_shed: 0,
        dns_ebpf: Some(crate::datapath::dns::DnsCounts {
            answered: 40,
            passed: 3,
        }),
    };
    let text = render(&reading).expect("encodes");
    let port = r#"{service="svc1",port="8080",protocol="tcp"}"#;
    assert_eq!(
        value_of(&text, &format!("shoal_mesh_connections_total{port}")),
        Some(3.0)
    );
    assert_eq!(
        value_of(&text, &format!("shoal_mesh_packets_total{port}")),
        Some(30.0)
    );
    assert_eq!(
        value_of(&text, &format!("shoal_mesh_bytes_total{port}")),
        Some(3000.0)
    );
    assert_eq!(
        value_of(&text, &format!("shoal_mesh_drops_total{port}")),
        Some(6.0)
    );
    assert_eq!(
        value_of(
            &text,
            r#"shoal_mesh_connections_total{service="svc1",port="8053",protocol="udp"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &text,
            r#"shoal_vip_connections_total{service="svc2",network="net9"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        value_of(&text, r#"shoal_datapath_map_entries{map="MESH_PORTS"}"#),
        Some(2.0)
    );
    assert_eq!(
        value_of(
            &text,
            r#"shoal_datapath_drops_total{reason="vxlan-source"}"#
        ),
        Some(4.0)
    );
    assert_eq!(
        value_of(&text, r#"shoal_dns_answers_total{rcode="NXDOMAIN"}"#),
        Some(2.0)
    );
    assert_eq!(value_of(&text, "shoal_dns_refused_total"), Some(1.0));
    assert_eq!(value_of(&text, "shoal_dns_ebpf_answers_total"), Some(40.0));
    assert_eq!(value_of(&text, "shoal_dns_ebpf_passed_total"), Some(3.0));
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn task_reports_count_starts_and_failures() {
    let before = |text: &str, name: &str| value_of(text, name).unwrap_or(0.0);
    let text = render(&Reading::default()).expect("encodes");
    let (starts, failures) = (
        before(&text, "shoal_task_starts_total"),
        before(&text, "shoal_task_failures_total"),
    );
    task_reported(TaskState::Running);
    task_reported(TaskState::Rejected);
    task_reported(TaskState::Failed);
    task_reported(TaskState::Shutdown);
    let text = render(&Reading::default()).expect("encodes");
    assert_eq!(
        value_of(&text, "shoal_task_starts_total"),
        Some(starts + 1.0)
    );
    assert_eq!(
        value_of(&text, "shoal_task_failures_total"),
        Some(failures + 2.0)
    );
    assert!(
        value_of(&text, r#"shoal_task_reports_total{state="shutdown"}"#).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // No datapath yet: no drop series rather than zeros that would lie.
    assert!(!text.contains("shoal_datapath_drops"), "{text}");
}

#[test]
fn malformed_slot_keys_are_skipped() {
    assert!(slot("no-separator").is_none());
    assert!(slot("svc:8080").is_none());
    assert!(matches!(slot("svc/net"), Some(Slot::Vip(_))));
}

#[test]
fn removed_connection_entries_are_counted() {
    let text = render(&Reading::default()).expect("encodes");
    let before = value_of(&text, "shoal_mesh_closed_entries_removed_total").unwrap_or(0.0);
    super::connections_removed(3);
    let text = render(&Reading::default()).expect("encodes");
    assert_eq!(
        value_of(&text, "shoal_mesh_closed_entries_removed_total"),
        Some(before + 3.0)
    );
}

//! `service ls` (and `stack services`): Docker's service rows and filters.

use anyhow::{Result, bail};
use serde_json::json;
use shoal_api::pb::{ServiceMode, ServiceSummary};

use shoal_api::pb::{PortConfig, PublishMode, Service};

use super::{image, service_id, service_name};
use crate::{
    commands::tasks::natural_cmp,
    output::{Columns, Filters, Format, Listing, short},
};

pub static COLUMNS: Columns = Columns {
    table: "table {{.ID}}\t{{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Image}}\t{{.Ports}}",
    headers: &[
        ("ID", "ID"),
        ("Name", "NAME"),
        ("Mode", "MODE"),
        ("Replicas", "REPLICAS"),
        ("Image", "IMAGE"),
        ("Ports", "PORTS"),
    ],
};

/// The keys Docker's `service ls` takes (`runtime` only matches `container`).
pub const FILTER_KEYS: &[&str] = &["id", "label", "mode", "name", "runtime"];

/// `--filter` of `service ls`; the mode must be one Docker knows.
pub fn service_filters(flags: &[String]) -> Result<Filters> {
    let filters = Filters::parse(flags, FILTER_KEYS)?;
    for mode in filters.get("mode") {
        if !["replicated", "global", "replicated-job", "global-job"].contains(&mode.as_str()) {
            bail!("Invalid mode filter: '{mode}'");
        }
    }
    Ok(filters)
}

/// The word `--filter mode=` matches (Docker's: `replicated-job` for jobs).
fn mode_word(mode: ServiceMode) -> &'static str {
    mode.word()
}

/// The MODE column (Docker words jobs "replicated job").
fn mode_column(mode: ServiceMode) -> String {
    super::job::mode_column(mode).to_owned()
}

/// The REPLICAS column: running/desired, with the per-node cap if any,
/// and for jobs Docker's `(completed/total completed)`.
fn replicas_column(summary: &ServiceSummary) -> String {
    let spec = summary
        .service
        .as_ref()
        .and_then(|s| s.spec.clone())
        .unwrap_or_default();
    let max = spec
        .task
        .as_ref()
        .and_then(|t| t.placement.as_ref())
        .map_or(0, |p| p.max_replicas_per_node);
    if spec.mode() == ServiceMode::Replicated && max > 0 {
        format!(
            "{}/{} (max {max} per node)",
            summary.running, summary.desired
        )
    } else {
        super::job::replicas_column(summary)
    }
}

fn passes(filters: &Filters, summary: &ServiceSummary) -> bool {
    let Some(s) = &summary.service else {
        return false;
    };
    let spec = s.spec.clone().unwrap_or_default();
    filters.prefix("id", service_id(s))
        && filters.prefix("name", service_name(s))
        && filters.labels("label", |k| spec.labels.get(k).map(String::as_str))
        && filters.exact("mode", mode_word(spec.mode()))
        && filters.exact("runtime", "container")
}

/// One row per service that passes `filters`, by name (natural order).
pub(crate) fn service_listing(all: &[ServiceSummary], filters: &Filters) -> Listing {
    let mut all: Vec<&ServiceSummary> = all.iter().filter(|s| passes(filters, s)).collect();
    let name = |s: &ServiceSummary| {
        s.service
            .as_ref()
            .map(service_name)
            .unwrap_or("")
            .to_owned()
    };
    all.sort_by(|a, b| natural_cmp(&name(a), &name(b)));
    let mut listing = Listing::new(&COLUMNS);
    for summary in all {
        let Some(s) = &summary.service else { continue };
        let spec = s.spec.clone().unwrap_or_default();
        listing.row(json!({
            "ID": short(service_id(s), false),
            "Name": service_name(s),
            "Mode": mode_column(spec.mode()),
            "Replicas": replicas_column(summary),
            "Image": image(s).split('@').next().unwrap_or_default(),
            "Ports": ports_text(s),
        }));
    }
    listing
}

/// Docker's PORTS column: ingress ports only, sorted by protocol then
/// published port, runs of consecutive ports as ranges (`*:80-81->80-81/tcp`;
/// `80->80, 81->80` as `*:80-81->80`).
fn ports_text(s: &Service) -> String {
    let mut ports: Vec<&PortConfig> = s
        .spec
        .as_ref()
        .and_then(|spec| spec.endpoint.as_ref())
        .map(|e| {
            e.ports
                .iter()
                .filter(|p| p.publish_mode() == PublishMode::Ingress)
                .collect()
        })
        .unwrap_or_default();
    ports.sort_by(|a, b| {
        a.protocol
            .cmp(&b.protocol)
            .then(a.published_port.cmp(&b.published_port))
    });
    struct Range<'a> {
        protocol: &'a str,
        published: (u32, u32),
        target: (u32, u32),
    }
    let show = |r: &Range| {
        let span = |(start, end): (u32, u32)| {
            if end > start {
                format!("{start}-{end}")
            } else {
                start.to_string()
            }
        };
        format!("*:{}->{}/{}", span(r.published), span(r.target), r.protocol)
    };
    let mut shown = Vec::new();
    let mut current: Option<Range> = None;
    for p in ports {
        if let Some(r) = current.as_mut() {
            let is_range = r.target.1 != r.target.0;
            let overlaps = p.target_port <= r.target.1;
            let next = p.protocol == r.protocol
                && p.published_port.wrapping_sub(r.published.1) <= 1
                && p.target_port.wrapping_sub(r.target.1) <= 1
                && !(is_range && overlaps);
            if next {
                r.published.1 = p.published_port;
                r.target.1 = p.target_port;
                continue;
            }
            shown.push(show(r));
        }
        current = Some(Range {
            protocol: &p.protocol,
            published: (p.published_port, p.published_port),
            target: (p.target_port, p.target_port),
        });
    }
    if let Some(r) = &current {
        shown.push(show(r));
    }
    shown.join(", ")
}

/// `service ls` (and `stack services`) as printed.
pub(crate) fn print_service_list(
    all: &[ServiceSummary],
    filters: &Filters,
    quiet: bool,
    format: &Format,
) -> Result<()> {
    service_listing(all, filters).print(format, quiet)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use shoal_api::pb::{EndpointSpec, Meta, Placement, ServiceSpec, TaskSpec};

    use super::*;

    fn port(published: u32, target: u32, protocol: &str, mode: PublishMode) -> PortConfig {
        PortConfig {
            protocol: protocol.into(),
            published_port: published,
            target_port: target,
            publish_mode: mode as i32,
            ..Default::default()
        }
    }

    fn summary(id: &str, name: &str, mode: ServiceMode, ports: Vec<PortConfig>) -> ServiceSummary {
        ServiceSummary {
            service: Some(Service {
                meta: Some(Meta {
                    id: id.into(),
                    ..Default::default()
                }),
                spec: Some(ServiceSpec {
                    name: name.into(),
                    mode: mode as i32,
                    labels: [("tier".to_owned(), name.to_owned())].into(),
                    endpoint: Some(EndpointSpec {
                        ports,
                        ..Default::default()
                    }),
                    task: Some(TaskSpec {
                        placement: Some(Placement {
                            max_replicas_per_node: if name == "web" { 2 } else { 0 },
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            running: 1,
            desired: 3,
            ..Default::default()
        }
    }

    fn all() -> Vec<ServiceSummary> {
        vec![
            summary(
                "w0000000000000000000000001",
                "web",
                ServiceMode::Replicated,
                vec![
                    port(81, 81, "tcp", PublishMode::Ingress),
                    port(80, 80, "tcp", PublishMode::Ingress),
                    port(82, 80, "tcp", PublishMode::Ingress),
                    port(53, 53, "udp", PublishMode::Ingress),
                    port(9000, 9000, "tcp", PublishMode::Host),
                ],
            ),
            summary(
                "d0000000000000000000000002",
                "db10",
                ServiceMode::Global,
                vec![],
            ),
            summary(
                "d0000000000000000000000003",
                "db9",
                ServiceMode::Replicated,
                vec![],
            ),
        ]
    }

    fn render(flags: &[&str], format: &str) -> String {
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        service_listing(&all(), &service_filters(&flags).unwrap())
            .render(&format.parse().unwrap(), false)
            .unwrap()
    }

    #[test]
    fn rows_are_dockers_with_port_ranges_and_max_per_node() {
        let table = render(&[], "table");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "ID             NAME      MODE         REPLICAS               IMAGE     PORTS"
        );
        assert_eq!(
            lines[1],
            "d00000000000   db9       replicated   1/3                              "
        );
        assert_eq!(
            lines[2],
            "d00000000000   db10      global       1/3                              "
        );
        assert_eq!(
            lines[3],
            "w00000000000   web       replicated   1/3 (max 2 per node)             *:80-81->80-81/tcp, *:82->80/tcp, *:53->53/udp"
        );
    }

    #[test]
    fn filters_take_dockers_keys() {
        assert_eq!(render(&["mode=global"], "{{.Name}}"), "db10\n");
        assert_eq!(render(&["name=db"], "{{.Name}}"), "db9\ndb10\n");
        assert_eq!(render(&["name=web", "name=db9"], "{{.Name}}"), "db9\nweb\n");
        assert_eq!(render(&["id=w", "label=tier=web"], "{{.Name}}"), "web\n");
        assert_eq!(render(&["label=tier=db9", "mode=global"], "{{.Name}}"), "");
        let refuse = |flag: &str| service_filters(&[flag.to_owned()]).unwrap_err().to_string();
        assert_eq!(refuse("mode=batch"), "Invalid mode filter: 'batch'");
        assert_eq!(refuse("node=n1"), "invalid filter 'node'");
    }
}

//! `service ls` (and `stack services`): Docker's service rows and filters.

use anyhow::{Result, bail};
use serde_json::json;
use shoal_api::pb::{ServiceMode, ServiceSummary};

use super::{image, ports, service_id, service_name};
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
        let max = spec
            .task
            .as_ref()
            .and_then(|t| t.placement.as_ref())
            .map_or(0, |p| p.max_replicas_per_node);
        let replicas = if spec.mode() == ServiceMode::Replicated && max > 0 {
            format!(
                "{}/{} (max {max} per node)",
                summary.running, summary.desired
            )
        } else {
            format!("{}/{}", summary.running, summary.desired)
        };
        listing.row(json!({
            "ID": short(service_id(s), false),
            "Name": service_name(s),
            // Docker's column words jobs "replicated job".
            "Mode": mode_word(spec.mode()).replace('-', " "),
            "Replicas": replicas,
            "Image": image(s).split('@').next().unwrap_or_default(),
            "Ports": ports(s),
        }));
    }
    listing
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

//! One module per command group, as `docker` has them.

pub mod cert;
pub mod cluster;
pub mod events;
mod job_progress;
pub mod network;
pub mod network_list;
pub mod node;
pub mod objects;
pub mod progress;
pub mod service;
pub use shoal_cli::commands::service_flags;
pub mod service_update;
pub mod stack;
pub mod swarm;
pub mod tasks;
pub mod wait;

use anyhow::{Result, bail};

/// Finds one object by full id, name, or unique id prefix, as Docker does.
pub fn resolve<'a, T>(
    kind: &str,
    query: &str,
    items: &'a [T],
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> &str,
) -> Result<&'a T> {
    if let Some(found) = items.iter().find(|t| id(t) == query) {
        return Ok(found);
    }
    let by_name: Vec<&T> = items.iter().filter(|t| name(t) == query).collect();
    if by_name.len() == 1 {
        return Ok(by_name[0]);
    }
    if by_name.len() > 1 {
        bail!(
            "{kind} {query} is ambiguous ({} matches by name); use its ID",
            by_name.len()
        );
    }
    let by_prefix: Vec<&T> = items.iter().filter(|t| id(t).starts_with(query)).collect();
    match by_prefix.len() {
        1 => Ok(by_prefix[0]),
        0 => bail!("{kind} {query} not found"),
        n => bail!("{kind} {query} is ambiguous ({n} matches by ID prefix)"),
    }
}

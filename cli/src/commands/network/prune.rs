//! `shoal network prune`: every network nothing uses goes (not ingress),
//! as `docker network prune` does it, with its filters (`until`, `label`,
//! `label!`) and its confirmation.

use std::io::{BufRead, Write};

use anyhow::{Context, Result, bail};
use clap::Args;
use shoal_api::pb::{IdRequest, Network};

use crate::{
    client::{Client, status_error},
    timestamp,
};

#[derive(Args)]
pub struct PruneArgs {
    /// Provide filter values (e.g. "until=<timestamp>", "label=key=value", "label!=key").
    #[arg(long = "filter", value_name = "filter")]
    filter: Vec<String>,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
}

/// One `label=`/`label!=` filter: a key, and maybe the value it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelFilter {
    key: String,
    value: Option<String>,
}

impl LabelFilter {
    fn parse(text: &str) -> Self {
        match text.split_once('=') {
            Some((key, value)) => Self {
                key: key.to_owned(),
                value: Some(value.to_owned()),
            },
            None => Self {
                key: text.to_owned(),
                value: None,
            },
        }
    }

    fn matches(&self, network: &Network) -> bool {
        let labels = network.spec.as_ref().map(|s| &s.labels);
        match (labels.and_then(|l| l.get(&self.key)), &self.value) {
            (Some(have), Some(want)) => have == want,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The parsed `--filter`s.
#[derive(Debug, Default)]
struct Filters {
    /// Unix ns: only networks created before.
    until: Option<i64>,
    labels: Vec<LabelFilter>,
    not_labels: Vec<LabelFilter>,
}

impl Filters {
    fn parse(filters: &[String], now: chrono::DateTime<chrono::Local>) -> Result<Self> {
        let mut out = Self::default();
        for filter in filters {
            let (key, value) = filter
                .split_once('=')
                .with_context(|| format!("bad format of filter (expected name=value): {filter}"))?;
            match key {
                "until" => {
                    if out.until.is_some() {
                        bail!("more than one until filter specified");
                    }
                    out.until = Some(timestamp::since_ns(value, now)?);
                }
                "label" => out.labels.push(LabelFilter::parse(value)),
                // `label!=k` splits at its first `=` as `label!` and `k`.
                "label!" => out.not_labels.push(LabelFilter::parse(value)),
                other => bail!("invalid filter '{other}'"),
            }
        }
        Ok(out)
    }

    /// Whether a network is one the filters let go.
    fn selects(&self, network: &Network) -> bool {
        let created_ns = network
            .meta
            .as_ref()
            .map_or(0, |m| m.created_at.saturating_mul(1_000_000));
        self.until.is_none_or(|until| created_ns < until)
            && self.labels.iter().all(|l| l.matches(network))
            && !self.not_labels.iter().any(|l| l.matches(network))
    }
}

fn confirm() -> Result<bool> {
    print!(
        "WARNING! This will remove all custom networks not used by at least one container.\n\
         Are you sure you want to continue? [y/N] "
    );
    std::io::stdout().flush()?;
    // Read from a pipe too, as Docker does.
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

pub async fn run(client: &mut Client, networks: Vec<Network>, args: PruneArgs) -> Result<()> {
    let filters = Filters::parse(&args.filter, chrono::Local::now())?;
    if !args.force && !confirm()? {
        return Ok(());
    }
    let mut deleted = Vec::new();
    for network in networks.iter().filter(|n| filters.selects(n)) {
        let spec = network.spec.clone().unwrap_or_default();
        if spec.ingress {
            continue;
        }
        let id = network
            .meta
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        match client.remove_network(IdRequest { id }).await {
            Ok(_) => deleted.push(spec.name),
            // In use (by a service, a task, a network made from it): kept.
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {}
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(status_error(status)),
        }
    }
    if !deleted.is_empty() {
        println!("Deleted Networks:");
        for name in deleted {
            println!("{name}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use shoal_api::pb::{Meta, NetworkSpec};

    use super::*;

    fn network(created_s: i64, labels: &[(&str, &str)]) -> Network {
        Network {
            meta: Some(Meta {
                created_at: created_s * 1000,
                ..Default::default()
            }),
            spec: Some(NetworkSpec {
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn filters(args: &[&str]) -> Result<Filters> {
        let now = chrono::Local.timestamp_opt(1_700_000_000, 0).unwrap();
        Filters::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), now)
    }

    #[test]
    fn filters_select_as_dockers_do() {
        let old = network(1_699_990_000, &[("env", "test")]);
        let new = network(1_699_999_990, &[("env", "prod"), ("keep", "")]);
        let f = filters(&["until=1h"]).unwrap();
        assert!(f.selects(&old) && !f.selects(&new));
        let f = filters(&["label=env=prod"]).unwrap();
        assert!(!f.selects(&old) && f.selects(&new));
        let f = filters(&["label=env"]).unwrap();
        assert!(f.selects(&old) && f.selects(&new));
        let f = filters(&["label!=keep"]).unwrap();
        assert!(f.selects(&old) && !f.selects(&new));
        let f = filters(&["label!=env=test"]).unwrap();
        assert!(!f.selects(&old) && f.selects(&new));
        assert!(filters(&[]).unwrap().selects(&old));
    }

    #[test]
    fn bad_filters_are_named() {
        for (args, why) in [
            (vec!["driver=overlay"], "invalid filter 'driver'"),
            (vec!["until"], "bad format of filter"),
            (vec!["until=1h", "until=2h"], "more than one until"),
            (vec!["until=yesterday"], "yesterday"),
        ] {
            let err = filters(&args).unwrap_err().to_string();
            assert!(err.contains(why), "{args:?}: {err}");
        }
    }
}

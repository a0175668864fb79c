//! `--lb` and `--endpoint-affinity` (service create and update): how the
//! routing mesh and the VIP pick a task for each new connection. Shared
//! with compose (`x-shoal-lb`, `x-shoal-affinity`).

use anyhow::{Result, bail};
use clap::Args;
use shoal_api::pb::{EndpointAffinity, EndpointSpec, ServiceSpec};

use crate::commands::service_flags as flags;

#[derive(Args, Default, Clone)]
pub struct LbFlags {
    /// How a task is picked for each new connection: round-robin, or
    /// maglev (a flow reaches the same task from every node; when one of N
    /// tasks goes, about 1/N of the others' flows move).
    #[arg(long, value_parser = ["round-robin", "maglev"])]
    pub lb: Option<String>,
    /// Session affinity: client-ip[:TIMEOUT] (same task for a client from
    /// every node while it comes back within TIMEOUT, default 3h), or none.
    #[arg(long, value_name = "client-ip[:TIMEOUT]")]
    pub endpoint_affinity: Option<String>,
}

impl LbFlags {
    /// Sets what was given on `spec`.
    pub fn apply(&self, spec: &mut ServiceSpec) -> Result<()> {
        if let Some(lb) = &self.lb {
            spec.endpoint.get_or_insert_with(Default::default).lb = lb.clone();
        }
        if let Some(text) = &self.endpoint_affinity {
            let affinity = parse_affinity(text)
                .map_err(|e| anyhow::anyhow!("invalid --endpoint-affinity {text:?}: {e:#}"))?;
            spec.endpoint.get_or_insert_with(Default::default).affinity = affinity;
        }
        Ok(())
    }
}

/// `client-ip`, `client-ip:TIMEOUT` (Go duration syntax: `90s`, `3h`,
/// `1h30m`), or `none` (off).
pub fn parse_affinity(text: &str) -> Result<Option<EndpointAffinity>> {
    let (mode, timeout) = match text.trim().split_once(':') {
        Some((mode, timeout)) => (mode, Some(timeout)),
        None => (text.trim(), None),
    };
    match mode {
        "none" if timeout.is_none() => Ok(None),
        "client-ip" => {
            let timeout_ms = match timeout {
                Some(t) => flags::duration_ms(t)?,
                None => 0,
            };
            if timeout.is_some() && timeout_ms < 1000 {
                bail!("the timeout must be at least 1s");
            }
            Ok(Some(EndpointAffinity {
                mode: mode.to_owned(),
                timeout_ms,
            }))
        }
        _ => bail!("expected client-ip, client-ip:TIMEOUT (e.g. client-ip:30m) or none"),
    }
}

/// What an unset timeout means (the manager's default, Kubernetes'): 3 h.
const DEFAULT_AFFINITY_TIMEOUT_MS: i64 = 3 * 3600 * 1000;

fn affinity_timeout_ms(affinity: &EndpointAffinity) -> i64 {
    if affinity.timeout_ms > 0 {
        affinity.timeout_ms
    } else {
        DEFAULT_AFFINITY_TIMEOUT_MS
    }
}

/// `service inspect`'s JSON: `"LB"` and `"Affinity"` (durations in
/// nanoseconds, as Docker prints them) beside `Mode` and `Ports`, only
/// when set, so that a default service prints exactly what Docker does.
pub fn add_to_json(spec: &mut serde_json::Value, endpoint: &EndpointSpec) {
    let Some(spec) = spec.as_object_mut() else {
        return;
    };
    if !endpoint.lb.is_empty() {
        spec.insert("LB".into(), endpoint.lb.clone().into());
    }
    if let Some(affinity) = &endpoint.affinity {
        spec.insert(
            "Affinity".into(),
            serde_json::json!({
                "Mode": affinity.mode,
                "Timeout": affinity_timeout_ms(affinity) * 1_000_000,
            }),
        );
    }
}

/// `service inspect --pretty`: the lines under `Endpoint Mode`.
pub fn print(endpoint: &EndpointSpec, human_ms: fn(i64) -> String) {
    if !endpoint.lb.is_empty() {
        println!("LB:\t\t{}", endpoint.lb);
    }
    if let Some(affinity) = &endpoint.affinity {
        println!(
            "Affinity:\t{} (timeout {})",
            affinity.mode,
            human_ms(affinity_timeout_ms(affinity))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_takes_a_mode_and_an_optional_timeout() {
        let a = parse_affinity("client-ip").unwrap().unwrap();
        assert_eq!((a.mode.as_str(), a.timeout_ms), ("client-ip", 0));
        let a = parse_affinity("client-ip:1h30m").unwrap().unwrap();
        assert_eq!(a.timeout_ms, 5_400_000);
        assert!(parse_affinity("none").unwrap().is_none());
    }

    #[test]
    fn bad_affinity_names_the_problem() {
        let e = parse_affinity("cookie").unwrap_err().to_string();
        assert!(e.contains("expected client-ip"), "{e}");
        let e = format!("{:#}", parse_affinity("client-ip:soon").unwrap_err());
        assert!(e.contains("invalid duration"), "{e}");
        let e = parse_affinity("client-ip:10ms").unwrap_err().to_string();
        assert!(e.contains("at least 1s"), "{e}");
    }

    #[test]
    fn flags_set_the_endpoint_spec() {
        let mut spec = ServiceSpec::default();
        LbFlags {
            lb: Some("maglev".into()),
            endpoint_affinity: Some("client-ip:3s".into()),
        }
        .apply(&mut spec)
        .unwrap();
        let endpoint = spec.endpoint.unwrap();
        assert_eq!(endpoint.lb, "maglev");
        assert_eq!(endpoint.affinity.as_ref().unwrap().timeout_ms, 3000);
        let mut json = serde_json::json!({ "Mode": "vip" });
        add_to_json(&mut json, &endpoint);
        assert_eq!(json["LB"], "maglev");
        assert_eq!(json["Affinity"]["Timeout"], 3_000_000_000i64);
    }

    #[test]
    fn a_default_endpoint_prints_as_dockers() {
        let mut json = serde_json::json!({ "Mode": "vip", "Ports": [] });
        add_to_json(&mut json, &EndpointSpec::default());
        assert_eq!(json, serde_json::json!({ "Mode": "vip", "Ports": [] }));
    }
}

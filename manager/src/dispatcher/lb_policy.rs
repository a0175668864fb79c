//! Each service's `--lb` and `--endpoint-affinity`, as every node's data
//! plane needs them (`AssignmentSet.lb_policies`): only the services that
//! ask for more than round-robin, so a cluster that asks for nothing
//! pushes nothing new.

use std::collections::BTreeMap;

use shoal_api::pb::{EndpointSpec, LbPolicy};

use crate::store::State;

/// `--lb maglev`.
pub const LB_MAGLEV: &str = "maglev";
/// `--endpoint-affinity client-ip`.
pub const AFFINITY_CLIENT_IP: &str = "client-ip";
/// How long a client keeps its task when the service names no timeout:
/// Kubernetes' ClientIP affinity default, 3 h.
pub const DEFAULT_AFFINITY_TIMEOUT_MS: i64 = 3 * 3600 * 1000;

/// The data plane's policy for one endpoint spec; `None`: round-robin.
pub fn policy(endpoint: &EndpointSpec) -> Option<LbPolicy> {
    let maglev = endpoint.lb == LB_MAGLEV;
    let affinity_timeout_s = endpoint
        .affinity
        .as_ref()
        .filter(|a| a.mode == AFFINITY_CLIENT_IP)
        .map(|a| {
            let ms = if a.timeout_ms > 0 {
                a.timeout_ms
            } else {
                DEFAULT_AFFINITY_TIMEOUT_MS
            };
            // Whole seconds, at least one (validation keeps it in range).
            u32::try_from((ms / 1000).max(1)).unwrap_or(u32::MAX)
        })
        .unwrap_or(0);
    (maglev || affinity_timeout_s > 0).then_some(LbPolicy {
        maglev,
        affinity_timeout_s,
    })
}

/// Every service's policy that is not round-robin, by service id.
pub fn lb_policies(state: &State) -> BTreeMap<String, LbPolicy> {
    state
        .services
        .iter()
        .filter_map(|(id, service)| {
            let endpoint = service.spec.as_ref()?.endpoint.as_ref()?;
            Some((id.clone(), policy(endpoint)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::pb::EndpointAffinity;

    #[test]
    fn round_robin_needs_no_policy() {
        assert_eq!(policy(&EndpointSpec::default()), None);
        let spec = EndpointSpec {
            lb: "round-robin".into(),
            ..Default::default()
        };
        assert_eq!(policy(&spec), None);
    }

    #[test]
    fn maglev_and_affinity_reach_the_data_plane() {
        let spec = EndpointSpec {
            lb: "maglev".into(),
            ..Default::default()
        };
        assert_eq!(
            policy(&spec),
            Some(LbPolicy {
                maglev: true,
                affinity_timeout_s: 0
            })
        );
        let spec = EndpointSpec {
            affinity: Some(EndpointAffinity {
                mode: "client-ip".into(),
                timeout_ms: 0,
            }),
            ..Default::default()
        };
        assert_eq!(policy(&spec).map(|p| p.affinity_timeout_s), Some(10_800));
        let spec = EndpointSpec {
            affinity: Some(EndpointAffinity {
                mode: "client-ip".into(),
                timeout_ms: 3_000,
            }),
            ..Default::default()
        };
        assert_eq!(policy(&spec).map(|p| p.affinity_timeout_s), Some(3));
    }
}

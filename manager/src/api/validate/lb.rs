//! `--lb` and `--endpoint-affinity`: how the mesh picks a task for each
//! new connection. Both act on the VIP and on ports published in ingress
//! mode, so a dnsrr service (no VIP, host-mode ports only) cannot ask.

use shoal_api::pb::EndpointSpec;

use super::{Check, invalid};

/// Kubernetes' bounds for ClientIP affinity: up to one day.
const MAX_AFFINITY_TIMEOUT_MS: i64 = 86_400_000;

pub fn check(endpoint: &EndpointSpec) -> Check {
    if !matches!(endpoint.lb.as_str(), "" | "round-robin" | "maglev") {
        return invalid!(
            "invalid lb {:?}: expected round-robin or maglev",
            endpoint.lb
        );
    }
    let asks = endpoint.lb == "maglev" || endpoint.affinity.is_some();
    if asks && endpoint.mode == "dnsrr" {
        return invalid!(
            "--lb maglev and --endpoint-affinity need endpoint mode vip: with dnsrr clients pick a task themselves"
        );
    }
    if let Some(affinity) = &endpoint.affinity {
        if affinity.mode != "client-ip" {
            return invalid!(
                "invalid endpoint affinity {:?}: expected client-ip",
                affinity.mode
            );
        }
        if affinity.timeout_ms != 0
            && !(1000..=MAX_AFFINITY_TIMEOUT_MS).contains(&affinity.timeout_ms)
        {
            return invalid!(
                "invalid endpoint affinity timeout {}ms: expected 1s to 24h",
                affinity.timeout_ms
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::pb::EndpointAffinity;

    fn endpoint(mode: &str, lb: &str, affinity: Option<(&str, i64)>) -> EndpointSpec {
        EndpointSpec {
            mode: mode.into(),
            lb: lb.into(),
            affinity: affinity.map(|(mode, timeout_ms)| EndpointAffinity {
                mode: mode.into(),
                timeout_ms,
            }),
            ..Default::default()
        }
    }

    fn refused(e: &EndpointSpec) -> String {
        check(e).expect_err("accepted").0
    }

    #[test]
    fn accepts_what_the_data_plane_does() {
        for e in [
            endpoint("", "", None),
            endpoint("vip", "round-robin", None),
            endpoint("vip", "maglev", Some(("client-ip", 0))),
            endpoint("", "", Some(("client-ip", 3_000))),
            endpoint("", "", Some(("client-ip", 86_400_000))),
        ] {
            assert_eq!(check(&e), Ok(()), "{e:?}");
        }
    }

    #[test]
    fn refuses_with_the_field_named() {
        assert!(refused(&endpoint("", "hash", None)).contains("invalid lb \"hash\""));
        assert!(refused(&endpoint("dnsrr", "maglev", None)).contains("endpoint mode vip"));
        assert!(
            refused(&endpoint("", "", Some(("cookie", 0))))
                .contains("invalid endpoint affinity \"cookie\"")
        );
        assert!(refused(&endpoint("", "", Some(("client-ip", 500)))).contains("1s to 24h"));
        assert!(refused(&endpoint("", "", Some(("client-ip", 90_000_000)))).contains("1s to 24h"));
    }
}

//! `--lb` and `--endpoint-affinity` in a compose file, as deploy labels
//! (the compose schema has no such keys, and a label passes through
//! `docker stack config` and other tools untouched):
//!
//! ```yaml
//! deploy:
//!   labels:
//!     com.shoal.lb: maglev
//!     com.shoal.endpoint-affinity: client-ip:30m
//! ```

use std::collections::BTreeMap;

use shoal_api::pb::EndpointAffinity;

use crate::commands::service::lb_flags::parse_affinity;

/// The deploy label that sets `--lb`.
pub const LB_LABEL: &str = "com.shoal.lb";
/// The deploy label that sets `--endpoint-affinity`.
pub const AFFINITY_LABEL: &str = "com.shoal.endpoint-affinity";

/// The endpoint's `lb` and `affinity` from the deploy labels; an error
/// names the label (the caller puts it at its place in the file).
pub fn from_labels(
    labels: &BTreeMap<String, String>,
) -> Result<(String, Option<EndpointAffinity>), (&'static str, String)> {
    let lb = match labels.get(LB_LABEL).map(|v| v.trim()) {
        None => String::new(),
        Some(lb @ ("round-robin" | "maglev")) => lb.to_owned(),
        Some(other) => {
            return Err((
                LB_LABEL,
                format!("{LB_LABEL} {other:?}: expected round-robin or maglev"),
            ));
        }
    };
    let affinity = match labels.get(AFFINITY_LABEL) {
        None => None,
        Some(text) => parse_affinity(text)
            .map_err(|e| (AFFINITY_LABEL, format!("{AFFINITY_LABEL} {text:?}: {e:#}")))?,
    };
    Ok((lb, affinity))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_set_lb_and_affinity() {
        let (lb, affinity) = from_labels(&labels(&[
            (LB_LABEL, "maglev"),
            (AFFINITY_LABEL, "client-ip:3s"),
        ]))
        .unwrap();
        assert_eq!(lb, "maglev");
        assert_eq!(affinity.unwrap().timeout_ms, 3000);
        assert_eq!(from_labels(&labels(&[])).unwrap(), (String::new(), None));
    }

    #[test]
    fn bad_labels_are_named() {
        let (label, message) = from_labels(&labels(&[(LB_LABEL, "random")])).unwrap_err();
        assert_eq!(label, LB_LABEL);
        assert!(
            message.contains("expected round-robin or maglev"),
            "{message}"
        );
        let (label, message) = from_labels(&labels(&[(AFFINITY_LABEL, "ip")])).unwrap_err();
        assert_eq!(label, AFFINITY_LABEL);
        assert!(message.contains("expected client-ip"), "{message}");
    }
}

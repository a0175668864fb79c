//! Placement constraints: `node.labels.zone==east`, `node.role!=manager`, …

use shoal_api::pb::Node;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    key: Key,
    equal: bool,
    value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Id,
    Hostname,
    Role,
    Ip,
    Os,
    Arch,
    Label(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConstraintError {
    #[error("invalid constraint {0:?}: expected KEY==VALUE or KEY!=VALUE")]
    Syntax(String),
    #[error(
        "invalid constraint {0:?}: unknown key {1:?} (expected node.id, node.hostname, node.role, node.ip, node.platform.os, node.platform.arch or node.labels.NAME)"
    )]
    UnknownKey(String, String),
    #[error("invalid constraint {0:?}: the value is empty")]
    EmptyValue(String),
}

impl Constraint {
    pub fn parse(text: &str) -> Result<Self, ConstraintError> {
        let (key, value, equal) = if let Some((k, v)) = text.split_once("==") {
            (k, v, true)
        } else if let Some((k, v)) = text.split_once("!=") {
            (k, v, false)
        } else {
            return Err(ConstraintError::Syntax(text.to_owned()));
        };
        let (key_text, value) = (key.trim(), value.trim());
        if value.is_empty() {
            return Err(ConstraintError::EmptyValue(text.to_owned()));
        }
        let key = match key_text.to_ascii_lowercase().as_str() {
            "node.id" => Key::Id,
            "node.hostname" => Key::Hostname,
            "node.role" => Key::Role,
            "node.ip" => Key::Ip,
            "node.platform.os" => Key::Os,
            "node.platform.arch" => Key::Arch,
            _ => match key_text.strip_prefix("node.labels.") {
                Some(label) if !label.is_empty() => Key::Label(label.to_owned()),
                _ => {
                    return Err(ConstraintError::UnknownKey(
                        text.to_owned(),
                        key_text.to_owned(),
                    ));
                }
            },
        };
        if key == Key::Role && !matches!(value.to_ascii_lowercase().as_str(), "manager" | "worker")
        {
            return Err(ConstraintError::Syntax(text.to_owned()));
        }
        Ok(Self {
            key,
            equal,
            value: value.to_owned(),
        })
    }

    pub fn parse_all(texts: &[String]) -> Result<Vec<Self>, ConstraintError> {
        texts.iter().map(|t| Self::parse(t)).collect()
    }

    pub fn matches(&self, node: &Node) -> bool {
        let description = node.description.clone().unwrap_or_default();
        let platform = description.platform.unwrap_or_default();
        let actual: Option<String> = match &self.key {
            Key::Id => node.meta.as_ref().map(|m| m.id.clone()),
            Key::Hostname => Some(description.hostname),
            Key::Role => Some(node.role().word().to_owned()),
            Key::Ip => node.status.as_ref().map(|s| s.addr.clone()),
            Key::Os => Some(platform.os),
            Key::Arch => Some(platform.architecture),
            Key::Label(name) => node.spec.as_ref().and_then(|s| s.labels.get(name).cloned()),
        };
        let equal = match (&self.key, actual) {
            (_, None) => false,
            (Key::Ip, Some(ip)) => ip_matches(&ip, &self.value),
            // Labels compare exactly; the rest as Swarm does, ignoring case.
            (Key::Label(_), Some(v)) => v == self.value,
            (_, Some(v)) => v.eq_ignore_ascii_case(&self.value),
        };
        equal == self.equal
    }
}

/// `node.ip` matches an address or a CIDR block.
fn ip_matches(ip: &str, pattern: &str) -> bool {
    let Some((net, bits)) = pattern.split_once('/') else {
        return ip == pattern;
    };
    let (Ok(ip), Ok(net), Ok(bits)) = (
        ip.parse::<std::net::Ipv4Addr>(),
        net.parse::<std::net::Ipv4Addr>(),
        bits.parse::<u32>(),
    ) else {
        return false;
    };
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits.min(32))
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::pb::{Meta, NodeDescription, NodeRole, NodeSpec, NodeStatus};

    fn node() -> Node {
        Node {
            meta: Some(Meta {
                id: "abc".into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                labels: [("zone".to_string(), "east".to_string())].into(),
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: "n1".into(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addr: "192.0.2.11".into(),
                ..Default::default()
            }),
            role: NodeRole::Manager as i32,
            ..Default::default()
        }
    }

    #[test]
    fn matches_each_key() {
        let n = node();
        for (text, expected) in [
            ("node.labels.zone==east", true),
            ("node.labels.zone!=east", false),
            ("node.labels.rack==r1", false),
            ("node.labels.rack!=r1", true),
            ("node.role==manager", true),
            ("node.role != worker", true),
            ("node.hostname==N1", true),
            ("node.id==abc", true),
            ("node.ip==192.0.2.11", true),
            ("node.ip==192.0.2.0/24", true),
            ("node.ip==198.18.0.0/15", false),
        ] {
            assert_eq!(
                Constraint::parse(text).unwrap().matches(&n),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn bad_constraints_name_the_problem() {
        assert!(matches!(
            Constraint::parse("node.labels.zone=east"),
            Err(ConstraintError::Syntax(_))
        ));
        assert!(matches!(
            Constraint::parse("zone==east"),
            Err(ConstraintError::UnknownKey(..))
        ));
        assert!(matches!(
            Constraint::parse("node.labels.zone=="),
            Err(ConstraintError::EmptyValue(_))
        ));
        assert!(matches!(
            Constraint::parse("node.role==boss"),
            Err(ConstraintError::Syntax(_))
        ));
    }
}

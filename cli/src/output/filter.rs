//! `--filter key=value` as Docker's listings take it: the keys each
//! listing accepts, a repeated key matching any of its values, different
//! keys all having to match; `label` matching as swarmkit's (every label
//! given must be there, with the value when one is given).

use std::collections::BTreeMap;

/// Why a `--filter` was refused, in Docker's words.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("bad format of filter (expected name=value)")]
    Format,
    #[error("invalid filter '{0}'")]
    Key(String),
}

/// Parsed `--filter` flags.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    values: BTreeMap<String, Vec<String>>,
}

impl Filters {
    /// `key=value` flags, keys among `accepted` (matched case-insensitively
    /// and trimmed, as Docker's CLI does).
    pub fn parse(flags: &[String], accepted: &[&str]) -> Result<Self, FilterError> {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for flag in flags.iter().filter(|f| !f.is_empty()) {
            let (key, value) = flag.split_once('=').ok_or(FilterError::Format)?;
            let key = key.trim().to_lowercase();
            if !accepted.contains(&key.as_str()) {
                return Err(FilterError::Key(key));
            }
            values.entry(key).or_default().push(value.trim().to_owned());
        }
        Ok(Self { values })
    }

    /// The values given for `key` (none: the key is not filtered on).
    pub fn get(&self, key: &str) -> &[String] {
        self.values.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn has(&self, key: &str) -> bool {
        !self.get(key).is_empty()
    }

    /// Adds a value, as a command does for the stack or service it lists.
    pub fn add(&mut self, key: &str, value: &str) {
        self.values
            .entry(key.to_owned())
            .or_default()
            .push(value.to_owned());
    }

    /// Swaps `key`'s values, as `node=NAME` becomes the node's ID.
    pub fn set(&mut self, key: &str, values: Vec<String>) {
        self.values.insert(key.to_owned(), values);
    }

    /// No `key`, or `candidate` equals one of its values.
    pub fn exact(&self, key: &str, candidate: &str) -> bool {
        let values = self.get(key);
        values.is_empty() || values.iter().any(|v| v == candidate)
    }

    /// No `key`, or one of its values starts `candidate` (swarmkit's
    /// name and ID prefixes).
    pub fn prefix(&self, key: &str, candidate: &str) -> bool {
        let values = self.get(key);
        values.is_empty() || values.iter().any(|v| candidate.starts_with(v.as_str()))
    }

    /// No `key`, or one of its values matches `candidate` exactly or as an
    /// unanchored regular expression (Docker's `Match`, used for networks).
    /// A value that is no valid expression matches only exactly.
    pub fn matches(&self, key: &str, candidate: &str) -> bool {
        let values = self.get(key);
        values.is_empty()
            || values.iter().any(|v| {
                v == candidate || regex::Regex::new(v).is_ok_and(|re| re.is_match(candidate))
            })
    }

    /// No `key`, or every `label[=value]` it names is among `labels`.
    pub fn labels<'a>(&self, key: &str, labels: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.get(key)
            .iter()
            .all(|wanted| match wanted.split_once('=') {
                Some((k, v)) => labels(k) == Some(v),
                None => labels(wanted).is_some(),
            })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn parse(flags: &[&str]) -> Result<Filters, FilterError> {
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        Filters::parse(&flags, &["id", "name", "label", "role"])
    }

    #[test]
    fn unknown_keys_and_missing_values_get_dockers_errors() {
        assert_eq!(
            parse(&["colour=red"]).unwrap_err().to_string(),
            "invalid filter 'colour'"
        );
        assert_eq!(
            parse(&["name"]).unwrap_err().to_string(),
            "bad format of filter (expected name=value)"
        );
        assert!(parse(&[" Name = web "]).unwrap().exact("name", "web"));
    }

    #[test]
    fn a_repeated_key_matches_any_value_and_keys_all_must_match() {
        let f = parse(&["name=web", "name=db", "id=ab"]).unwrap();
        assert!(f.prefix("name", "web_1") && f.prefix("name", "db"));
        assert!(!f.prefix("name", "cache"));
        assert!(f.prefix("id", "abc") && !f.prefix("id", "xab"));
        // Keys not given match everything.
        assert!(f.exact("role", "anything"));
    }

    #[test]
    fn labels_must_all_be_there_with_the_values_given() {
        let labels: BTreeMap<String, String> = [("tier", "front"), ("env", "prod")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        let get = |k: &str| labels.get(k).map(String::as_str);
        assert!(parse(&["label=tier"]).unwrap().labels("label", get));
        assert!(
            parse(&["label=tier=front", "label=env"])
                .unwrap()
                .labels("label", get)
        );
        assert!(!parse(&["label=tier=back"]).unwrap().labels("label", get));
        assert!(
            !parse(&["label=tier", "label=zone"])
                .unwrap()
                .labels("label", get)
        );
    }

    #[test]
    fn network_names_match_as_regular_expressions() {
        let f = parse(&["name=^front"]).unwrap();
        assert!(f.matches("name", "frontend") && !f.matches("name", "backfront"));
        let f = parse(&["name=net("]).unwrap();
        assert!(f.matches("name", "net(") && !f.matches("name", "net"));
    }
}

//! A name for a service created without one (`service create` with no
//! `--name`), as swarmkit gives: `adjective_surname`, unused in the cluster.

/// Words that read well before a name.
const ADJECTIVES: [&str; 48] = [
    "agile", "amber", "brave", "bright", "calm", "clever", "cosmic", "crisp", "curious", "daring",
    "eager", "elegant", "fearless", "festive", "gentle", "happy", "hardy", "humble", "jolly",
    "keen", "kind", "lively", "lucid", "merry", "modest", "nimble", "noble", "patient", "placid",
    "proud", "quick", "quiet", "radiant", "serene", "sharp", "shiny", "silent", "steady", "stoic",
    "sunny", "swift", "tender", "tidy", "upbeat", "vivid", "warm", "wise", "zesty",
];

/// Scientists and engineers whose work computing stands on.
const SURNAMES: [&str; 48] = [
    "babbage",
    "backus",
    "bardeen",
    "bell",
    "boole",
    "cerf",
    "church",
    "codd",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euler",
    "faraday",
    "fermat",
    "feynman",
    "gauss",
    "goldberg",
    "hamilton",
    "hamming",
    "hopper",
    "kahn",
    "knuth",
    "lamarr",
    "lamport",
    "liskov",
    "lovelace",
    "maxwell",
    "mccarthy",
    "meitner",
    "newton",
    "noether",
    "pascal",
    "perlman",
    "ritchie",
    "shannon",
    "sinoussi",
    "somerville",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "vaughan",
    "volta",
    "wilkes",
    "wing",
    "wozniak",
    "yalow",
];

/// A random number below `n` (n > 0).
fn below(n: usize) -> usize {
    let mut bytes = [0u8; 8];
    // The kernel's random source; a fixed pick is still a valid name.
    let _ = getrandom::fill(&mut bytes);
    (u64::from_le_bytes(bytes) % n as u64) as usize
}

/// A name `taken` refuses less often than not: `adjective_surname`, then
/// with a digit added (as Docker retries), then with a longer number.
pub fn service_name(taken: impl Fn(&str) -> bool) -> String {
    let base = || {
        format!(
            "{}_{}",
            ADJECTIVES[below(ADJECTIVES.len())],
            SURNAMES[below(SURNAMES.len())]
        )
    };
    for attempt in 0..16 {
        let name = if attempt == 0 {
            base()
        } else {
            format!("{}{}", base(), below(10))
        };
        if !taken(&name) {
            return name;
        }
    }
    loop {
        let name = format!("{}{}", base(), below(1_000_000));
        if !taken(&name) {
            return name;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_dockers_and_avoid_the_taken_ones() {
        let name = service_name(|_| false);
        let (adjective, surname) = name.split_once('_').unwrap();
        assert!(
            ADJECTIVES.contains(&adjective) && SURNAMES.contains(&surname),
            "{name}"
        );
        // Every plain name taken: a number makes it unique.
        let name = service_name(|n| !n.chars().last().unwrap().is_ascii_digit());
        assert!(name.chars().last().unwrap().is_ascii_digit(), "{name}");
        // Names are valid service names (1-63 of [a-z0-9_-.]).
        assert!(name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }
}

//! Ids that name files: an agent builds paths from ids the manager sends
//! (a task's tmpfs is `<run dir>/tasks/<task id>`), so an id is checked
//! against the alphabet [`crate::new_id`] draws from before it becomes a
//! path part. An id like `../../etc` or one with a `/` or NUL is refused,
//! never joined into a path.

/// The longest id accepted (new ids have 25 characters; this leaves room
/// without letting an id fill a path).
pub const MAX_LEN: usize = 64;

/// An id that cannot be used as a path part, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} id {id:?}: {problem}")]
pub struct BadId {
    /// What the id names (`task`, `node`…).
    pub what: &'static str,
    pub id: String,
    pub problem: &'static str,
}

/// `id` if it is a Shoal id (1 to [`MAX_LEN`] characters of `0-9a-z`);
/// `what` names it in the error.
pub fn check<'a>(what: &'static str, id: &'a str) -> Result<&'a str, BadId> {
    let bad = |problem| BadId {
        what,
        // Quoted in the error: keep it short whatever was sent.
        id: id.chars().take(MAX_LEN + 1).collect(),
        problem,
    };
    if id.is_empty() {
        return Err(bad("empty"));
    }
    if id.len() > MAX_LEN {
        return Err(bad("longer than 64 characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return Err(bad("only 0-9 and a-z are allowed"));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_and_short_test_ids_pass() {
        let id = crate::new_id();
        assert_eq!(check("task", &id), Ok(id.as_str()));
        assert_eq!(check("task", "t1"), Ok("t1"));
        assert!(check("task", &"a".repeat(MAX_LEN)).is_ok());
    }

    #[test]
    fn path_tricks_are_refused_with_the_id_and_the_reason() {
        for (id, problem) in [
            ("", "empty"),
            ("..", "only 0-9 and a-z"),
            ("../../etc", "only 0-9 and a-z"),
            ("a/b", "only 0-9 and a-z"),
            ("/abs", "only 0-9 and a-z"),
            ("a\0b", "only 0-9 and a-z"),
            (".", "only 0-9 and a-z"),
            ("ABC", "only 0-9 and a-z"),
            ("a b", "only 0-9 and a-z"),
            ("é", "only 0-9 and a-z"),
        ] {
            let err = check("task", id).unwrap_err();
            assert!(err.to_string().starts_with("invalid task id "), "{err}");
            assert!(err.problem.starts_with(problem), "{id:?}: {err}");
        }
        let long = "a".repeat(MAX_LEN + 1);
        let err = check("node", &long).unwrap_err().to_string();
        assert!(err.contains("longer than 64 characters"), "{err}");
    }
}

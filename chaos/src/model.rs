//! The sequential specification the store's history is checked against: one
//! named object (a service's spec, or a secret, by name) as a register that
//! is absent or holds an id and a value (the `chaos.v` label each write sets
//! to a value no other write uses).

/// What the object holds at one point of a linearization.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Obj {
    Absent,
    /// `id` is None after a create whose answer was lost: the store gave it
    /// an id the client never saw, and the next read that finds it says which.
    Present {
        id: Option<String>,
        value: u64,
    },
}

/// One operation a client invoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Create { value: u64 },
    Update { id: String, value: u64 },
    Remove { id: String },
    Read,
}

/// What the client got back. `Unknown`: no answer (a timeout, a connection
/// lost mid-call): the operation may or may not have taken effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Created { id: String },
    Exists,
    Updated,
    Removed,
    NotFound,
    Read(Option<(String, u64)>),
    Unknown,
}

fn matches(held: &Option<String>, id: &str) -> bool {
    held.as_deref().is_none_or(|h| h == id)
}

/// The state after `input` answered with `output` in `state`, or None if
/// that answer is impossible there.
pub fn step(state: &Obj, input: &Input, output: &Output) -> Option<Obj> {
    use Obj::{Absent, Present};
    match (input, output, state) {
        (Input::Create { value }, Output::Created { id }, Absent) => Some(Present {
            id: Some(id.clone()),
            value: *value,
        }),
        (Input::Create { .. }, Output::Exists, Present { .. }) => Some(state.clone()),
        (Input::Create { value }, Output::Unknown, Absent) => Some(Present {
            id: None,
            value: *value,
        }),
        (Input::Create { .. }, Output::Unknown, Present { .. }) => Some(state.clone()),

        (
            Input::Update { id, value },
            Output::Updated | Output::Unknown,
            Present { id: held, .. },
        ) if matches(held, id) => Some(Present {
            id: Some(id.clone()),
            value: *value,
        }),
        (Input::Remove { id }, Output::Removed | Output::Unknown, Present { id: held, .. })
            if matches(held, id) =>
        {
            Some(Absent)
        }
        // Not found: nothing by that id (absent, or recreated with another).
        (
            Input::Update { id, .. } | Input::Remove { id },
            Output::NotFound | Output::Unknown,
            _,
        ) if !matches_present(state, id) || matches!(state, Present { id: None, .. }) => {
            Some(state.clone())
        }

        (Input::Read, Output::Read(None), Absent) => Some(Absent),
        (Input::Read, Output::Read(Some((id, value))), Present { id: held, value: v })
            if v == value && matches(held, id) =>
        {
            Some(Present {
                id: Some(id.clone()),
                value: *value,
            })
        }
        (Input::Read, Output::Unknown, _) => Some(state.clone()),
        _ => None,
    }
}

fn matches_present(state: &Obj, id: &str) -> bool {
    matches!(state, Obj::Present { id: Some(held), .. } if held == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(id: &str, value: u64) -> Obj {
        Obj::Present {
            id: Some(id.into()),
            value,
        }
    }

    #[test]
    fn a_create_needs_the_name_free_and_exists_needs_it_taken() {
        let created = Output::Created { id: "a".into() };
        let create = Input::Create { value: 1 };
        assert_eq!(step(&Obj::Absent, &create, &created), Some(present("a", 1)));
        assert_eq!(step(&present("a", 1), &create, &created), None);
        assert_eq!(step(&Obj::Absent, &create, &Output::Exists), None);
        assert_eq!(
            step(&present("a", 1), &create, &Output::Exists),
            Some(present("a", 1))
        );
    }

    #[test]
    fn an_update_or_remove_by_a_stale_id_is_not_found() {
        let update = Input::Update {
            id: "old".into(),
            value: 2,
        };
        assert_eq!(
            step(&present("new", 1), &update, &Output::NotFound),
            Some(present("new", 1))
        );
        assert_eq!(step(&present("new", 1), &update, &Output::Updated), None);
        assert_eq!(step(&present("old", 1), &update, &Output::NotFound), None);
        let remove = Input::Remove { id: "old".into() };
        assert_eq!(
            step(&present("old", 1), &remove, &Output::Removed),
            Some(Obj::Absent)
        );
    }

    #[test]
    fn a_lost_create_is_bound_to_its_id_by_the_next_read() {
        let unknown = step(&Obj::Absent, &Input::Create { value: 7 }, &Output::Unknown)
            .expect("a create may take effect");
        let read = Output::Read(Some(("x".into(), 7)));
        assert_eq!(step(&unknown, &Input::Read, &read), Some(present("x", 7)));
        let other = Output::Read(Some(("x".into(), 8)));
        assert_eq!(step(&unknown, &Input::Read, &other), None);
    }

    #[test]
    fn a_read_must_see_the_value_held() {
        let state = present("a", 3);
        assert_eq!(
            step(&state, &Input::Read, &Output::Read(Some(("a".into(), 3)))),
            Some(state.clone())
        );
        assert_eq!(
            step(&state, &Input::Read, &Output::Read(Some(("a".into(), 2)))),
            None
        );
        assert_eq!(step(&state, &Input::Read, &Output::Read(None)), None);
    }
}

//! Known linearizable and non-linearizable histories.

use super::*;

struct H(Vec<Operation>);

impl H {
    fn new() -> Self {
        H(Vec::new())
    }
    /// An operation of client `c` on key "k" over [invoke, complete].
    fn op(mut self, c: usize, input: Input, output: Output, invoke: u64, complete: u64) -> Self {
        self.0.push(Operation {
            client: c,
            key: "k".into(),
            input,
            output,
            invoke,
            complete: Some(complete),
        });
        self
    }
    /// An operation with no answer.
    fn lost(mut self, c: usize, input: Input, invoke: u64) -> Self {
        self.0.push(Operation {
            client: c,
            key: "k".into(),
            input,
            output: Output::Unknown,
            invoke,
            complete: None,
        });
        self
    }
    fn check(&self) -> Vec<Violation> {
        check(&self.0)
    }
}

fn create(v: u64) -> Input {
    Input::Create { value: v }
}
fn created(id: &str) -> Output {
    Output::Created { id: id.into() }
}
fn update(id: &str, v: u64) -> Input {
    Input::Update {
        id: id.into(),
        value: v,
    }
}
fn read(state: Option<(&str, u64)>) -> Output {
    Output::Read(state.map(|(id, v)| (id.into(), v)))
}

#[test]
fn sequential_writes_and_reads_linearize() {
    let h = H::new()
        .op(0, create(1), created("a"), 0, 10)
        .op(1, Input::Read, read(Some(("a", 1))), 20, 30)
        .op(0, update("a", 2), Output::Updated, 40, 50)
        .op(1, Input::Read, read(Some(("a", 2))), 60, 70)
        .op(0, Input::Remove { id: "a".into() }, Output::Removed, 80, 90)
        .op(1, Input::Read, read(None), 100, 110);
    assert!(h.check().is_empty());
}

#[test]
fn a_read_concurrent_with_a_write_may_see_either_value() {
    for seen in [1, 2] {
        let h = H::new()
            .op(0, create(1), created("a"), 0, 10)
            .op(0, update("a", 2), Output::Updated, 20, 50)
            .op(1, Input::Read, read(Some(("a", seen))), 30, 40);
        assert!(h.check().is_empty(), "read of {seen}");
    }
}

#[test]
fn a_stale_read_after_an_acknowledged_write_is_a_violation() {
    let h = H::new()
        .op(0, create(1), created("a"), 0, 10)
        .op(0, update("a", 2), Output::Updated, 20, 30)
        .op(1, Input::Read, read(Some(("a", 1))), 40, 50);
    let violations = h.check();
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].key, "k");
    assert!(
        violations[0]
            .slice
            .iter()
            .any(|op| op.output == read(Some(("a", 1)))),
        "the slice shows the stale read: {:?}",
        violations[0].slice
    );
}

#[test]
fn a_lost_acknowledged_write_is_a_violation() {
    // Acknowledged create, then a read that finds nothing.
    let h = H::new()
        .op(0, create(1), created("a"), 0, 10)
        .op(1, Input::Read, read(None), 20, 30);
    assert_eq!(h.check().len(), 1);
}

#[test]
fn two_creates_of_one_name_cannot_both_succeed() {
    let h = H::new()
        .op(0, create(1), created("a"), 0, 10)
        .op(1, create(2), created("b"), 5, 15);
    assert_eq!(h.check().len(), 1);
    let h = H::new()
        .op(0, create(1), created("a"), 0, 10)
        .op(1, create(2), Output::Exists, 5, 15);
    assert!(h.check().is_empty());
}

#[test]
fn a_write_with_no_answer_may_take_effect_later_or_never() {
    // Never seen: fine.
    let never = H::new()
        .op(0, create(1), created("a"), 0, 10)
        .lost(0, update("a", 2), 20)
        .op(1, Input::Read, read(Some(("a", 1))), 100, 110);
    assert!(never.check().is_empty());
    // Seen long after the client gave up: fine too.
    let later = H::new()
        .op(0, create(1), created("a"), 0, 10)
        .lost(0, update("a", 2), 20)
        .op(1, Input::Read, read(Some(("a", 1))), 100, 110)
        .op(1, Input::Read, read(Some(("a", 2))), 200, 210);
    assert!(later.check().is_empty());
    // But not before it was invoked.
    let before = H::new()
        .op(0, create(1), created("a"), 0, 10)
        .op(1, Input::Read, read(Some(("a", 2))), 11, 15)
        .lost(0, update("a", 2), 20);
    assert_eq!(before.check().len(), 1);
}

#[test]
fn a_lost_create_gets_its_id_from_the_first_read_that_sees_it() {
    let h = H::new()
        .lost(0, create(5), 0)
        .op(1, Input::Read, read(Some(("z", 5))), 50, 60)
        .op(1, update("z", 6), Output::Updated, 70, 80)
        .op(1, Input::Read, read(Some(("z", 6))), 90, 100);
    assert!(h.check().is_empty());
    // A value flip-flopping back is not linearizable, lost writes or not.
    let flip = H::new()
        .lost(0, create(5), 0)
        .op(1, Input::Read, read(Some(("z", 5))), 50, 60)
        .op(1, Input::Read, read(None), 70, 80)
        .op(1, Input::Read, read(Some(("z", 5))), 90, 100);
    assert_eq!(flip.check().len(), 1);
}

#[test]
fn keys_are_checked_apart() {
    let mut ops = H::new()
        .op(0, create(1), created("a"), 0, 10)
        .op(1, Input::Read, read(Some(("a", 1))), 20, 30)
        .0;
    ops.push(Operation {
        client: 2,
        key: "other".into(),
        input: Input::Read,
        output: read(None),
        invoke: 25,
        complete: Some(26),
    });
    assert!(check(&ops).is_empty());
}

#[test]
fn many_concurrent_clients_stay_tractable() {
    // 4 clients, 400 operations on one key, each write read back at once:
    // linearizable, and the cache keeps the search short.
    let mut h = H::new().op(0, create(0), created("a"), 0, 5);
    let mut t = 10;
    for i in 1..100u64 {
        for c in 0..4u64 {
            let v = i * 10 + c;
            h = h.op(
                c as usize,
                update("a", v),
                Output::Updated,
                t + c,
                t + 20 + c,
            );
        }
        h = h.op(
            4,
            Input::Read,
            read(Some(("a", i * 10 + 3))),
            t + 30,
            t + 31,
        );
        t += 40;
    }
    assert!(h.check().is_empty());
}

#[test]
fn many_lost_writes_that_changed_nothing_do_not_blow_up_the_search() {
    // 40 lost updates by a stale id (each could be a no-op anywhere), among
    // reads: linearizable, and quick.
    let mut h = H::new().op(0, create(1), created("a"), 0, 5);
    for i in 0..40u64 {
        h = h.lost(1, update("gone", 100 + i), 10 + i * 10);
        h = h.op(
            0,
            Input::Read,
            read(Some(("a", 1))),
            12 + i * 10,
            14 + i * 10,
        );
    }
    let started = std::time::Instant::now();
    assert!(h.check().is_empty());
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

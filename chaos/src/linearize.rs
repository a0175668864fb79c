//! A linearizability checker in the style of Wing & Gong with Lowe's
//! memoization (as Porcupine does it): a depth-first search for an order of
//! the operations that respects real time and the model of
//! [`crate::model`], caching (operations linearized, state) pairs already
//! explored. Operations on different names are independent (linearizability
//! is compositional), so each name's history is checked on its own.
//!
//! An operation whose outcome is unknown completes at infinity: it may take
//! effect at any point after it was invoked, or never.

use std::collections::{BTreeMap, HashSet};

use crate::model::{Input, Obj, Output, step};

/// One operation of a history, times in microseconds since the run began.
#[derive(Clone, Debug)]
pub struct Operation {
    pub client: usize,
    /// What the operation is on: `service/chaos-s3`, `secret/chaos-k1`.
    pub key: String,
    pub input: Input,
    pub output: Output,
    pub invoke: u64,
    /// None: no answer (the outcome is unknown).
    pub complete: Option<u64>,
}

/// Why a key's history is not linearizable: the operations the longest
/// linearization found could not extend past, with those overlapping them.
#[derive(Debug)]
pub struct Violation {
    pub key: String,
    /// The operations linearized before the search got stuck, in order.
    pub prefix_len: usize,
    /// The state after that prefix.
    pub state: Obj,
    /// The slice of the key's history around the stuck point.
    pub slice: Vec<Operation>,
}

/// Checks every key's history; the violations, empty if all linearize.
pub fn check(history: &[Operation]) -> Vec<Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    by_key
        .into_iter()
        .filter_map(|(key, ops)| check_key(key, &ops).err())
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Call,
    Return,
}

/// A node of the doubly linked list of call and return events.
#[derive(Clone, Copy)]
struct Event {
    kind: Kind,
    op: usize,
    /// For a call: the index of its return event.
    partner: usize,
    prev: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

fn check_key(key: &str, ops: &[&Operation]) -> Result<(), Violation> {
    // Events sorted by time; a call sorts before a return at the same time
    // (they count as concurrent), and unknown returns come last.
    let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        order.push((op.invoke, 0, i));
        order.push((op.complete.unwrap_or(u64::MAX), 1, i));
    }
    order.sort();
    // Index 0 is the head sentinel; events follow at 1..
    let mut events = vec![Event {
        kind: Kind::Call,
        op: NONE,
        partner: NONE,
        prev: NONE,
        next: 1,
    }];
    let mut return_of = vec![NONE; ops.len()];
    for (slot, &(_, kind, op)) in order.iter().enumerate() {
        let index = slot + 1;
        let kind = if kind == 0 { Kind::Call } else { Kind::Return };
        if kind == Kind::Return {
            return_of[op] = index;
        }
        events.push(Event {
            kind,
            op,
            partner: NONE,
            prev: index - 1,
            next: if slot + 1 < order.len() {
                index + 1
            } else {
                NONE
            },
        });
    }
    for event in events.iter_mut().skip(1) {
        if event.kind == Kind::Call {
            event.partner = return_of[event.op];
        }
    }
    if events.len() == 1 {
        events[0].next = NONE;
    }

    let lift = |events: &mut Vec<Event>, call: usize| {
        for i in [call, events[call].partner] {
            let (prev, next) = (events[i].prev, events[i].next);
            events[prev].next = next;
            if next != NONE {
                events[next].prev = prev;
            }
        }
    };
    let unlift = |events: &mut Vec<Event>, call: usize| {
        for i in [events[call].partner, call] {
            let (prev, next) = (events[i].prev, events[i].next);
            events[prev].next = i;
            if next != NONE {
                events[next].prev = i;
            }
        }
    };

    let mut state = Obj::Absent;
    let mut linearized = Bits::new(ops.len());
    let mut cache: HashSet<(Bits, Obj)> = HashSet::new();
    let mut stack: Vec<(usize, Obj)> = Vec::new();
    // The deepest point reached, for the report.
    let mut best: (Vec<usize>, Obj) = (Vec::new(), Obj::Absent);
    // Operations with no answer never have to be placed: they may take
    // effect at the end, or never. Placing one that changes nothing is
    // pointless, and would multiply the search by every subset of them.
    let mut definite_left = ops.iter().filter(|op| op.complete.is_some()).count();
    let mut entry = events[0].next;
    while events[0].next != NONE && definite_left > 0 {
        let event = events[entry];
        if event.kind == Kind::Call {
            let op = ops[event.op];
            let unknown = op.complete.is_none();
            if let Some(next) = step(&state, &op.input, &op.output)
                && !(unknown && next == state)
            {
                let mut with = linearized.clone();
                with.set(event.op);
                if cache.insert((with.clone(), next.clone())) {
                    stack.push((entry, state));
                    state = next;
                    linearized = with;
                    lift(&mut events, entry);
                    if !unknown {
                        definite_left -= 1;
                    }
                    entry = events[0].next;
                    continue;
                }
            }
            entry = event.next;
        } else {
            if stack.len() >= best.0.len() {
                best = (
                    stack.iter().map(|(e, _)| events[*e].op).collect(),
                    state.clone(),
                );
            }
            let Some((call, before)) = stack.pop() else {
                return Err(violation(key, ops, &best.0, best.1));
            };
            state = before;
            if ops[events[call].op].complete.is_some() {
                definite_left += 1;
            }
            linearized.clear(events[call].op);
            unlift(&mut events, call);
            entry = events[call].next;
        }
    }
    Ok(())
}

/// The report of a failed search: the operations around the first one the
/// deepest linearization could not place.
fn violation(key: &str, ops: &[&Operation], prefix: &[usize], state: Obj) -> Violation {
    let mut done = Bits::new(ops.len());
    for &i in prefix {
        done.set(i);
    }
    // The earliest-completing operation left out: the search could place
    // nothing that had to come before it.
    let stuck = (0..ops.len())
        .filter(|&i| !done.get(i))
        .min_by_key(|&i| ops[i].complete.unwrap_or(u64::MAX))
        .unwrap_or(0);
    let (from, to) = (
        ops[stuck].invoke,
        ops[stuck].complete.unwrap_or(ops[stuck].invoke),
    );
    // Everything overlapping [from - 1 s, to], and the last completed
    // operation before it.
    let mut slice: Vec<Operation> = ops
        .iter()
        .filter(|op| {
            op.complete.unwrap_or(u64::MAX).saturating_add(1_000_000) >= from && op.invoke <= to
        })
        .map(|op| (*op).clone())
        .collect();
    slice.sort_by_key(|op| op.invoke);
    slice.truncate(40);
    Violation {
        key: key.to_owned(),
        prefix_len: prefix.len(),
        state,
        slice,
    }
}

#[cfg(test)]
mod tests;

//! Failed requests, split in two: those that may be blamed on a fault (the
//! request entered, left from, or could be balanced to a node that was
//! being faulted) and all others, whose goal is zero.

use std::collections::BTreeSet;

use crate::{schedule::Fault, traffic::Request};

/// A fault's time window as the data plane feels it.
#[derive(Clone, Debug)]
pub struct Window {
    pub fault: Fault,
    pub node: String,
    /// Microseconds since the run began: injected, and recovered plus the
    /// grace the cluster is given to converge again.
    pub from: u64,
    pub to: u64,
    /// Nodes that ran a backend task when the fault began.
    pub backends: BTreeSet<String>,
}

impl Window {
    /// Whether the fault touches the data plane of `request`: a node-level
    /// fault (a manager's death leaves its node's tasks and eBPF programs
    /// alone) on the request's entry or client node, or on a node that
    /// held a backend.
    fn covers(&self, request: &Request) -> bool {
        let node_level = matches!(
            self.fault,
            Fault::KillAgent | Fault::RestartEngine | Fault::Isolate
        );
        // In flight at any point of the window: a request sent just before
        // the fault and cut by it is the fault's.
        node_level
            && request.at <= self.to
            && request.until >= self.from
            && (request.via == self.node || self.backends.contains(&self.node))
    }
}

#[derive(Default, Debug)]
pub struct Split<'a> {
    pub total: usize,
    pub faulted: Vec<&'a Request>,
    pub others: Vec<&'a Request>,
}

pub fn split<'a>(requests: &'a [Request], windows: &[Window]) -> Split<'a> {
    let mut split = Split {
        total: requests.len(),
        ..Default::default()
    };
    for request in requests.iter().filter(|r| !r.ok) {
        if windows.iter().any(|w| w.covers(request)) {
            split.faulted.push(request);
        } else {
            split.others.push(request);
        }
    }
    split
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::Route;

    fn failed(at: u64, via: &str) -> Request {
        Request {
            at,
            until: at + 20,
            path: Route::Mesh,
            via: via.into(),
            ok: false,
            detail: "FAILED timeout".into(),
        }
    }

    fn window(fault: Fault, node: &str, backends: &[&str]) -> Window {
        Window {
            fault,
            node: node.into(),
            from: 100,
            to: 200,
            backends: backends.iter().map(|b| b.to_string()).collect(),
        }
    }

    #[test]
    fn failures_in_a_node_fault_window_touching_the_request_are_the_fault_s() {
        let requests = vec![
            failed(150, "n2"), // entered the isolated node
            failed(150, "n1"), // could be balanced to a backend on n2
            failed(250, "n1"), // after the window
            Request {
                ok: true,
                ..failed(150, "n1")
            },
        ];
        let split = split(&requests, &[window(Fault::Isolate, "n2", &["n2", "n3"])]);
        assert_eq!(split.total, 4);
        assert_eq!(split.faulted.len(), 2);
        assert_eq!(split.others.len(), 1);
        assert_eq!(split.others[0].at, 250);
    }

    #[test]
    fn a_request_in_flight_when_the_fault_began_is_the_fault_s() {
        // Seen in seed 11's run: a request sent 10 ms before an isolation
        // timed out 2 s later, and was counted against no fault.
        let requests = vec![failed(90, "n1"), failed(50, "n1")];
        let split = split(&requests, &[window(Fault::Isolate, "n2", &["n2"])]);
        assert_eq!(split.faulted.len(), 1);
        assert_eq!(split.faulted[0].at, 90);
        assert_eq!(split.others.len(), 1);
    }

    #[test]
    fn a_manager_s_death_excuses_no_data_plane_failure() {
        let requests = vec![failed(150, "n1")];
        let split = split(&requests, &[window(Fault::KillLeader, "n1", &["n1"])]);
        assert_eq!(split.others.len(), 1);
    }

    #[test]
    fn a_node_without_backends_excuses_only_requests_through_it() {
        let requests = vec![failed(150, "n1"), failed(150, "n5")];
        let split = split(&requests, &[window(Fault::KillAgent, "n5", &["n1", "n2"])]);
        assert_eq!(split.faulted.len(), 1);
        assert_eq!(split.faulted[0].via, "n5");
    }
}

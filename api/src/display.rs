//! The words Docker users know for Shoal's enums (`running`, `drain`,
//! `replicated`, …), both ways, and Docker's human durations.

use crate::pb::{
    Availability, NodeRole, NodeState, PublishMode, Rebalance, RestartCondition, ServiceMode,
    TaskState,
};

macro_rules! words {
    ($ty:ty { $($variant:ident => $word:literal),* $(,)? }) => {
        impl $ty {
            /// The lowercase word Docker prints for this value.
            pub fn word(self) -> &'static str {
                match self { $(<$ty>::$variant => $word),* }
            }
            /// Parses the word Docker accepts for this value.
            pub fn from_word(word: &str) -> Option<Self> {
                match word.to_ascii_lowercase().as_str() {
                    $($word => Some(<$ty>::$variant),)*
                    _ => None,
                }
            }
            /// Every accepted word, for error messages.
            pub fn words() -> &'static [&'static str] {
                &[$($word),*]
            }
        }
    };
}

words!(TaskState {
    New => "new", Pending => "pending", Assigned => "assigned", Accepted => "accepted",
    Preparing => "preparing", Ready => "ready", Starting => "starting", Running => "running",
    Complete => "complete", Shutdown => "shutdown", Failed => "failed", Rejected => "rejected",
    Remove => "remove", Orphaned => "orphaned",
});
words!(NodeState {
    Unknown => "unknown", Down => "down", Ready => "ready", Disconnected => "disconnected",
});
words!(Availability { Active => "active", Pause => "pause", Drain => "drain" });
words!(NodeRole { Worker => "worker", Manager => "manager" });
words!(ServiceMode {
    Replicated => "replicated", Global => "global",
    ReplicatedJob => "replicated-job", GlobalJob => "global-job",
});

impl ServiceMode {
    /// Jobs run their tasks to completion instead of keeping them running.
    pub fn is_job(self) -> bool {
        matches!(self, ServiceMode::ReplicatedJob | ServiceMode::GlobalJob)
    }

    /// Modes whose tasks fill numbered slots (`replicas` of them) rather
    /// than one per node.
    pub fn is_replicated(self) -> bool {
        matches!(self, ServiceMode::Replicated | ServiceMode::ReplicatedJob)
    }
}
words!(RestartCondition { Any => "any", OnFailure => "on-failure", None => "none" });
words!(PublishMode { Ingress => "ingress", Host => "host" });
words!(Rebalance { Never => "never", OnNodeReady => "on-node-ready" });

impl TaskState {
    /// States from which a task never moves on.
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }
}

/// Docker's `units.HumanDuration`: "Less than a second", "8 seconds",
/// "About a minute", "3 hours", ...
pub fn human_duration(millis: i64) -> String {
    let seconds = millis.max(0) / 1000;
    let minutes = seconds / 60;
    let hours = minutes / 60;
    match () {
        _ if seconds < 1 => "Less than a second".into(),
        _ if seconds == 1 => "1 second".into(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if (seconds as f64 / 3600.0).round() == 1.0 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for word in TaskState::words() {
            assert_eq!(TaskState::from_word(word).unwrap().word(), *word);
        }
        assert_eq!(Availability::from_word("DRAIN"), Some(Availability::Drain));
        assert_eq!(
            RestartCondition::from_word("on-failure"),
            Some(RestartCondition::OnFailure)
        );
        assert_eq!(NodeRole::from_word("boss"), None);
        assert!(TaskState::Failed.is_terminal() && !TaskState::Running.is_terminal());
    }

    #[test]
    fn durations_read_as_dockers() {
        assert_eq!(human_duration(400), "Less than a second");
        assert_eq!(human_duration(8_000), "8 seconds");
        assert_eq!(human_duration(61_000), "About a minute");
        assert_eq!(human_duration(3 * 60_000), "3 minutes");
        assert_eq!(human_duration(3_600_000), "About an hour");
        assert_eq!(human_duration(5 * 3_600_000), "5 hours");
        assert_eq!(human_duration(3 * 86_400_000), "3 days");
    }
}

//! Answers the DNS server sent, by response code (for `/metrics`): read
//! from each datagram as it is sent, so answers made here, relayed from
//! upstream and shed alike count under the code the asker saw.

use std::sync::atomic::{AtomicU64, Ordering};

/// One counter per 4-bit header RCODE.
#[derive(Debug, Default)]
pub struct AnswerCodes([AtomicU64; 16]);

impl AnswerCodes {
    /// Counts an answer about to be sent (a datagram too short to hold a
    /// header counts nowhere).
    pub fn count(&self, answer: &[u8]) {
        if let Some(flags) = answer.get(3) {
            self.0[usize::from(flags & 0x0f)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The codes answered so far with their counts, by the names `dig`
    /// prints (`NOERROR`, `NXDOMAIN`, …).
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        self.0
            .iter()
            .enumerate()
            .map(|(code, n)| (name(code), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

fn name(code: usize) -> &'static str {
    const NAMES: [&str; 16] = [
        "NOERROR",
        "FORMERR",
        "SERVFAIL",
        "NXDOMAIN",
        "NOTIMP",
        "REFUSED",
        "YXDOMAIN",
        "YXRRSET",
        "NXRRSET",
        "NOTAUTH",
        "NOTZONE",
        "DSOTYPENI",
        "RCODE12",
        "RCODE13",
        "RCODE14",
        "RCODE15",
    ];
    NAMES[code & 0x0f]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_answer_under_its_code() {
        let codes = AnswerCodes::default();
        let header = |rcode: u8| [0x12, 0x34, 0x81, 0x80 | rcode, 0, 1, 0, 0, 0, 0, 0, 0];
        codes.count(&header(0));
        codes.count(&header(0));
        codes.count(&header(3));
        codes.count(&[0x12]);
        assert_eq!(codes.counts(), vec![("NOERROR", 2), ("NXDOMAIN", 1)]);
    }
}

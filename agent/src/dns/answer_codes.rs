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

    /// Adds a receive loop's own tallies (indexed by RCODE, from
    /// [`Self::tally`]) and zeroes them: one shared write per code per
    /// batch instead of one per answer.
    pub fn add(&self, tallies: &mut [u64; 16]) {
        for (counter, n) in self.0.iter().zip(tallies.iter_mut()) {
            if *n > 0 {
                counter.fetch_add(*n, Ordering::Relaxed);
                *n = 0;
            }
        }
    }

    /// Counts `answer` in a loop's own `tallies` (as [`Self::count`]).
    pub fn tally(tallies: &mut [u64; 16], answer: &[u8]) {
        if let Some(flags) = answer.get(3) {
            tallies[usize::from(flags & 0x0f)] += 1;
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
        let mut tallies = [0; 16];
        AnswerCodes::tally(&mut tallies, &header(3));
        AnswerCodes::tally(&mut tallies, &header(5));
        AnswerCodes::tally(&mut tallies, &[0x12]);
        codes.add(&mut tallies);
        assert_eq!(tallies, [0; 16], "added tallies start again from zero");
        assert_eq!(
            codes.counts(),
            vec![("NOERROR", 2), ("NXDOMAIN", 2), ("REFUSED", 1)]
        );
    }
}

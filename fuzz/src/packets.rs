//! An eBPF input: packets separated by [`SEPARATOR`], each a program
//! byte then an Ethernet frame. The program byte's low seven bits are the
//! program's index (modulo the program count); its high bit runs the
//! packet as if the test device were a task's veth with a source address
//! written (`TASK_SOURCES`), which `vip_out` judges.

use shoal_agent::datapath::unattached::PROGRAMS;

/// Between two packets of one input.
pub const SEPARATOR: &[u8] = b"SHOALPKT";
/// Packets per input: a handshake and a bit.
pub const MAX_PACKETS: usize = 4;

pub struct Packet<'a> {
    pub program: &'static str,
    /// Whether the device has a task source written.
    pub judged: bool,
    pub frame: &'a [u8],
}

/// The program byte's bit for [`Packet::judged`].
pub const JUDGED: u8 = 0x80;

pub fn split(data: &[u8]) -> Vec<Packet<'_>> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < MAX_PACKETS {
        let (chunk, next) = match find(rest, SEPARATOR) {
            Some(at) => (&rest[..at], Some(&rest[at + SEPARATOR.len()..])),
            None => (rest, None),
        };
        if let Some((&which, frame)) = chunk.split_first() {
            out.push(Packet {
                program: PROGRAMS[usize::from(which & !JUDGED) % PROGRAMS.len()],
                judged: which & JUDGED != 0,
                frame,
            });
        }
        match next {
            Some(next) => rest = next,
            None => break,
        }
    }
    out
}

/// Joins packets into one input (the seed corpus).
pub fn join(packets: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (program, frame)) in packets.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(SEPARATOR);
        }
        out.push(*program as u8);
        out.extend_from_slice(frame);
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

//! Writing answers: the response skeleton, the size an answer may take on
//! its transport (whole records that fit, TC when some did not), the bare
//! error reply for a message that does not parse, and RFC 8482's answer
//! to `ANY`.

use hickory_proto::{
    op::{Edns, Message, OpCode, ResponseCode},
    rr::{Name, RData, Record, rdata::HINFO},
};

use super::Reply;

/// A plain DNS message over UDP (no EDNS): answers beyond it are cut.
pub const UDP_LIMIT: usize = 512;
/// The largest query the server reads, on either transport: its UDP receive
/// buffer, and the payload size it advertises in its own OPT record.
pub const MAX_QUERY: usize = 4096;

/// How the query came: the answer's size bound follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The most bytes an answer to `query` may take on `transport`: over UDP
/// 512 without EDNS, else the asker's advertised payload size (no less
/// than 512, RFC 6891 §6.2.5, and no more than we would accept ourselves);
/// over TCP what the 2-byte length prefix can say (RFC 7766 §8).
pub fn size_limit(query: &Message, transport: Transport) -> usize {
    match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => query.edns.as_ref().map_or(UDP_LIMIT, |edns| {
            usize::from(edns.max_payload()).clamp(UDP_LIMIT, MAX_QUERY)
        }),
    }
}

/// A response to `query` with `code`: its question, RD echoed, RA set, and
/// an OPT record when the query had one (RFC 6891 §7).
pub fn response_to(query: &Message, id: u16, code: ResponseCode) -> Message {
    let mut response = Message::response(id, OpCode::Query);
    response.metadata.response_code = code;
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.queries = query.queries.clone();
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_QUERY as u16);
        response.set_edns(edns);
    }
    response
}

pub fn reply_code(query: &Message, id: u16, code: ResponseCode, limit: usize) -> Reply {
    encode(response_to(query, id, code), limit)
}

/// Encodes within `limit` bytes: when the whole answer does not fit, as
/// many whole records as do (found by bisection, so a cut never leaves
/// room for one more) with TC set, so that the asker retries over TCP
/// (RFC 1035 §4.2.1, RFC 7766 §5).
pub fn encode(mut response: Message, limit: usize) -> Reply {
    let bytes = match response.to_vec() {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(%error, "DNS: encoding an answer");
            return Reply::Drop;
        }
    };
    if bytes.len() <= limit || response.answers.is_empty() {
        return Reply::Send(bytes);
    }
    let all = std::mem::take(&mut response.answers);
    response.metadata.truncation = true;
    // Invariant: `fits` records fit (0 always does: the question alone is
    // far below 512), `all.len()` do not.
    let (mut fits, mut over) = (0, all.len());
    let mut best = None;
    while over - fits > 1 {
        let mid = fits + (over - fits) / 2;
        response.answers = all[..mid].to_vec();
        match response.to_vec() {
            Ok(bytes) if bytes.len() <= limit => (fits, best) = (mid, Some(bytes)),
            Ok(_) => over = mid,
            Err(_) => return Reply::Drop,
        }
    }
    match best {
        Some(bytes) => Reply::Send(bytes),
        None => {
            response.answers.clear();
            response.to_vec().map_or(Reply::Drop, Reply::Send)
        }
    }
}

/// RFC 8482 §4.2: an `ANY` query for a name we hold gets one synthesized
/// HINFO record (CPU "RFC8482", OS empty) instead of every RRset. Chosen
/// over §4.1's subset because it never grows with a service's replicas
/// (no amplification, never truncated) and tells the asker plainly what
/// happened; the addresses are an `A` query away.
pub fn rfc8482_hinfo(owner: Name, ttl: u32) -> Record {
    Record::from_rdata(
        owner,
        ttl,
        RData::HINFO(HINFO::new("RFC8482".to_owned(), String::new())),
    )
}

/// A bare error answer echoing the query's id, for a message that could
/// not be parsed whole: None when not even its header is there, or when it
/// is itself a response.
pub fn error_reply(datagram: &[u8], code: ResponseCode) -> Option<Vec<u8>> {
    if datagram.len() < 12 || datagram[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([datagram[0], datagram[1]]);
    let mut reply = [0u8; 12];
    reply[..2].copy_from_slice(&id.to_be_bytes());
    // QR=1, the query's opcode and RD; RA=1; the code.
    reply[2] = 0x80 | (datagram[2] & 0x79);
    reply[3] = 0x80 | (u16::from(code) as u8 & 0x0f);
    Some(reply.to_vec())
}

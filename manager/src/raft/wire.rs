//! Log entries and AppendEntries messages in a binary (protobuf) encoding.
//!
//! openraft's types serialize to JSON, where an entry's proposal is base64
//! inside a JSON string: encoded once for the log file and once per
//! follower on the leader, decoded on each follower, for every entry. Here an
//! entry is a protobuf message whose proposal is embedded as the protobuf
//! it already is: no base64, no string escaping, and the proposal is encoded
//! from where it lies (shared by `Arc`), never copied into a message first.
//!
//! Formats elsewhere stay readable: a log record written before this format
//! (JSON, starting with `{`) is still read ([`decode_entry`]), and a peer
//! that predates it gets JSON (see `network`). Vote and snapshot messages,
//! rare, stay JSON. Membership entries, rare too, carry openraft's own JSON
//! of the membership inside the binary entry.

use openraft::{
    EntryPayload,
    error::RaftError,
    raft::{AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult},
};
use prost::Message;
use shoal_api::pb::Proposal;

use super::{Entry, LogId, Payload, TypeConfig, Vote};

/// The first byte of a log record's plaintext in this format; JSON records
/// (the format before) start with `{`.
const ENTRY_FORMAT: u8 = 1;

/// Protobuf field numbers of an entry (and of [`WireEntry`]).
const ENTRY_PROPOSAL: u32 = 3;
/// AppendEntries' entries field (of [`WireAppend`]).
const APPEND_ENTRIES: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("an empty log record")]
    Empty,
    #[error("unknown log record format {0}")]
    Format(u8),
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
struct WireLogId {
    #[prost(uint64, tag = "1")]
    term: u64,
    #[prost(uint64, tag = "2")]
    node_id: u64,
    #[prost(uint64, tag = "3")]
    index: u64,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
struct WireVote {
    #[prost(uint64, tag = "1")]
    term: u64,
    #[prost(uint64, tag = "2")]
    node_id: u64,
    #[prost(bool, tag = "3")]
    committed: bool,
}

/// An entry as decoded. Its payload: a proposal (Normal), a membership's
/// JSON (Membership), neither (Blank).
#[derive(Clone, PartialEq, prost::Message)]
struct WireEntry {
    #[prost(message, optional, tag = "1")]
    log_id: Option<WireLogId>,
    #[prost(message, optional, tag = "3")]
    proposal: Option<Proposal>,
    #[prost(bytes = "vec", tag = "4")]
    membership_json: Vec<u8>,
}

/// An entry's fields but its proposal: encoded, then followed by the
/// proposal as field [`ENTRY_PROPOSAL`] (protobuf concatenates fields).
#[derive(Clone, PartialEq, prost::Message)]
struct EntryHead {
    #[prost(message, optional, tag = "1")]
    log_id: Option<WireLogId>,
    #[prost(bytes = "vec", tag = "4")]
    membership_json: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireAppend {
    #[prost(message, optional, tag = "1")]
    vote: Option<WireVote>,
    #[prost(message, optional, tag = "2")]
    prev_log_id: Option<WireLogId>,
    #[prost(message, optional, tag = "3")]
    leader_commit: Option<WireLogId>,
    #[prost(message, repeated, tag = "4")]
    entries: Vec<WireEntry>,
}

/// AppendEntries' fields but its entries (encoded after them).
#[derive(Clone, PartialEq, prost::Message)]
struct AppendHead {
    #[prost(message, optional, tag = "1")]
    vote: Option<WireVote>,
    #[prost(message, optional, tag = "2")]
    prev_log_id: Option<WireLogId>,
    #[prost(message, optional, tag = "3")]
    leader_commit: Option<WireLogId>,
}

/// A follower's answer to AppendEntries: exactly one field is set.
#[derive(Clone, PartialEq, prost::Message)]
struct WireReply {
    #[prost(bool, tag = "1")]
    success: bool,
    /// PartialSuccess, with its matching id if any.
    #[prost(message, optional, tag = "2")]
    partial: Option<WirePartial>,
    #[prost(bool, tag = "3")]
    conflict: bool,
    #[prost(message, optional, tag = "4")]
    higher_vote: Option<WireVote>,
    /// openraft's error, as its JSON (rare: a stopped Raft).
    #[prost(bytes = "vec", tag = "5")]
    error_json: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
struct WirePartial {
    #[prost(message, optional, tag = "1")]
    matching: Option<WireLogId>,
}

fn log_id_to_wire(id: &LogId) -> WireLogId {
    WireLogId {
        term: id.leader_id.term,
        node_id: id.leader_id.node_id,
        index: id.index,
    }
}

fn log_id_from_wire(id: WireLogId) -> LogId {
    super::log_id(id.term, id.node_id, id.index)
}

fn vote_to_wire(vote: &Vote) -> WireVote {
    WireVote {
        term: vote.leader_id.term,
        node_id: vote.leader_id.node_id,
        committed: vote.committed,
    }
}

fn vote_from_wire(vote: WireVote) -> Vote {
    let mut v = Vote::new(vote.term, vote.node_id);
    v.committed = vote.committed;
    v
}

/// A length-delimited field's key and length.
fn put_delimited_header(tag: u32, len: usize, buf: &mut Vec<u8>) {
    let key = ((tag as usize) << 3) | 2;
    // A Vec grows to hold anything: these cannot fail.
    let _ = prost::encode_length_delimiter(key, buf);
    let _ = prost::encode_length_delimiter(len, buf);
}

fn delimited_len(tag: u32, len: usize) -> usize {
    prost::length_delimiter_len(((tag as usize) << 3) | 2) + prost::length_delimiter_len(len) + len
}

/// One entry ready to encode: its head built, its proposal borrowed.
struct EntryParts<'a> {
    head: EntryHead,
    proposal: Option<&'a Proposal>,
}

impl<'a> EntryParts<'a> {
    fn of(entry: &'a Entry) -> Result<Self, WireError> {
        let mut head = EntryHead {
            log_id: Some(log_id_to_wire(&entry.log_id)),
            membership_json: Vec::new(),
        };
        let proposal = match &entry.payload {
            EntryPayload::Blank => None,
            EntryPayload::Normal(payload) => Some(&*payload.0),
            EntryPayload::Membership(m) => {
                head.membership_json = serde_json::to_vec(m)?;
                None
            }
        };
        Ok(Self { head, proposal })
    }

    fn encoded_len(&self) -> usize {
        self.head.encoded_len()
            + self
                .proposal
                .map_or(0, |p| delimited_len(ENTRY_PROPOSAL, p.encoded_len()))
    }

    fn encode(&self, buf: &mut Vec<u8>) {
        let _ = self.head.encode(buf);
        if let Some(p) = self.proposal {
            put_delimited_header(ENTRY_PROPOSAL, p.encoded_len(), buf);
            let _ = p.encode(buf);
        }
    }
}

fn entry_from_wire(wire: WireEntry) -> Result<Entry, WireError> {
    let log_id = log_id_from_wire(wire.log_id.ok_or(WireError::Missing("an entry's log id"))?);
    let payload = match (wire.proposal, wire.membership_json.is_empty()) {
        (Some(proposal), _) => EntryPayload::Normal(Payload::new(proposal)),
        (None, false) => EntryPayload::Membership(serde_json::from_slice(&wire.membership_json)?),
        (None, true) => EntryPayload::Blank,
    };
    Ok(Entry { log_id, payload })
}

/// Appends `entry`'s log record plaintext to `buf` (a sealing buffer).
pub fn encode_entry(entry: &Entry, buf: &mut Vec<u8>) -> Result<(), WireError> {
    let parts = EntryParts::of(entry)?;
    buf.reserve(1 + parts.encoded_len());
    buf.push(ENTRY_FORMAT);
    parts.encode(buf);
    Ok(())
}

/// A log record's plaintext, in this format or the JSON one before it.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, WireError> {
    match bytes.first() {
        Some(&ENTRY_FORMAT) => entry_from_wire(WireEntry::decode(&bytes[1..])?),
        Some(b'{') => Ok(serde_json::from_slice(bytes)?),
        Some(&other) => Err(WireError::Format(other)),
        None => Err(WireError::Empty),
    }
}

pub fn encode_append(rpc: &AppendEntriesRequest<TypeConfig>) -> Result<Vec<u8>, WireError> {
    let head = AppendHead {
        vote: Some(vote_to_wire(&rpc.vote)),
        prev_log_id: rpc.prev_log_id.as_ref().map(log_id_to_wire),
        leader_commit: rpc.leader_commit.as_ref().map(log_id_to_wire),
    };
    let entries = rpc
        .entries
        .iter()
        .map(EntryParts::of)
        .collect::<Result<Vec<_>, _>>()?;
    let lens: Vec<usize> = entries.iter().map(EntryParts::encoded_len).collect();
    let total = head.encoded_len()
        + lens
            .iter()
            .map(|len| delimited_len(APPEND_ENTRIES, *len))
            .sum::<usize>();
    let mut buf = Vec::with_capacity(total);
    let _ = head.encode(&mut buf);
    for (entry, len) in entries.iter().zip(lens) {
        put_delimited_header(APPEND_ENTRIES, len, &mut buf);
        entry.encode(&mut buf);
    }
    Ok(buf)
}

pub fn decode_append(bytes: &[u8]) -> Result<AppendEntriesRequest<TypeConfig>, WireError> {
    let wire = WireAppend::decode(bytes)?;
    Ok(AppendEntriesRequest {
        vote: vote_from_wire(wire.vote.ok_or(WireError::Missing("the vote"))?),
        prev_log_id: wire.prev_log_id.map(log_id_from_wire),
        leader_commit: wire.leader_commit.map(log_id_from_wire),
        entries: wire
            .entries
            .into_iter()
            .map(entry_from_wire)
            .collect::<Result<_, _>>()?,
    })
}

pub type AppendReply = Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>;

pub fn encode_reply(reply: &AppendReply) -> Result<Vec<u8>, WireError> {
    let mut wire = WireReply::default();
    match reply {
        Ok(AppendEntriesResponse::Success) => wire.success = true,
        Ok(AppendEntriesResponse::PartialSuccess(matching)) => {
            wire.partial = Some(WirePartial {
                matching: matching.as_ref().map(log_id_to_wire),
            })
        }
        Ok(AppendEntriesResponse::Conflict) => wire.conflict = true,
        Ok(AppendEntriesResponse::HigherVote(vote)) => wire.higher_vote = Some(vote_to_wire(vote)),
        Err(error) => wire.error_json = serde_json::to_vec(error)?,
    }
    Ok(wire.encode_to_vec())
}

pub fn decode_reply(bytes: &[u8]) -> Result<AppendReply, WireError> {
    let wire = WireReply::decode(bytes)?;
    Ok(if wire.success {
        Ok(AppendEntriesResponse::Success)
    } else if let Some(partial) = wire.partial {
        Ok(AppendEntriesResponse::PartialSuccess(
            partial.matching.map(log_id_from_wire),
        ))
    } else if wire.conflict {
        Ok(AppendEntriesResponse::Conflict)
    } else if let Some(vote) = wire.higher_vote {
        Ok(AppendEntriesResponse::HigherVote(vote_from_wire(vote)))
    } else if !wire.error_json.is_empty() {
        Err(serde_json::from_slice(&wire.error_json)?)
    } else {
        return Err(WireError::Missing("the answer"));
    })
}

/// A follower's answer to one AppendEntries of a stream: exactly one field
/// is set, or none (it matches nothing yet).
#[derive(Clone, Copy, PartialEq, prost::Message)]
struct WireStreamReply {
    /// How far the follower's log now matches the leader's.
    #[prost(message, optional, tag = "1")]
    matched: Option<WireLogId>,
    /// Its log does not hold the request's previous entry.
    #[prost(message, optional, tag = "2")]
    conflict: Option<WireLogId>,
    #[prost(message, optional, tag = "3")]
    higher_vote: Option<WireVote>,
}

pub fn encode_stream_reply(reply: &StreamAppendResult<TypeConfig>) -> Vec<u8> {
    let mut wire = WireStreamReply::default();
    match reply {
        Ok(matched) => wire.matched = matched.as_ref().map(log_id_to_wire),
        Err(StreamAppendError::Conflict(at)) => wire.conflict = Some(log_id_to_wire(at)),
        Err(StreamAppendError::HigherVote(vote)) => wire.higher_vote = Some(vote_to_wire(vote)),
    }
    wire.encode_to_vec()
}

pub fn decode_stream_reply(bytes: &[u8]) -> Result<StreamAppendResult<TypeConfig>, WireError> {
    let wire = WireStreamReply::decode(bytes)?;
    Ok(if let Some(at) = wire.conflict {
        Err(StreamAppendError::Conflict(log_id_from_wire(at)))
    } else if let Some(vote) = wire.higher_vote {
        Err(StreamAppendError::HigherVote(vote_from_wire(vote)))
    } else {
        Ok(wire.matched.map(log_id_from_wire))
    })
}

#[cfg(test)]
#[path = "wire/tests.rs"]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use openraft::{BasicNode, Membership, error::Fatal};
use shoal_api::pb::{Config, ConfigSpec, Meta};

use super::*;
use crate::store::Batch;

fn proposal(writes: usize) -> Proposal {
    let batches = (0..writes)
        .map(|i| {
            let mut batch = Batch::default();
            batch.put_config(Config {
                meta: Some(Meta {
                    id: format!("c{i}"),
                    ..Default::default()
                }),
                spec: Some(ConfigSpec {
                    name: format!("c{i}"),
                    data: vec![b'v'; 256],
                    ..Default::default()
                }),
            });
            batch.into_proto()
        })
        .collect();
    Proposal { batches }
}

fn id(term: u64, node: u64, index: u64) -> LogId {
    crate::raft::log_id(term, node, index)
}

fn membership() -> Membership<u64, BasicNode> {
    let nodes: BTreeMap<u64, BasicNode> = [
        (1, BasicNode::new("127.0.0.1:1")),
        (2, BasicNode::new("127.0.0.2:2")),
        (3, BasicNode::new("127.0.0.3:3")),
    ]
    .into();
    Membership::new(vec![BTreeSet::from([1, 2])], nodes).unwrap()
}

fn every_kind_of_entry() -> Vec<Entry> {
    vec![
        Entry {
            log_id: id(3, 1, 10),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: id(3, 1, 11),
            payload: EntryPayload::Normal(Payload::new(proposal(5))),
        },
        // A proposal with no batches is still Normal, not Blank.
        Entry {
            log_id: id(3, 1, 12),
            payload: EntryPayload::Normal(Payload::new(Proposal::default())),
        },
        Entry {
            log_id: id(4, 2, 13),
            payload: EntryPayload::Membership(membership()),
        },
    ]
}

#[test]
fn entries_round_trip() {
    for entry in every_kind_of_entry() {
        let mut buf = b"header".to_vec();
        encode_entry(&entry, &mut buf).unwrap();
        assert_eq!(buf[6], ENTRY_FORMAT);
        assert_eq!(decode_entry(&buf[6..]).unwrap(), entry);
    }
}

#[test]
fn the_hand_assembled_encoding_is_what_protobuf_decodes() {
    // The entry written in pieces (head, then the borrowed proposal) equals
    // the one message protobuf would write for the same fields.
    // One proposal for both sides: a batch stamps its objects with the
    // time it is made, so two calls a millisecond apart differ.
    let proposal = proposal(5);
    let entry = Entry {
        log_id: id(3, 1, 11),
        payload: EntryPayload::Normal(Payload::new(proposal.clone())),
    };
    let mut buf = Vec::new();
    encode_entry(&entry, &mut buf).unwrap();
    let whole = WireEntry {
        log_id: Some(log_id_to_wire(&entry.log_id)),
        proposal: Some(proposal),
        membership_json: Vec::new(),
    };
    assert_eq!(&buf[1..], whole.encode_to_vec().as_slice());
}

#[test]
fn log_records_written_as_json_before_are_read() {
    // What managers before the binary format wrote (openraft's serde,
    // the proposal as base64 of its protobuf).
    for entry in every_kind_of_entry() {
        let json = serde_json::to_vec(&entry).unwrap();
        assert_eq!(json[0], b'{');
        assert_eq!(decode_entry(&json).unwrap(), entry);
    }
}

#[test]
fn bad_records_are_refused_by_name() {
    assert!(matches!(decode_entry(&[]), Err(WireError::Empty)));
    assert!(matches!(
        decode_entry(&[7, 1, 2]),
        Err(WireError::Format(7))
    ));
    let e = decode_entry(&[ENTRY_FORMAT, 0xff, 0xff]).unwrap_err();
    assert!(e.to_string().starts_with("not protobuf"), "{e}");
    // An entry without its log id.
    let e = decode_entry(&[ENTRY_FORMAT]).unwrap_err();
    assert_eq!(e.to_string(), "an entry's log id is missing");
}

#[test]
fn append_entries_round_trip() {
    let mut vote = Vote::new(7, 2);
    vote.committed = true;
    for (prev, commit) in [(None, None), (Some(id(6, 1, 9)), Some(id(6, 1, 8)))] {
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: prev,
            entries: every_kind_of_entry(),
            leader_commit: commit,
        };
        let back = decode_append(&encode_append(&rpc).unwrap()).unwrap();
        assert_eq!(back.vote, rpc.vote);
        assert_eq!(back.prev_log_id, rpc.prev_log_id);
        assert_eq!(back.leader_commit, rpc.leader_commit);
        assert_eq!(back.entries, rpc.entries);
    }
    // A heartbeat: no entries.
    let heartbeat = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new(1, 1),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let back = decode_append(&encode_append(&heartbeat).unwrap()).unwrap();
    assert!(back.entries.is_empty());
    assert_eq!(back.vote, heartbeat.vote);
    assert!(decode_append(&[]).is_err(), "no vote");
}

#[test]
fn the_binary_form_is_smaller_than_json() {
    let rpc = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new(1, 1),
        prev_log_id: None,
        entries: vec![Entry {
            log_id: id(1, 1, 1),
            payload: EntryPayload::Normal(Payload::new(proposal(64))),
        }],
        leader_commit: None,
    };
    let binary = encode_append(&rpc).unwrap().len();
    let json = serde_json::to_vec(&rpc).unwrap().len();
    assert!(binary * 5 < json * 4, "binary {binary} bytes, JSON {json}");
}

#[test]
fn every_answer_round_trips() {
    let mut vote = Vote::new(9, 3);
    vote.committed = true;
    let answers: Vec<AppendReply> = vec![
        Ok(AppendEntriesResponse::Success),
        Ok(AppendEntriesResponse::PartialSuccess(None)),
        Ok(AppendEntriesResponse::PartialSuccess(Some(id(2, 1, 5)))),
        Ok(AppendEntriesResponse::Conflict),
        Ok(AppendEntriesResponse::HigherVote(vote)),
        Err(RaftError::Fatal(Fatal::Stopped)),
    ];
    for answer in answers {
        let back = decode_reply(&encode_reply(&answer).unwrap()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{answer:?}"));
    }
    let e = decode_reply(&[]).unwrap_err();
    assert_eq!(e.to_string(), "the answer is missing");
}

#[test]
fn every_stream_answer_round_trips() {
    use openraft::raft::StreamAppendError;
    let mut vote = Vote::new(9, 3);
    vote.committed = true;
    let answers: Vec<openraft::raft::StreamAppendResult<TypeConfig>> = vec![
        Ok(None),
        Ok(Some(id(2, 1, 5))),
        Err(StreamAppendError::Conflict(id(2, 1, 4))),
        Err(StreamAppendError::HigherVote(vote)),
    ];
    for answer in answers {
        let back = decode_stream_reply(&encode_stream_reply(&answer)).unwrap();
        assert_eq!(back, answer);
    }
    assert!(decode_stream_reply(&[0xff]).is_err(), "garbage is refused");
}

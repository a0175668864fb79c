//! Sizes, transports and `ANY`: truncation to whole records over UDP, all
//! of them over TCP, RFC 7766 framing and its bounds on a real loopback
//! listener, RFC 8482's answer to `ANY`.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Edns, Message, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use shoal_api::pb::{AssignmentSet, Meta, ServiceRecord, Task, TaskEndpoint};

use super::{
    DnsServer, Records, Reply, Transport,
    message::UDP_LIMIT,
    tcp::{MAX_TCP_CONNECTIONS, TCP_IDLE},
    tests::loopback_sockets,
};

const ASKER: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// `web` with `replicas` running tasks (198.18.0.x), VIP 198.18.1.2; the
/// asker (127.0.0.1) is one of this node's tasks on the same network.
fn records(replicas: usize) -> Records {
    let endpoint = |task: String, service: &str, addr: String| TaskEndpoint {
        network_id: "n".into(),
        task_id: task,
        service_id: service.into(),
        addr,
        node_addr: String::new(),
        running: true,
        draining: false,
    };
    let mut endpoints = vec![endpoint("client".into(), "c", ASKER.to_string())];
    endpoints.extend(
        (0..replicas).map(|i| endpoint(format!("w{i}"), "s", format!("198.18.0.{}", i + 2))),
    );
    Records::from_assignments(&AssignmentSet {
        tasks: vec![Task {
            meta: Some(Meta {
                id: "client".into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        endpoints,
        services: vec![ServiceRecord {
            service_id: "s".into(),
            network_id: "n".into(),
            names: vec!["web".into()],
            vip: "198.18.1.2".into(),
        }],
        ..Default::default()
    })
}

fn server(replicas: usize) -> Arc<DnsServer> {
    let s = DnsServer::new(vec![]);
    s.update(records(replicas));
    s
}

fn query(name: &str, kind: RecordType, id: u16, edns: Option<u16>) -> Vec<u8> {
    let mut q = Message::query();
    q.metadata.id = id;
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        q.set_edns(e);
    }
    q.to_vec().unwrap()
}

fn ask(s: &DnsServer, bytes: &[u8], transport: Transport) -> (Message, usize) {
    match s.answer_over(bytes, ASKER, "n", transport) {
        Reply::Send(answer) => (Message::from_vec(&answer).unwrap(), answer.len()),
        other => panic!("{other:?}"),
    }
}

fn addresses(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[test]
fn udp_without_edns_carries_as_many_whole_records_as_fit_and_tc() {
    let s = server(60);
    let (m, len) = ask(
        &s,
        &query("tasks.web", RecordType::A, 9, None),
        Transport::Udp,
    );
    assert!(m.metadata.truncation, "TC set");
    assert!(len <= UDP_LIMIT, "{len} bytes");
    // One more A record (16 bytes, the name compressed) would not fit.
    assert!(
        len + 16 > UDP_LIMIT,
        "{} records in {len} bytes",
        m.answers.len()
    );
    assert_eq!(m.answers.len(), 30);
    // The cut is whole records of the asked set, no repeats.
    let mut got = addresses(&m);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 30);
    // What fits is not cut.
    let (small, _) = ask(&s, &query("web", RecordType::A, 9, None), Transport::Udp);
    assert!(!small.metadata.truncation);
    assert_eq!(small.answers.len(), 1);
}

#[test]
fn edns_raises_the_udp_bound_to_the_askers_size_and_tcp_gets_everything() {
    let s = server(60);
    let (m, _) = ask(
        &s,
        &query("tasks.web", RecordType::A, 1, Some(1232)),
        Transport::Udp,
    );
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
    assert!(m.edns.is_some(), "an OPT record answers an OPT record");
    // An asker's size below 512 means 512 (RFC 6891 §6.2.5).
    let (m, len) = ask(
        &s,
        &query("tasks.web", RecordType::A, 1, Some(100)),
        Transport::Udp,
    );
    assert!(m.metadata.truncation && len <= UDP_LIMIT && len > 400);
    // 250 tasks do not fit 1232 bytes: cut there, whole over TCP.
    let s = server(250);
    let (m, len) = ask(
        &s,
        &query("tasks.web", RecordType::A, 1, Some(1232)),
        Transport::Udp,
    );
    assert!(m.metadata.truncation && len <= 1232 && len + 16 > 1232);
    let (m, _) = ask(
        &s,
        &query("tasks.web", RecordType::A, 1, None),
        Transport::Tcp,
    );
    assert!(!m.metadata.truncation);
    assert_eq!(addresses(&m).len(), 250);
}

#[test]
fn any_gets_rfc8482s_hinfo_for_names_we_hold() {
    let s = server(60);
    for name in ["web", "tasks.web"] {
        let (m, _) = ask(&s, &query(name, RecordType::ANY, 3, None), Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(!m.metadata.truncation, "{name}");
        let [record] = m.answers.as_slice() else {
            panic!("{name}: {:?}", m.answers);
        };
        match &record.data {
            RData::HINFO(h) => {
                assert_eq!(&*h.cpu, b"RFC8482");
                assert_eq!(&*h.os, b"");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(record.name.to_ascii(), format!("{name}."));
    }
    // Names that are not there stay NXDOMAIN; others go upstream as asked.
    let (m, _) = ask(
        &s,
        &query("nosuch", RecordType::ANY, 3, None),
        Transport::Udp,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        s.answer(&query("example.test", RecordType::ANY, 3, None), ASKER, "n"),
        Reply::Forward
    );
}

/// A listening server (UDP and TCP on one loopback port) and its address.
fn listening(replicas: usize) -> (Arc<DnsServer>, std::net::SocketAddr) {
    let s = server(replicas);
    let (udp, tcp) = loopback_sockets();
    let at = udp.local_addr().unwrap();
    s.listen_socket("n", udp, tcp).unwrap();
    (s, at)
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = (message.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(message);
    out
}

fn read_answer(stream: &mut TcpStream) -> Message {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut body).unwrap();
    Message::from_vec(&body).unwrap()
}

/// Whether the server closed `stream` within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_answers_pipelined_queries_on_one_connection_untruncated() {
    let (s, at) = listening(60);
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(at).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // Three queries in one write, no EDNS: all answered, each whole.
        let mut burst = framed(&query("tasks.web", RecordType::A, 1, None));
        burst.extend(framed(&query("web", RecordType::ANY, 2, None)));
        burst.extend(framed(&query("nosuch", RecordType::A, 3, None)));
        stream.write_all(&burst).unwrap();
        let mut by_id: Vec<Message> = (0..3).map(|_| read_answer(&mut stream)).collect();
        by_id.sort_by_key(|m| m.metadata.id);
        assert_eq!(addresses(&by_id[0]).len(), 60);
        assert!(!by_id[0].metadata.truncation);
        assert!(matches!(by_id[1].answers[0].data, RData::HINFO(_)));
        assert_eq!(by_id[2].metadata.response_code, ResponseCode::NXDomain);
        // The connection stays open for more.
        stream
            .write_all(&framed(&query("web", RecordType::A, 4, None)))
            .unwrap();
        assert_eq!(read_answer(&mut stream).metadata.id, 4);
    })
    .await
    .unwrap();
    s.stop("n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_closes_on_bad_framing_garbage_stalls_and_strangers() {
    let (s, at) = listening(3);
    tokio::task::spawn_blocking(move || {
        let quick = Duration::from_secs(2);
        // A length shorter than a header.
        let mut short = TcpStream::connect(at).unwrap();
        short.write_all(&[0, 5, 1, 2, 3, 4, 5]).unwrap();
        assert!(closed_within(&mut short, quick), "short length");
        // A length beyond what a query may be.
        let mut long = TcpStream::connect(at).unwrap();
        long.write_all(&[0xff, 0xff, 0, 0]).unwrap();
        assert!(closed_within(&mut long, quick), "long length");
        // A header promising a question that is not there: FORMERR, and
        // the framing is intact, so the connection goes on.
        let mut formerr = TcpStream::connect(at).unwrap();
        formerr
            .write_all(&framed(&[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]))
            .unwrap();
        let mut len = [0u8; 2];
        formerr.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        formerr.read_exact(&mut body).unwrap();
        assert_eq!((&body[..2], body[3] & 0x0f), (&[0x12, 0x34][..], 1));
        // A response in place of a query: closed.
        formerr
            .write_all(&framed(&[0, 1, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
            .unwrap();
        assert!(closed_within(&mut formerr, quick), "a response");
        // Garbage of every length never takes the server down.
        for seed in 0u32..200 {
            let bytes: Vec<u8> = (0..(12 + seed % 80))
                .map(|i| (seed.wrapping_mul(31).wrapping_add(i * 17) % 251) as u8)
                .collect();
            let mut g = TcpStream::connect(at).unwrap();
            let _ = g.write_all(&framed(&bytes));
        }
        // Stalls: half a length, half a message, or nothing at all.
        let started = Instant::now();
        let mut stalls: Vec<TcpStream> = [&[0u8][..], &[0, 40, 1, 2, 3], &[]]
            .iter()
            .map(|sent| {
                let mut c = TcpStream::connect(at).unwrap();
                c.write_all(sent).unwrap();
                c
            })
            .collect();
        for c in &mut stalls {
            assert!(closed_within(c, TCP_IDLE * 4), "stalled");
        }
        assert!(started.elapsed() < TCP_IDLE * 4);
    })
    .await
    .unwrap();
    // A client that is not one of this node's tasks: closed, counted.
    let stranger = tokio::net::TcpSocket::new_v4().unwrap();
    stranger.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut stranger = stranger.connect(at).await.unwrap().into_std().unwrap();
    stranger.set_nonblocking(false).unwrap();
    let stranger_refused = tokio::task::spawn_blocking(move || {
        let _ = stranger.write_all(&framed(&query("web", RecordType::A, 5, None)));
        closed_within(&mut stranger, Duration::from_secs(2))
    })
    .await
    .unwrap();
    assert!(stranger_refused, "a stranger's connection is closed");
    assert!(s.stats().refused >= 1);
    // And the server still answers.
    let answer = tokio::task::spawn_blocking(move || {
        let mut c = TcpStream::connect(at).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(&framed(&query("web", RecordType::A, 6, None)))
            .unwrap();
        read_answer(&mut c)
    })
    .await
    .unwrap();
    assert_eq!(answer.answers.len(), 1);
    s.stop("n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_bounded() {
    let (s, at) = listening(3);
    tokio::task::spawn_blocking(move || {
        let mut held: Vec<TcpStream> = (0..MAX_TCP_CONNECTIONS)
            .map(|_| TcpStream::connect(at).unwrap())
            .collect();
        // Each is served (so each holds its slot by now).
        for (i, c) in held.iter_mut().enumerate() {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(&framed(&query("web", RecordType::A, i as u16, None)))
                .unwrap();
            assert_eq!(read_answer(c).metadata.id, i as u16);
        }
        let mut one_more = TcpStream::connect(at).unwrap();
        assert!(
            closed_within(&mut one_more, Duration::from_secs(2)),
            "past the bound"
        );
        // A closed one frees its slot.
        drop(held.pop());
        std::thread::sleep(Duration::from_millis(100));
        let mut again = TcpStream::connect(at).unwrap();
        again
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        again
            .write_all(&framed(&query("web", RecordType::A, 7, None)))
            .unwrap();
        assert_eq!(read_answer(&mut again).metadata.id, 7);
    })
    .await
    .unwrap();
    s.stop("n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_udp_gets_every_answer_batched_or_not() {
    // One shared socket a call per query, batched, batched with a helper
    // loop, and a SO_REUSEPORT group of two.
    let max = super::MAX_UDP_BATCH;
    for (batch, sockets, loops) in [(1, 1, 1), (max, 1, 1), (max, 1, 2), (max, 2, 2)] {
        let s = DnsServer::with_udp(vec![], batch, Some(loops));
        s.update(records(60));
        let group = super::bind_udp_group("127.0.0.1:0".parse().unwrap(), sockets).unwrap();
        let at = group[0].local_addr().unwrap();
        assert!(group.iter().all(|g| g.local_addr().unwrap() == at));
        let tcp = std::net::TcpListener::bind(at).unwrap();
        s.listen_sockets("n", group, tcp).unwrap();
        let answered = tokio::task::spawn_blocking(move || {
            let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            // Long enough for a stalled server on a loaded machine; a lost
            // answer still ends the loop, and the count below says so.
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            // The plain path (A), the general one (AAAA, a cut answer).
            let asked = [
                ("web", RecordType::A),
                ("tasks.web", RecordType::A),
                ("web", RecordType::AAAA),
                ("nosuch", RecordType::A),
            ];
            let total = 400u16;
            // At most WINDOW queries outstanding: the next goes out as an
            // answer comes back. Loss-free however slowly a loaded machine
            // schedules the server (a paced burst of 400 overflowed its
            // socket buffer under load and lost 48), while a window still
            // lets batches form.
            const WINDOW: u16 = 32;
            let send = |id: u16| {
                let (name, kind) = asked[usize::from(id) % asked.len()];
                client.send_to(&query(name, kind, id, None), at).unwrap();
            };
            let mut sent = 0u16;
            while sent < WINDOW {
                send(sent);
                sent += 1;
            }
            let mut seen = vec![false; usize::from(total)];
            let mut count = 0u16;
            let mut buf = [0u8; 1024];
            while let Ok(len) = client.recv(&mut buf) {
                let m = Message::from_vec(&buf[..len]).unwrap();
                let id = usize::from(m.metadata.id);
                assert!(!seen[id], "answered twice: {id}");
                seen[id] = true;
                count += 1;
                let expect = match id % 4 {
                    0 => (ResponseCode::NoError, 1, false),
                    1 => (ResponseCode::NoError, 30, true),
                    2 => (ResponseCode::NoError, 0, false),
                    _ => (ResponseCode::NXDomain, 0, false),
                };
                assert_eq!(
                    (
                        m.metadata.response_code,
                        m.answers.len(),
                        m.metadata.truncation
                    ),
                    expect,
                    "query {id}"
                );
                if sent < total {
                    send(sent);
                    sent += 1;
                } else if count == total {
                    // Every query answered: wait briefly for a duplicate.
                    client
                        .set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                }
            }
            seen.iter().filter(|s| **s).count()
        })
        .await
        .unwrap();
        assert_eq!(answered, 400, "batch {batch}, {sockets} sockets");
        // Every datagram counted once; a call per datagram when unbatched.
        let (receives, datagrams) = s.udp_batching();
        assert_eq!(datagrams, 400, "batch {batch}, {sockets} sockets");
        assert!((1..=400).contains(&receives), "{receives} receive calls");
        if batch == 1 {
            assert_eq!(receives, 400);
        }
        // Codes tallied per batch add up to the answers sent.
        assert_eq!(
            s.answers_by_code(),
            vec![("NOERROR", 300), ("NXDOMAIN", 100)],
            "batch {batch}, {sockets} sockets"
        );
        s.stop("n");
    }
}

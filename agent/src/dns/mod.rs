//! The agent's DNS server: one per agent, listening on the gateway address
//! of every network its containers use (each container's resolv.conf names
//! it). It answers service names from the records the manager pushes and
//! forwards every other name to the node's upstream resolvers, or to the
//! asking container's own (its service's `--dns` servers). Messages are
//! parsed and written with hickory-proto; a malformed query gets FORMERR
//! (or is dropped when not even its header can be read), never a panic.
//!
//! It answers this node's own tasks only: a datagram from any other address
//! gets no answer at all (not even REFUSED: a spoofed asker would turn the
//! server into a reflector). At most [`MAX_UPSTREAM_IN_FLIGHT`] forwarded
//! queries wait on upstream resolvers at once; past that, a query gets
//! SERVFAIL at once instead of piling up tasks and sockets. Both are
//! counted ([`DnsServer::stats`]) and logged.

mod answer_codes;
mod message;
/// Public for the fuzz target, which runs it beside the general path.
pub mod plain_a;
pub mod records;
mod tcp;
#[cfg(test)]
mod transport_tests;
mod udp;
mod upstream;

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{DNSClass, RData, Record, RecordType, rdata::A},
};
use tokio::sync::OwnedSemaphorePermit;

pub use message::Transport;
use message::{encode, error_reply, reply_code, response_to, rfc8482_hinfo, size_limit};
pub use records::{Entry, Lookup, Records, Resolved};
pub use udp::MAX_BATCH as MAX_UDP_BATCH;

/// How long an upstream resolver has to answer before the next is tried.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwarded queries waiting on upstream resolvers at once. Each holds a
/// socket and a task for up to [`UPSTREAM_TIMEOUT`] per upstream: a flood
/// of names upstream does not answer would otherwise hold thousands.
pub const MAX_UPSTREAM_IN_FLIGHT: usize = 256;
/// The least time between two log lines about refused or shed queries.
const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);

/// What to do with one received datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Send(Vec<u8>),
    Forward,
    Drop,
    /// Not from one of this node's tasks: no answer, counted.
    Refuse,
}

/// What answers on one network's address: threads on the UDP socket, a
/// task accepting TCP connections.
struct Listener {
    at: SocketAddr,
    sockets: Vec<std::net::UdpSocket>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Each receive loop's own counts.
    counters: Vec<Arc<udp::LoopCounters>>,
    tcp: tcp::Acceptor,
}

impl Listener {
    fn alive(&self) -> bool {
        self.threads.iter().any(|t| !t.is_finished()) && self.tcp.alive()
    }

    /// Stops its threads: shutting the socket down wakes them from recv.
    /// TCP stops accepting; its open connections end with their idle timeout.
    fn shut(self) {
        self.tcp.stop();
        self.stop.store(true, Ordering::Relaxed);
        // Helpers asleep until the first loop wakes them: woken to stop.
        for thread in &self.threads {
            thread.thread().unpark();
        }
        for socket in &self.sockets {
            // SAFETY: shutdown(2) on a socket this listener owns; it only
            // ends the blocked receives (the fd is closed when the last
            // clone drops).
            unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(socket), libc::SHUT_RDWR) };
        }
    }
}

pub struct DnsServer {
    records: RwLock<Arc<Records>>,
    /// Bumped by each [`Self::update`]: the receive loops keep their own
    /// `Arc` of the records and take the lock only when this moved (a
    /// lock and a shared count touched per query cost both cores).
    generation: AtomicU64,
    upstreams: Vec<SocketAddr>,
    listeners: Mutex<HashMap<String, Listener>>,
    /// Rotates multi-address answers (round-robin across queries) on the
    /// general path; the receive loops keep their own.
    turn: AtomicUsize,
    /// Datagrams taken per receive call ([`udp::MAX_BATCH`] at most).
    udp_batch: usize,
    /// Receive loops on one shared UDP socket (None: one per two cores, 1
    /// to 4): the first waits for datagrams, the others help with backlogs.
    udp_loops: Option<usize>,
    /// Permits for forwarded queries in flight.
    upstream_slots: Arc<tokio::sync::Semaphore>,
    /// Permits for open TCP connections.
    tcp_slots: Arc<tokio::sync::Semaphore>,
    /// Datagrams from askers that are not this node's tasks (unanswered).
    refused: AtomicU64,
    /// Forwarded queries answered SERVFAIL because too many were in flight.
    shed: AtomicU64,
    /// Answers sent, by response code.
    answers: answer_codes::AnswerCodes,
    /// When refusals and shed queries were last logged, and their totals then.
    logged: Mutex<(Option<Instant>, DnsStats)>,
}

/// What the DNS server turned away since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Datagrams from an address that is not one of this node's tasks.
    pub refused: u64,
    /// Queries for upstream answered SERVFAIL: too many in flight.
    pub shed: u64,
}

impl DnsServer {
    pub fn new(upstreams: Vec<SocketAddr>) -> Arc<Self> {
        Self::with_udp_batch(upstreams, udp::MAX_BATCH)
    }

    /// A server taking at most `batch` datagrams per receive call (1: one
    /// `recvmmsg` and one `sendmmsg` per query; the bench compares).
    pub fn with_udp_batch(upstreams: Vec<SocketAddr>, batch: usize) -> Arc<Self> {
        Self::with_udp(upstreams, batch, None)
    }

    /// [`Self::with_udp_batch`] with `loops` receive loops on a shared
    /// socket (None: one per two cores the process may run on, 1 to 4).
    pub fn with_udp(upstreams: Vec<SocketAddr>, batch: usize, loops: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            udp_batch: batch,
            udp_loops: loops.map(|n| n.max(1)),
            records: RwLock::default(),
            generation: AtomicU64::new(0),
            upstreams,
            listeners: Mutex::default(),
            turn: AtomicUsize::new(0),
            upstream_slots: Arc::new(tokio::sync::Semaphore::new(MAX_UPSTREAM_IN_FLIGHT)),
            tcp_slots: Arc::new(tokio::sync::Semaphore::new(tcp::MAX_TCP_CONNECTIONS)),
            refused: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            answers: Default::default(),
            logged: Mutex::default(),
        })
    }

    /// What it turned away since it started.
    pub fn stats(&self) -> DnsStats {
        DnsStats {
            refused: self.refused.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
        }
    }

    /// Answers sent since it started, by response code (`NOERROR`, …).
    pub fn answers_by_code(&self) -> Vec<(&'static str, u64)> {
        self.answers.counts()
    }

    /// A log line with the totals when they grew, at most every
    /// [`REFUSAL_LOG_PERIOD`] (a flood must not flood the log too).
    fn log_turned_away(&self) {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.0.is_some_and(|at| at.elapsed() < REFUSAL_LOG_PERIOD) {
            return;
        }
        let now = self.stats();
        if now != logged.1 {
            tracing::warn!(
                refused = now.refused,
                shed = now.shed,
                "DNS: queries turned away (refused: not from this node's tasks; \
                 shed: more than {MAX_UPSTREAM_IN_FLIGHT} waiting on upstream)"
            );
            *logged = (Some(Instant::now()), now);
        }
    }

    pub fn update(&self, records: Records) {
        *self.records.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(records);
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn records(&self) -> Arc<Records> {
        self.records
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serves `network_id`'s containers at `addr`:53 (once; again after
    /// `stop`). The address must be on one of this namespace's links.
    pub async fn listen(self: &Arc<Self>, network_id: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
        self.listen_on(network_id, SocketAddr::from((addr, 53)))
            .await
    }

    pub async fn listen_on(
        self: &Arc<Self>,
        network_id: &str,
        at: SocketAddr,
    ) -> anyhow::Result<()> {
        {
            let listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
            if listeners
                .get(network_id)
                .is_some_and(|l| l.at == at && l.alive())
            {
                return Ok(());
            }
        }
        let socket = std::net::UdpSocket::bind(at)
            .map_err(|e| anyhow::anyhow!("DNS: binding {at} (UDP): {e}"))?;
        let tcp = std::net::TcpListener::bind(at)
            .map_err(|e| anyhow::anyhow!("DNS: binding {at} (TCP): {e}"))?;
        self.listen_socket(network_id, socket, tcp)
    }

    /// Serves `network_id` on sockets bound elsewhere (in another network
    /// namespace, say: a socket keeps the namespace it was made in): UDP on
    /// `socket`, TCP on `tcp` (the same address: RFC 7766 §5 makes TCP a
    /// must wherever UDP is served).
    ///
    /// UDP is answered by plain threads on the socket (see [`udp::Role`]);
    /// TCP and forwarding run on the tokio runtime that called this.
    pub fn listen_socket(
        self: &Arc<Self>,
        network_id: &str,
        socket: std::net::UdpSocket,
        tcp: std::net::TcpListener,
    ) -> anyhow::Result<()> {
        self.listen_sockets(network_id, vec![socket], tcp)
    }

    /// [`Self::listen_socket`] with a UDP socket per receive loop (a
    /// [`bind_udp_group`]): one socket is shared by [`Self::with_udp`]'s loops.
    pub fn listen_sockets(
        self: &Arc<Self>,
        network_id: &str,
        sockets: Vec<std::net::UdpSocket>,
        tcp: std::net::TcpListener,
    ) -> anyhow::Result<()> {
        let Some(first) = sockets.first() else {
            anyhow::bail!("DNS: no UDP socket to serve");
        };
        let at = first.local_addr()?;
        if at.is_ipv6() {
            anyhow::bail!("DNS listens on IPv4 only");
        }
        let tcp = tcp::Acceptor::start(self.clone(), tcp, network_id)?;
        let runtime = tokio::runtime::Handle::current();
        let stop = Arc::new(AtomicBool::new(false));
        // One loop per two cores: the askers are this node's containers,
        // which need the other cores, and one loop with large batches spent
        // 15–30% less CPU per query than two on this 2-core machine under
        // dnsperf (bench/RESULTS.md, dns 2026-11-30 evening).
        let loops = match sockets.len() {
            1 => self.udp_loops.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 4))
            }),
            n => n,
        };
        // On one shared socket, loop 0 waits and the others help when it
        // finds a backlog ([`udp::Role`]); each socket of a group has a
        // loop of its own that waits.
        let shared = sockets.len() == 1;
        let mut threads = Vec::new();
        let mut counters = Vec::new();
        let mut helpers = Vec::new();
        for i in (0..loops).rev() {
            let socket = sockets[i % sockets.len()].try_clone()?;
            socket.set_nonblocking(false)?;
            let (this, stop) = (self.clone(), stop.clone());
            let (runtime, network) = (runtime.clone(), network_id.to_owned());
            let mine = Arc::new(udp::LoopCounters::default());
            counters.push(mine.clone());
            let role = match (shared, i) {
                (true, 0) => udp::Role::First(std::mem::take(&mut helpers)),
                (true, _) => udp::Role::Helper,
                (false, _) => udp::Role::First(Vec::new()),
            };
            let helps = matches!(role, udp::Role::Helper);
            let thread = std::thread::Builder::new()
                .name(format!("dns-{i}"))
                .spawn(move || udp::serve(this, socket, network, stop, runtime, mine, role))?;
            if helps {
                helpers.push(thread.thread().clone());
            }
            threads.push(thread);
        }
        let listener = Listener {
            at,
            sockets,
            stop,
            threads,
            counters,
            tcp,
        };
        if let Some(old) = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(network_id.to_owned(), listener)
        {
            old.shut();
        }
        tracing::info!(network = network_id, %at, "DNS listening");
        Ok(())
    }

    pub fn stop(&self, network_id: &str) {
        if let Some(listener) = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(network_id)
        {
            listener.shut();
        }
    }

    /// UDP receive calls that returned datagrams and the datagrams they
    /// took, over the listeners open now: their ratio is the mean batch
    /// `recvmmsg` found queued (1 when the loops keep up one by one).
    pub fn udp_batching(&self) -> (u64, u64) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flat_map(|l| &l.counters)
            .map(|c| c.read())
            .fold((0, 0), |(r, d), (r2, d2)| (r + r2, d + d2))
    }

    /// The networks it listens for.
    pub fn listening(&self) -> Vec<String> {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// A permit to forward one more query upstream, or, when
    /// [`MAX_UPSTREAM_IN_FLIGHT`] already wait, the SERVFAIL to send at
    /// once (counted as shed and as sent).
    fn forward_slot(&self, query: &[u8]) -> Result<OwnedSemaphorePermit, Option<Vec<u8>>> {
        self.upstream_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                self.shed.fetch_add(1, Ordering::Relaxed);
                self.log_turned_away();
                let answer = error_reply(query, ResponseCode::ServFail);
                if let Some(answer) = &answer {
                    self.answers.count(answer);
                }
                answer
            })
    }

    /// Asks `asker`'s upstreams (its service's `--dns` servers, else the
    /// node's): the answer to send, SERVFAIL when none answered, counted.
    async fn forwarded(
        self: Arc<Self>,
        query: Vec<u8>,
        asker: Ipv4Addr,
        transport: Transport,
        permit: OwnedSemaphorePermit,
    ) -> Option<Vec<u8>> {
        let upstreams = match self.records().upstreams_of(asker) {
            Some(own) => own.to_vec(),
            None => self.upstreams.clone(),
        };
        let answer = match upstream::forward(&query, &upstreams, transport).await {
            Some(answer) => Some(answer),
            None => error_reply(&query, ResponseCode::ServFail),
        };
        drop(permit);
        if let Some(answer) = &answer {
            self.answers.count(answer);
        }
        answer
    }

    /// The answer to one datagram from `asker`, received on `network`'s
    /// address. A container's own networks scope the names it sees (the
    /// receiving network's if its address is not listed on any); an asker
    /// that is not one of this node's tasks gets nothing.
    pub fn answer(&self, datagram: &[u8], asker: Ipv4Addr, network: &str) -> Reply {
        self.answer_over(datagram, asker, network, Transport::Udp)
    }

    /// [`Self::answer`] for a query that came over `transport`: the same
    /// answer, within that transport's size (TCP's is never cut below
    /// 65535 bytes).
    pub fn answer_over(
        &self,
        datagram: &[u8],
        asker: Ipv4Addr,
        network: &str,
        transport: Transport,
    ) -> Reply {
        let records = self.records();
        if !records.is_local(asker) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Reply::Refuse;
        }
        let query = match Message::from_vec(datagram) {
            Ok(q) => q,
            Err(_) => {
                return match error_reply(datagram, ResponseCode::FormErr) {
                    Some(bytes) => Reply::Send(bytes),
                    None => Reply::Drop,
                };
            }
        };
        if query.metadata.message_type != MessageType::Query {
            return Reply::Drop;
        }
        let id = query.metadata.id;
        let limit = size_limit(&query, transport);
        if query.metadata.op_code != OpCode::Query {
            return reply_code(&query, id, ResponseCode::NotImp, limit);
        }
        let [question] = query.queries.as_slice() else {
            return reply_code(&query, id, ResponseCode::FormErr, limit);
        };
        let mut name = String::with_capacity(64);
        for label in question.name().iter() {
            if !name.is_empty() {
                name.push('.');
            }
            name.extend(label.iter().map(|b| b.to_ascii_lowercase() as char));
        }
        let name = name.as_str();
        let entry = match records.resolve(asker, network, name) {
            Resolved::Found(entry) => entry,
            Resolved::NoSuchName => return reply_code(&query, id, ResponseCode::NXDomain, limit),
            Resolved::Upstream => return Reply::Forward,
        };
        let mut response = response_to(&query, id, ResponseCode::NoError);
        let (kind, class) = (question.query_type(), question.query_class());
        if kind == RecordType::ANY && matches!(class, DNSClass::IN | DNSClass::ANY) {
            response.add_answer(rfc8482_hinfo(question.name().clone(), entry.ttl()));
        } else if kind == RecordType::A && class == DNSClass::IN {
            let owner = question.name().clone();
            let addrs: &[Ipv4Addr] = match entry {
                Entry::Vip(vip) => std::slice::from_ref(vip),
                Entry::Tasks(tasks) => tasks,
            };
            let start = if addrs.is_empty() {
                0
            } else {
                self.turn.fetch_add(1, Ordering::Relaxed) % addrs.len()
            };
            for addr in addrs[start..].iter().chain(&addrs[..start]) {
                response.add_answer(Record::from_rdata(
                    owner.clone(),
                    entry.ttl(),
                    RData::A(A(*addr)),
                ));
            }
        }
        encode(response, limit)
    }
}

/// `n` UDP sockets bound to `at` with `SO_REUSEPORT`: the kernel spreads
/// askers over them by flow, so that each receive loop has a queue of its
/// own rather than all contending for one socket's. Port 0: the first
/// socket's port, for all.
pub fn bind_udp_group(
    mut at: std::net::SocketAddrV4,
    n: usize,
) -> std::io::Result<Vec<std::net::UdpSocket>> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
    };
    let mut group = Vec::with_capacity(n.max(1));
    for _ in 0..n.max(1) {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        setsockopt(&fd, sockopt::ReusePort, &true)?;
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(at))?;
        let socket = std::net::UdpSocket::from(fd);
        if at.port() == 0 {
            at.set_port(socket.local_addr()?.port());
        }
        group.push(socket);
    }
    Ok(group)
}

/// The node's resolvers from `/etc/resolv.conf` (port 53).
pub fn system_upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use shoal_api::pb::{AssignmentSet, Meta, ServiceRecord, Task, TaskEndpoint};
    use tokio::net::UdpSocket;

    fn endpoint(task: &str, addr: &str) -> TaskEndpoint {
        TaskEndpoint {
            network_id: "n".into(),
            task_id: task.into(),
            service_id: "s".into(),
            addr: addr.into(),
            node_addr: String::new(),
            running: true,
            draining: false,
        }
    }

    /// Records where task `t` (at `local`) runs here and `remote` (at
    /// 198.18.1.4) on another node.
    fn records(local: &str) -> Records {
        Records::from_assignments(&AssignmentSet {
            tasks: vec![Task {
                meta: Some(Meta {
                    id: "t".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            endpoints: vec![
                endpoint("t", local),
                TaskEndpoint {
                    service_id: "other".into(),
                    ..endpoint("remote", "198.18.1.4")
                },
            ],
            services: vec![ServiceRecord {
                service_id: "s".into(),
                network_id: "n".into(),
                names: vec!["web".into()],
                vip: "198.18.1.2".into(),
            }],
            ..Default::default()
        })
    }

    /// A UDP socket and a TCP listener on the same loopback port.
    pub(super) fn loopback_sockets() -> (std::net::UdpSocket, std::net::TcpListener) {
        loop {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            if let Ok(tcp) = std::net::TcpListener::bind(udp.local_addr().unwrap()) {
                return (udp, tcp);
            }
        }
    }

    fn server() -> Arc<DnsServer> {
        let s = DnsServer::new(vec![]);
        s.update(records("198.18.1.3"));
        s
    }

    fn query(name: &str, id: u16) -> Vec<u8> {
        let mut q = Message::query();
        q.metadata.id = id;
        q.add_query(hickory_proto::op::Query::query(
            Name::from_ascii(name).unwrap(),
            RecordType::A,
        ));
        q.to_vec().unwrap()
    }

    #[test]
    fn only_this_nodes_tasks_get_answers() {
        let s = server();
        let web = query("web", 1);
        assert!(matches!(
            s.answer(&web, "198.18.1.3".parse().unwrap(), "n"),
            Reply::Send(_)
        ));
        // A task on another node, a host outside, the node itself: nothing,
        // not even for garbage, and each counted.
        for stranger in ["198.18.1.4", "192.0.2.100", "127.0.0.1"] {
            let asker = stranger.parse().unwrap();
            assert_eq!(s.answer(&web, asker, "n"), Reply::Refuse, "{stranger}");
            assert_eq!(
                s.answer(&[1, 2, 3], asker, "n"),
                Reply::Refuse,
                "{stranger}"
            );
        }
        assert_eq!(
            s.stats(),
            DnsStats {
                refused: 6,
                shed: 0
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_waiting_on_upstream_are_bounded_and_the_rest_get_servfail() {
        // An upstream that never answers: every forwarded query holds its
        // permit for the whole upstream timeout.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = DnsServer::new(vec![silent.local_addr().unwrap()]);
        s.update(records("127.0.0.1"));
        let (socket, tcp) = loopback_sockets();
        let at = socket.local_addr().unwrap();
        s.listen_socket("n", socket, tcp).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let excess = 40;
        for i in 0..MAX_UPSTREAM_IN_FLIGHT + excess {
            let name = format!("name{i}.example");
            client.send_to(&query(&name, i as u16), at).await.unwrap();
            if i % 16 == 15 {
                // Paced, so that the server's receive buffer never overflows
                // (a lost query would be neither forwarded nor shed).
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        // Well within the upstream timeout: only the excess is answered.
        let mut servfails = 0;
        let mut buf = [0u8; 512];
        while let Ok(Ok(len)) =
            tokio::time::timeout(UPSTREAM_TIMEOUT / 2, client.recv(&mut buf)).await
        {
            let reply = Message::from_vec(&buf[..len]).unwrap();
            assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
            servfails += 1;
        }
        assert_eq!(servfails, excess);
        assert_eq!(s.stats().shed, excess as u64);
        s.stop("n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_container_with_its_own_dns_servers_is_forwarded_to_them() {
        // The service's --dns server (port 53, as resolv.conf has no port;
        // root binds it, as the agent runs) answers; the node's upstream
        // would not.
        let own = std::net::UdpSocket::bind("127.53.0.1:53").unwrap();
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = DnsServer::new(vec![silent.local_addr().unwrap()]);
        let mut set = AssignmentSet {
            tasks: vec![Task {
                meta: Some(Meta {
                    id: "t".into(),
                    ..Default::default()
                }),
                spec: Some(shoal_api::pb::TaskSpec {
                    container: Some(shoal_api::pb::ContainerSpec {
                        dns_config: Some(shoal_api::pb::DnsConfig {
                            nameservers: vec!["127.53.0.1".into()],
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            endpoints: vec![endpoint("t", "127.0.0.1")],
            ..Default::default()
        };
        s.update(Records::from_assignments(&set));
        let (socket, tcp) = loopback_sockets();
        let at = socket.local_addr().unwrap();
        s.listen_socket("n", socket, tcp).unwrap();
        let upstream = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (len, from) = own.recv_from(&mut buf).unwrap();
            let mut reply = Message::from_vec(&buf[..len]).unwrap();
            reply.metadata.message_type = MessageType::Response;
            reply.metadata.response_code = ResponseCode::Refused;
            own.send_to(&reply.to_vec().unwrap(), from).unwrap();
        });
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(&query("www.example.test", 42), at)
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let len = tokio::time::timeout(UPSTREAM_TIMEOUT / 2, client.recv(&mut buf))
            .await
            .expect("the task's own DNS server answered")
            .unwrap();
        let reply = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(
            (reply.metadata.id, reply.metadata.response_code),
            (42, ResponseCode::Refused),
            "the answer of the task's server, not a SERVFAIL"
        );
        upstream.join().unwrap();
        // Without its own servers, the node's upstream is asked.
        set.tasks[0].spec = None;
        assert_eq!(
            Records::from_assignments(&set).upstreams_of("127.0.0.1".parse().unwrap()),
            None
        );
        s.stop("n");
    }

    fn ask(s: &DnsServer, name: &str, kind: RecordType) -> Message {
        let mut q = Message::query();
        q.metadata.id = 7;
        q.add_query(hickory_proto::op::Query::query(
            Name::from_ascii(name).unwrap(),
            kind,
        ));
        match s.answer(&q.to_vec().unwrap(), "198.18.1.3".parse().unwrap(), "n") {
            Reply::Send(bytes) => Message::from_vec(&bytes).unwrap(),
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn answers_names_nodata_nxdomain_and_forwards_the_rest() {
        let s = server();
        let a = ask(&s, "web.", RecordType::A);
        assert_eq!(a.metadata.id, 7);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].ttl, records::VIP_TTL);
        let t = ask(&s, "TASKS.web", RecordType::A);
        assert_eq!(t.answers.len(), 1);
        let aaaa = ask(&s, "web", RecordType::AAAA);
        assert_eq!(
            (aaaa.metadata.response_code, aaaa.answers.len()),
            (ResponseCode::NoError, 0)
        );
        for missing in ["nosuch", "tasks.nosuch"] {
            assert_eq!(
                ask(&s, missing, RecordType::A).metadata.response_code,
                ResponseCode::NXDomain
            );
        }
        let mut q = Message::query();
        q.add_query(hickory_proto::op::Query::query(
            Name::from_ascii("www.upstream.test").unwrap(),
            RecordType::A,
        ));
        assert_eq!(
            s.answer(&q.to_vec().unwrap(), "198.18.1.3".parse().unwrap(), "n"),
            Reply::Forward
        );
    }

    #[test]
    fn malformed_datagrams_get_formerr_or_are_dropped() {
        let s = server();
        let asker = "198.18.1.3".parse().unwrap();
        assert_eq!(s.answer(&[1, 2, 3], asker, "n"), Reply::Drop);
        // A header that promises a question that is not there.
        let bad = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff];
        match s.answer(&bad, asker, "n") {
            Reply::Send(bytes) => {
                assert_eq!(&bytes[..2], &[0x12, 0x34]);
                assert_eq!(bytes[3] & 0x0f, 1, "FORMERR");
            }
            other => panic!("{other:?}"),
        }
        // Responses are never answered (no loops).
        let mut response = [0u8; 12];
        response[2] = 0x80;
        assert_eq!(s.answer(&response, asker, "n"), Reply::Drop);
        // Arbitrary garbage never panics.
        for seed in 0u32..2000 {
            let bytes: Vec<u8> = (0..(seed % 64))
                .map(|i| (seed.wrapping_mul(31).wrapping_add(i * 17) % 251) as u8)
                .collect();
            let _ = s.answer(&bytes, asker, "n");
        }
    }
}

//! The relay behind `--publish …,proxy-protocol=v2`: every node listens on
//! such a port itself (the mesh keeps the port in its table with no
//! backend, so its allow-lists still apply and its SYNs reach the node's
//! stack), picks a task as the mesh would (`choice`), connects to it over
//! the ingress network from the node's ingress address, writes a PROXY
//! protocol v2 header (`header`: the client's address and port, and the
//! node's published address and port) and then copies both directions
//! until each side has closed its own (a half-close is passed on).
//!
//! Why userspace rather than the eBPF mesh: a header inserted into a TCP
//! stream shifts every later sequence number of that direction for the
//! life of the connection, and with it the acknowledgements, SACK blocks
//! and the SYN's retransmissions, on every packet, on whichever node a
//! packet of the flow is handled; the kernel's TCP stack does all of this
//! already when the relay terminates the connection. It costs a copy
//! through the agent for the ports that ask for it only; every other port
//! keeps the eBPF path. A relayed connection lives in the agent: unlike
//! the mesh's, it ends if the agent restarts.

mod choice;
pub mod header;

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpSocket, TcpStream},
    sync::Semaphore,
    task::JoinHandle,
};

use crate::datapath::pick::PickPolicy;
pub use choice::Choice;

/// Relayed connections open at once on a node, over all its ports: each
/// holds two sockets and two buffers; beyond this a new client is closed
/// at once (the mesh has no such cost, hence no such limit).
pub const MAX_CONNECTIONS: usize = 4096;
/// How long connecting to a task may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Each direction's buffer (tokio's default of 8 KiB costs throughput).
const BUFFER: usize = 64 * 1024;
/// Pending connections per listener.
const BACKLOG: u32 = 1024;

/// One port to relay, as a push gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPort {
    pub published: u16,
    /// The tasks that take new connections (running, healthy, not
    /// draining) at their ingress address and target port, in a stable
    /// order.
    pub backends: Vec<SocketAddrV4>,
    pub pick: PickPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("relay for published port {port}/tcp: listening on {addr}: {source}")]
    Listen {
        port: u16,
        addr: SocketAddrV4,
        source: std::io::Error,
    },
}

struct Listening {
    choice: Arc<Mutex<Choice>>,
    accept: JoinHandle<()>,
}

/// The relays of one node: one listener per relayed port on the node's
/// address (the one the mesh answers on).
pub struct Relay {
    node: Ipv4Addr,
    /// The node's ingress address, where connections to tasks come from
    /// (the tasks' replies to it come back through the ingress network).
    source: Arc<Mutex<Option<Ipv4Addr>>>,
    ports: Mutex<HashMap<u16, Listening>>,
    limit: Arc<Semaphore>,
}

impl Relay {
    pub fn new(node: Ipv4Addr) -> Self {
        Self {
            node,
            source: Arc::default(),
            ports: Mutex::default(),
            limit: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }

    /// Relays exactly `ports`: new ones start listening, gone ones stop
    /// (their open connections finish), the others take the new backends.
    /// Needs a tokio runtime.
    pub fn sync(&self, wanted: &[RelayPort], source: Option<Ipv4Addr>) -> Result<(), RelayError> {
        *self.source.lock().unwrap_or_else(|e| e.into_inner()) = source;
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        ports.retain(|port, listening| {
            let keep = wanted.iter().any(|w| w.published == *port);
            if !keep {
                tracing::info!(port, "no longer relaying published port (proxy-protocol)");
                listening.accept.abort();
            }
            keep
        });
        let mut first_error = None;
        for w in wanted {
            if let Some(listening) = ports.get(&w.published) {
                lock(&listening.choice).update(w.backends.clone(), w.pick);
                continue;
            }
            let addr = SocketAddrV4::new(self.node, w.published);
            let listener = match listen(addr) {
                Ok(l) => l,
                Err(source) => {
                    // The next push tries again; the other ports go on.
                    first_error.get_or_insert(RelayError::Listen {
                        port: w.published,
                        addr,
                        source,
                    });
                    continue;
                }
            };
            let mut choice = Choice::new(w.published);
            choice.update(w.backends.clone(), w.pick);
            let choice = Arc::new(Mutex::new(choice));
            tracing::info!(%addr, "relaying published port with a PROXY protocol v2 header");
            let accept = tokio::spawn(accept_loop(
                listener,
                choice.clone(),
                self.source.clone(),
                self.limit.clone(),
            ));
            ports.insert(w.published, Listening { choice, accept });
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for listening in self
            .ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            listening.accept.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A listener that a restarted agent can open again at once, while the
/// previous one's connections are in TIME_WAIT.
fn listen(addr: SocketAddrV4) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr.into())?;
    socket.listen(BACKLOG)
}

async fn accept_loop(
    listener: TcpListener,
    choice: Arc<Mutex<Choice>>,
    source: Arc<Mutex<Option<Ipv4Addr>>>,
    limit: Arc<Semaphore>,
) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::warn!(%error, "relay: accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(
                %peer,
                "relay: {MAX_CONNECTIONS} connections open on this node, closing a new one"
            );
            continue;
        };
        let choice = choice.clone();
        let from = *lock(&source);
        tokio::spawn(async move {
            match relay_one(client, &choice, from).await {
                Ok(()) => {}
                // No task took it: the client was refused, worth a line.
                Err(RelayFailure::NoTask(why)) => tracing::warn!(%peer, "relay: {why}"),
                // A side that reset or vanished: their business.
                Err(RelayFailure::Stream(error)) => tracing::debug!(%peer, "relay: {error}"),
            }
            drop(permit);
        });
    }
}

/// Why a relayed connection ended early.
enum RelayFailure {
    NoTask(String),
    Stream(std::io::Error),
}

impl From<std::io::Error> for RelayFailure {
    fn from(error: std::io::Error) -> Self {
        Self::Stream(error)
    }
}

/// One client's connection: a task, the header, then both directions.
async fn relay_one(
    mut client: TcpStream,
    choice: &Mutex<Choice>,
    from: Option<Ipv4Addr>,
) -> Result<(), RelayFailure> {
    let (SocketAddr::V4(peer), SocketAddr::V4(local)) = (client.peer_addr()?, client.local_addr()?)
    else {
        return Err(RelayFailure::NoTask("not an IPv4 connection".into()));
    };
    let mut failed = Vec::new();
    let mut task = loop {
        let Some(backend) = lock(choice).pick(peer, Instant::now(), &failed) else {
            // No task (left) to take it: the client sees its connection
            // closed, as a refused one through the mesh.
            return Err(RelayFailure::NoTask(format!(
                "no task to relay port {} to ({} failed: {failed:?})",
                local.port(),
                failed.len()
            )));
        };
        match connect(backend, from).await {
            Ok(stream) => break stream,
            Err(error) => {
                tracing::warn!(%backend, %error, "relay: connecting to a task, trying another");
                failed.push(backend);
            }
        }
    };
    let _ = client.set_nodelay(true);
    let _ = task.set_nodelay(true);
    task.write_all(&header::tcp4(peer, local)).await?;
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut task, BUFFER, BUFFER).await?;
    Ok(())
}

async fn connect(task: SocketAddrV4, from: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(from) = from {
        socket.bind(SocketAddrV4::new(from, 0).into())?;
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(task.into())).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from {task} within {CONNECT_TIMEOUT:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A relay on loopback in front of a task on loopback: the task reads
    /// the header, then the client's bytes; its answer and its close reach
    /// the client after the client closed its own side (half-close).
    #[tokio::test]
    async fn relays_with_the_header_first_and_passes_half_closes_on() {
        let task = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let SocketAddr::V4(task_addr) = task.local_addr().unwrap() else {
            unreachable!()
        };
        let relay = Relay::new(Ipv4Addr::LOCALHOST);
        // A free port for the relay: bind one, free it, take it.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dead = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1); // refuses
        relay
            .sync(
                &[RelayPort {
                    published: port,
                    backends: vec![dead, task_addr],
                    pick: PickPolicy::default(),
                }],
                None,
            )
            .unwrap();
        let served = tokio::spawn(async move {
            let (mut s, _) = task.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap(); // until the client's FIN
            s.write_all(b"answer after your FIN").await.unwrap();
            got
        });
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let me = c.local_addr().unwrap();
        c.write_all(b"hello").await.unwrap();
        c.shutdown().await.unwrap();
        let mut answer = Vec::new();
        c.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer after your FIN");
        let got = served.await.unwrap();
        let SocketAddr::V4(me) = me else {
            unreachable!()
        };
        let expected = header::tcp4(me, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        assert_eq!(&got[..header::TCP4_LEN], &expected);
        assert_eq!(&got[header::TCP4_LEN..], b"hello");

        // The port gone: nothing listens any more.
        relay.sync(&[], None).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    }
}

//! TLS for Shoal's gRPC: rustls (TLS 1.3, ring) under tonic.
//!
//! Servers take their certificate and the roots they trust from
//! [`Credentials`] at each handshake, so a renewed certificate or a rotated
//! CA applies to the next connection without a restart. Clients check that
//! the server holds a *manager* certificate of their cluster
//! ([`MANAGER_SERVER_NAME`]), whatever address they dialled.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    server::{
        ClientHello, ResolvesServerCert,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{Credentials, MANAGER_SERVER_NAME, PkiError, Result, connection::TlsConnection};

/// The cryptography every Shoal TLS configuration uses.
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

const ALPN_H2: &[u8] = b"h2";

/// A TLS 1.3 client configuration trusting `roots`, presenting `identity`
/// if given.
pub fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(PkiError::rustls("TLS versions"))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(PkiError::rustls("the client certificate"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// The server side of a manager: its current certificate, and client
/// certificates checked against the current roots (optional at the TLS
/// layer: the CA service serves nodes that have none yet; every other
/// service refuses them).
pub fn server_config(credentials: Arc<Credentials>) -> Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(PkiError::rustls("TLS versions"))?
        .with_client_cert_verifier(Arc::new(CurrentClientVerifier(credentials.clone())))
        .with_cert_resolver(Arc::new(CurrentCert(credentials)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct CurrentCert(Arc<Credentials>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity())
            .finish()
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified.clone())
    }
}

#[derive(Debug)]
struct CurrentClientVerifier(Arc<Credentials>);

impl ClientCertVerifier for CurrentClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.0
            .current()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .client_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .client_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().client_verifier.supported_verify_schemes()
    }
}

/// How long a peer has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once: past this, new connections wait, so a
/// flood of silent peers costs a bounded number of tasks and buffers.
const MAX_HANDSHAKES: usize = 256;

/// The accept queue asked of the kernel for the API port. A join burst
/// opens three connections per node within milliseconds (the root's
/// fetch, the certificate, the session), and the accept loop hands each to
/// a handshake only while it holds one of [`MAX_HANDSHAKES`] permits: with
/// the standard library's 128 (what `TcpListener::bind` asks), 200 nodes
/// joining at once overflowed the queue in one burst of three, and the
/// kernel's dropped SYNs cost those nodes a second each, its first
/// retransmit (bench/RESULTS.md, 2026-12-03). The kernel caps this at
/// `net.core.somaxconn` (4096 by default since Linux 5.4), as Go servers
/// such as etcd ask.
pub const ACCEPT_QUEUE: u32 = 4096;

/// A TCP listener on `addr` with an accept queue of [`ACCEPT_QUEUE`]
/// (`SO_REUSEADDR` set, as `TcpListener::bind` sets it).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_QUEUE)
}

/// The TLS connections `listener` accepts, for tonic's
/// `serve_with_incoming`, each with its peer's identity read once (see
/// [`TlsConnection`]). Handshakes run side by side, so one slow or silent
/// peer holds up no one; failed ones are logged and dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConnection>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors and the like: wait, don't spin.
                        tracing::warn!(%error, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            let handshake = async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                drop(permit);
                match handshake {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(TlsConnection::new(tls))).await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake refused");
                    }
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            };
            match handshake_runtime() {
                Some(runtime) => drop(runtime.spawn(handshake)),
                None => drop(tokio::spawn(handshake)),
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Where servers' TLS handshakes run: a runtime of their own, with a
/// worker per core, beside the one serving the connections.
///
/// A handshake is CPU work (key exchange, the server's signature, the
/// client's chain verified, its identity parsed: ~1 ms here). On the
/// serving runtime a join storm's hundreds of them would hold its workers
/// while Raft's heartbeats and every API call wait, and a manager with one
/// worker would run them on one core. Here they use every core and the
/// serving runtime's workers go on. The socket stays registered with the
/// accepting runtime's I/O driver throughout (tokio polls a resource
/// through the driver it was registered with, from any runtime), so the
/// connection, once up, is served where it was accepted with nothing
/// moved. None if the runtime cannot be started (out of threads or
/// descriptors): the handshakes then run on the caller's runtime, as
/// before, and the accept loop goes on.
fn handshake_runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<Option<tokio::runtime::Runtime>> =
        std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            // tokio panics when it cannot spawn a worker, rather than
            // returning an error: caught, so the accept loop survives.
            let built = std::panic::catch_unwind(|| {
                tokio::runtime::Builder::new_multi_thread()
                    // Set, so TOKIO_WORKER_THREADS (meant for other
                    // runtimes, and a panic if malformed) plays no part.
                    .worker_threads(cores)
                    .thread_name("tls-handshake")
                    .enable_all()
                    .build()
                    .map_err(|error| error.to_string())
            })
            .unwrap_or_else(|_| Err("no thread could be started".into()));
            built
                .inspect_err(|error| {
                    tracing::warn!(%error, "no runtime of their own for TLS handshakes: they share the connections' runtime");
                })
                .ok()
        })
        .as_ref()
}

/// What a client presents, and what it trusts, when it dials a manager.
#[derive(Clone)]
pub enum Dialer {
    /// A node's own credentials (current at each connection).
    Node(Arc<Credentials>),
    /// A fixed configuration: an operator's client certificate, or a
    /// joining node that trusts the CA its token names and has no
    /// certificate yet.
    Fixed(Arc<ClientConfig>),
    /// Trusts any server. Only to fetch the root CA before joining, whose
    /// digest the join token then checks.
    UnverifiedServer,
}

impl Dialer {
    /// A client that trusts `roots_pem` and presents nothing.
    pub fn anonymous(roots_pem: &str) -> Result<Self> {
        let roots = Arc::new(crate::credentials::root_store(roots_pem)?);
        Ok(Self::Fixed(Arc::new(client_config(roots, None)?)))
    }

    /// A client presenting `chain_pem`/`key_pem`, trusting `roots_pem`.
    pub fn with_certificate(chain_pem: &str, key_pem: &str, roots_pem: &str) -> Result<Self> {
        let roots = Arc::new(crate::credentials::root_store(roots_pem)?);
        let chain = crate::certs_from_pem(chain_pem)?;
        let key =
            pem::parse(key_pem).map_err(|e| PkiError::Invalid(format!("client key PEM: {e}")))?;
        let key = PrivateKeyDer::try_from(key.into_contents())
            .map_err(|e| PkiError::Invalid(format!("client key: {e}")))?;
        Ok(Self::Fixed(Arc::new(client_config(
            roots,
            Some((chain, key)),
        )?)))
    }

    fn config(&self) -> Result<Arc<ClientConfig>> {
        match self {
            Dialer::Node(credentials) => Ok(credentials.current().client_config.clone()),
            Dialer::Fixed(config) => Ok(config.clone()),
            Dialer::UnverifiedServer => {
                let mut config = ClientConfig::builder_with_provider(Arc::new(provider()))
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map_err(PkiError::rustls("TLS versions"))?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyServer(provider())))
                    .with_no_client_auth();
                config.alpn_protocols = vec![ALPN_H2.to_vec()];
                Ok(Arc::new(config))
            }
        }
    }

    /// Opens a TLS connection to `addr` (host:port).
    pub async fn connect(
        &self,
        addr: &str,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.connect_from(addr, None).await
    }

    /// Opens a TLS connection to `addr` from `source` (this host's address
    /// the peer should see), if given and usable.
    pub async fn connect_from(
        &self,
        addr: &str,
        source: Option<std::net::IpAddr>,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let config = self.config().map_err(io::Error::other)?;
        let tcp = match source {
            Some(ip) => {
                let target = tokio::net::lookup_host(addr)
                    .await?
                    .next()
                    .ok_or_else(|| io::Error::other(format!("{addr} resolves to nothing")))?;
                let socket = if target.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                // Not this host's address (NAT, a typo): the kernel picks.
                if socket.bind(SocketAddr::new(ip, 0)).is_err() {
                    TcpStream::connect(target).await?
                } else {
                    socket.connect(target).await?
                }
            }
            None => TcpStream::connect(addr).await?,
        };
        // Raft and the APIs send small messages and wait for the answer.
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(MANAGER_SERVER_NAME).map_err(io::Error::other)?;
        TlsConnector::from(config).connect(name, tcp).await
    }
}

/// A tonic channel to the manager at `addr` over TLS, connecting on first
/// use, with Shoal's keepalive settings (HTTP/2 pings each second, 3 s to
/// answer) so a dead peer is noticed in seconds.
pub fn lazy_channel(addr: &str, dialer: Dialer) -> Result<Channel> {
    Ok(endpoint(addr)?.connect_with_connector_lazy(connector(addr, dialer, None)))
}

/// Like [`lazy_channel`], connecting now.
pub async fn channel(
    addr: &str,
    dialer: Dialer,
) -> std::result::Result<Channel, tonic::transport::Error> {
    channel_from(addr, dialer, None).await
}

/// Like [`channel`], from `source` (see [`Dialer::connect_from`]).
pub async fn channel_from(
    addr: &str,
    dialer: Dialer,
    source: Option<std::net::IpAddr>,
) -> std::result::Result<Channel, tonic::transport::Error> {
    let endpoint = match endpoint(addr) {
        Ok(endpoint) => endpoint,
        Err(_) => Endpoint::from_static("http://invalid.address"),
    };
    endpoint
        .connect_with_connector(connector(addr, dialer, source))
        .await
}

/// Like [`lazy_channel`], for a node's session with its manager: without
/// HTTP/2 pings. The session's heartbeat is its liveness check: each has a
/// deadline of one period, so a black-holed manager is noticed within two
/// periods, before the three a node may miss (and the heartbeats keep the
/// connection busy for any middlebox). Pings on top were most of an idle
/// leader's work: 1,000 nodes pinging every 5 s were 200 TLS records in and
/// out a second, against 100 heartbeats.
pub fn node_session_channel(addr: &str, dialer: Dialer) -> Result<Channel> {
    let endpoint = bare_endpoint(addr)?
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT);
    Ok(endpoint.connect_with_connector_lazy(connector(addr, dialer, None)))
}

/// How long a connection to a manager may take, its TLS handshake included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

fn endpoint(addr: &str) -> Result<Endpoint> {
    // Shoal's keepalive settings, with time for the TLS handshake too.
    Ok(shoal_api::keepalive(bare_endpoint(addr)?).connect_timeout(CONNECT_TIMEOUT))
}

/// An endpoint for `addr` with tonic's defaults. The URI only names the
/// peer for HTTP/2; the connector dials `addr`.
fn bare_endpoint(addr: &str) -> Result<Endpoint> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| PkiError::Invalid(format!("manager address {addr:?}: {e}")))
}

fn connector(
    addr: &str,
    dialer: Dialer,
    source: Option<std::net::IpAddr>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = io::Error,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let addr = addr.to_owned();
    tower::service_fn(move |_: Uri| {
        let (addr, dialer) = (addr.clone(), dialer.clone());
        async move { Ok(TokioIo::new(dialer.connect_from(&addr, source).await?)) }
    })
}

/// Accepts every server certificate (see [`Dialer::UnverifiedServer`]),
/// still checking the handshake's signatures.
#[derive(Debug)]
struct AnyServer(CryptoProvider);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The identity in a verified peer certificate chain (leaf first).
pub fn peer_identity(certs: &[CertificateDer<'_>]) -> Option<crate::Identity> {
    certs
        .first()
        .and_then(|leaf| crate::Identity::of_der(leaf).ok())
}

/// The address of a socket, for logs.
pub fn describe(addr: Option<SocketAddr>) -> String {
    addr.map(|a| a.to_string())
        .unwrap_or_else(|| "local".into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{CertificateAuthority, NodeRequest, Role, credentials::CredentialFiles};

    fn node(ca: &CertificateAuthority, id: &str, role: Role, roots: &str) -> Arc<Credentials> {
        let (chain_pem, key_pem) = ca
            .issue_with_new_key(&NodeRequest {
                node_id: id,
                role,
                cluster_id: "c",
                validity: Duration::from_secs(3600),
            })
            .unwrap();
        Credentials::new(CredentialFiles {
            chain_pem,
            key_pem,
            roots_pem: roots.to_owned(),
        })
        .unwrap()
    }

    /// A burst of connections larger than the standard library's accept
    /// queue (128) all complete their handshake with the kernel while the
    /// server accepts none: none waits for a SYN retransmit (1 s).
    #[tokio::test]
    async fn a_burst_of_connections_fits_the_accept_queue() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..400 {
            connects.spawn(tokio::time::timeout(
                Duration::from_millis(800),
                TcpStream::connect(addr),
            ));
        }
        let mut open = Vec::new();
        while let Some(done) = connects.join_next().await {
            let connected = done.unwrap();
            open.push(
                connected
                    .expect("a connection waited for a SYN retransmit: the accept queue overflowed")
                    .unwrap(),
            );
        }
        assert_eq!(open.len(), 400);
        drop(listener);
    }

    /// Handshakes `client` with a server holding `server`; returns who the
    /// server saw, or the error.
    async fn handshake(
        server: Arc<Credentials>,
        client: Dialer,
    ) -> std::result::Result<Option<crate::Identity>, String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let acceptor = TlsAcceptor::from(server_config(server).unwrap());
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor
                .accept(tcp)
                .await
                .map(|tls| tls.get_ref().1.peer_certificates().and_then(peer_identity))
                .map_err(|e| e.to_string())
        });
        let dialled = client.connect(&addr).await.map_err(|e| e.to_string());
        let accepted = accept.await.unwrap();
        dialled?;
        accepted
    }

    /// Records the thread each handshake picks the server's certificate on.
    #[derive(Debug)]
    struct ResolvedOn(Arc<dyn ResolvesServerCert>, std::sync::Mutex<Vec<String>>);

    impl ResolvesServerCert for ResolvedOn {
        fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            self.1.lock().unwrap().push(name);
            self.0.resolve(hello)
        }
    }

    /// A server's handshakes run on the handshake runtime's threads, not
    /// on the runtime serving the connections, and the connection then
    /// works from that runtime (its socket stayed with its I/O driver).
    #[tokio::test]
    async fn handshakes_run_on_their_own_runtime_and_the_connection_is_served_where_accepted() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ca = CertificateAuthority::create("c").unwrap();
        let roots = ca.cert_pem().to_owned();
        let manager = node(&ca, "m1", Role::Manager, &roots);
        let worker = node(&ca, "w1", Role::Worker, &roots);
        let mut config = (*server_config(manager).unwrap()).clone();
        let resolved = Arc::new(ResolvedOn(config.cert_resolver.clone(), Default::default()));
        config.cert_resolver = resolved.clone();
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connections = incoming(listener, Arc::new(config));

        let tcp = TcpStream::connect(addr).await.unwrap();
        let client = TlsConnector::from(Dialer::Node(worker).config().unwrap());
        let name = ServerName::try_from(MANAGER_SERVER_NAME).unwrap();
        let (dialled, accepted) = tokio::join!(client.connect(name, tcp), async {
            use tokio_stream::StreamExt;
            connections.next().await.unwrap().unwrap()
        });
        let (mut dialled, mut accepted) = (dialled.unwrap(), accepted);
        assert_eq!(*resolved.1.lock().unwrap(), ["tls-handshake"]);

        // Served on this (current-thread) test runtime from here on.
        dialled.write_all(b"ping").await.unwrap();
        let mut got = [0; 4];
        accepted.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        accepted.write_all(b"pong").await.unwrap();
        accepted.flush().await.unwrap();
        dialled.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }

    #[tokio::test]
    async fn managers_see_who_calls_and_refuse_other_clusters() {
        let ca = CertificateAuthority::create("c").unwrap();
        let roots = ca.cert_pem().to_owned();
        let manager = node(&ca, "m1", Role::Manager, &roots);
        let worker = node(&ca, "w1", Role::Worker, &roots);
        let seen = handshake(manager.clone(), Dialer::Node(worker.clone()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((seen.node_id.as_str(), seen.role), ("w1", Role::Worker));

        // No certificate: TLS lets it in (to join); the services decide.
        let anonymous = Dialer::anonymous(&roots).unwrap();
        assert_eq!(handshake(manager.clone(), anonymous).await.unwrap(), None);

        // A certificate of another CA is refused by the server.
        let other = CertificateAuthority::create("c").unwrap();
        let stranger = node(&other, "w1", Role::Worker, &roots);
        assert!(
            handshake(manager.clone(), Dialer::Node(stranger))
                .await
                .is_err()
        );

        // A worker is no manager: clients refuse a server with its certificate.
        assert!(handshake(worker, Dialer::Node(manager)).await.is_err());
    }

    #[tokio::test]
    async fn a_cross_signed_new_root_is_trusted_by_nodes_of_the_old_one() {
        let old = CertificateAuthority::create("c").unwrap();
        let new = CertificateAuthority::create("c").unwrap();
        let cross = old.cross_sign(&new).unwrap();
        let issuing = CertificateAuthority::from_pem(new.cert_pem(), &new.key_pem())
            .unwrap()
            .with_chain(&cross);
        let both = format!("{}{}", old.cert_pem(), new.cert_pem());
        // A manager already moved to the new root; a worker still trusts only
        // the old one, and the other way round.
        let manager = node(&issuing, "m1", Role::Manager, &both);
        let worker_old = node(&old, "w1", Role::Worker, old.cert_pem());
        assert!(
            handshake(manager.clone(), Dialer::Node(worker_old))
                .await
                .is_ok()
        );
        let manager_old = node(&old, "m2", Role::Manager, old.cert_pem());
        let worker_new = node(&issuing, "w2", Role::Worker, &both);
        assert!(
            handshake(manager_old, Dialer::Node(worker_new))
                .await
                .is_ok()
        );
        // After the rotation only the new root is trusted.
        let manager_after = node(&issuing, "m3", Role::Manager, new.cert_pem());
        let worker_stale = node(&old, "w3", Role::Worker, old.cert_pem());
        assert!(
            handshake(manager_after, Dialer::Node(worker_stale))
                .await
                .is_err()
        );
    }
}

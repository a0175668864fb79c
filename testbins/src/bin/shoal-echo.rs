//! shoal-echo: the server in the `shoal/echo` test image.
//!
//! - HTTP on `ECHO_PORT` (80): `GET /` answers a JSON line naming this
//!   container (hostname, task, version, the client's address);
//!   `GET /file/PATH` returns a file of the container's filesystem;
//!   `GET /bytes/N` returns N bytes (`x`), for transfers of many segments;
//!   `GET /healthz` is 200 or 503, switched by `GET /healthz/fail` and
//!   `GET /healthz/pass` (or started failing with `ECHO_UNHEALTHY=1`).
//! - UDP echo on the same port: the datagram back, or the identity line for `whoami`.
//! - TCP echo on `ECHO_TCP_ECHO_PORT` (7).
//! - `shoal-echo healthcheck`: exit 0 if the local /healthz is 200 (for Docker health checks).
//! - `ECHO_PROXY_PROTOCOL=v2`: every HTTP connection must start with a
//!   PROXY protocol v2 header (read strictly, `shoal_testbins::proxy`; a
//!   connection without one is closed, the error logged; connections from
//!   loopback, the health check's and the tests' inside the container,
//!   need none: a relay never connects from there); the identity
//!   line then also has `proxy_source` and `proxy_destination`, the
//!   addresses the header carries, next to `client`, the peer it sees.
//! - SIGTERM ends it at once; with `ECHO_GRACEFUL=1` it ends once no HTTP
//!   connection is open (as a server that drains: `docker stop` kills it
//!   at the end of the grace period otherwise).

use std::{
    io::{BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context, Result};
use shoal_testbins::{http, proxy};

/// The largest `/bytes/N` answer: 64 MiB.
const MAX_BYTES: usize = 64 << 20;

struct Identity {
    hostname: String,
    task: String,
    version: String,
}

impl Identity {
    fn from_env() -> Self {
        let hostname = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".into());
        Self {
            hostname,
            task: std::env::var("SHOAL_TASK_NAME").unwrap_or_default(),
            version: std::env::var("SHOAL_ECHO_VERSION").unwrap_or_else(|_| "dev".into()),
        }
    }

    fn line(&self, client: SocketAddr) -> String {
        self.proxied_line(client, None)
    }

    fn proxied_line(&self, client: SocketAddr, proxy: Option<&proxy::Header>) -> String {
        let mut value = serde_json::json!({
            "hostname": self.hostname,
            "task": self.task,
            "version": self.version,
            "client": client.to_string(),
        });
        if let Some(h) = proxy {
            value["proxy_source"] = h.source.to_string().into();
            value["proxy_destination"] = h.destination.to_string().into();
        }
        format!("{value}\n")
    }
}

fn port_from_env(name: &str, default: u16) -> Result<u16> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{name}={value:?} is not a port")),
        Err(_) => Ok(default),
    }
}

fn main() -> Result<()> {
    let port = port_from_env("ECHO_PORT", 80)?;
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let healthy = http::get(addr, "localhost", "/healthz", Duration::from_secs(2))
            .is_ok_and(|r| r.status == 200);
        std::process::exit(if healthy { 0 } else { 1 });
    }
    let open = Arc::new(AtomicUsize::new(0));
    if std::env::var("ECHO_GRACEFUL").is_ok_and(|v| v == "1") {
        shoal_testbins::note_terminate();
        let open = open.clone();
        thread::spawn(move || exit_when_drained(&open));
    } else {
        shoal_testbins::exit_on_terminate();
    }
    let identity = Arc::new(Identity::from_env());
    let healthy = Arc::new(AtomicBool::new(
        std::env::var("ECHO_UNHEALTHY").map_or(true, |v| v != "1"),
    ));
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let proxied = match std::env::var("ECHO_PROXY_PROTOCOL").as_deref() {
        Ok("v2") => true,
        Ok("") | Err(_) => false,
        Ok(other) => anyhow::bail!("ECHO_PROXY_PROTOCOL={other:?}: expected v2"),
    };

    let http_listener =
        TcpListener::bind((any, port)).with_context(|| format!("binding tcp/{port}"))?;
    let udp = UdpSocket::bind((any, port)).with_context(|| format!("binding udp/{port}"))?;
    let tcp_echo_port = port_from_env("ECHO_TCP_ECHO_PORT", 7)?;
    let tcp_echo = TcpListener::bind((any, tcp_echo_port))
        .with_context(|| format!("binding tcp/{tcp_echo_port}"))?;
    eprintln!(
        "shoal-echo {} on {}: http and udp {port}, tcp echo {tcp_echo_port}",
        identity.version, identity.hostname
    );

    let udp_identity = identity.clone();
    thread::spawn(move || serve_udp(udp, &udp_identity));
    thread::spawn(move || {
        for stream in tcp_echo.incoming().flatten() {
            thread::spawn(move || echo_tcp(stream));
        }
    });
    for stream in http_listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (identity, healthy, open) = (identity.clone(), healthy.clone(), open.clone());
        open.fetch_add(1, Ordering::SeqCst);
        thread::spawn(move || {
            if let Err(error) = serve_http(stream, &identity, &healthy, proxied)
                && error.kind() != std::io::ErrorKind::UnexpectedEof
            {
                eprintln!("http: {error}");
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(())
}

/// After SIGTERM, exits once no HTTP connection is open. Connections
/// accepted meanwhile count too: the load balancer should send none.
fn exit_when_drained(open: &AtomicUsize) {
    while !shoal_testbins::TERMINATING.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "terminating: {} open connection(s) to finish",
        open.load(Ordering::SeqCst)
    );
    while open.load(Ordering::SeqCst) > 0 {
        thread::sleep(Duration::from_millis(10));
    }
    std::process::exit(0);
}

fn serve_http(
    stream: TcpStream,
    identity: &Identity,
    healthy: &AtomicBool,
    proxied: bool,
) -> std::io::Result<()> {
    let client = stream.peer_addr()?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let header =
        if proxied && !client.ip().is_loopback() {
            Some(proxy::read_v2(&mut reader).map_err(|e| {
                std::io::Error::new(e.kind(), format!("connection from {client}: {e}"))
            })?)
        } else {
            None
        };
    while let Some(request) = http::read_request(&mut reader)? {
        let keep_alive = request.keep_alive;
        let (status, body): (u16, Vec<u8>) = match (request.method.as_str(), request.path.as_str())
        {
            ("GET", "/") => (
                200,
                identity.proxied_line(client, header.as_ref()).into_bytes(),
            ),
            ("GET", "/healthz") if healthy.load(Ordering::Relaxed) => (200, b"ok\n".to_vec()),
            ("GET", "/healthz") => (503, b"unhealthy\n".to_vec()),
            ("GET" | "POST", "/healthz/fail") => {
                healthy.store(false, Ordering::Relaxed);
                (200, b"now failing /healthz\n".to_vec())
            }
            ("GET" | "POST", "/healthz/pass") => {
                healthy.store(true, Ordering::Relaxed);
                (200, b"now passing /healthz\n".to_vec())
            }
            ("GET", path) if path.starts_with("/bytes/") => {
                match path["/bytes/".len()..].parse::<usize>() {
                    Ok(n) if n <= MAX_BYTES => (200, vec![b'x'; n]),
                    _ => (400, format!("/bytes/N: N up to {MAX_BYTES}\n").into_bytes()),
                }
            }
            ("GET", path) if path.starts_with("/file/") => {
                match std::fs::read(&path["/file".len()..]) {
                    Ok(contents) => (200, contents),
                    Err(error) => (
                        404,
                        format!("{}: {error}\n", &path["/file".len()..]).into_bytes(),
                    ),
                }
            }
            ("GET", _) => (404, b"not found\n".to_vec()),
            _ => (405, b"method not allowed\n".to_vec()),
        };
        let content_type = if request.path == "/" {
            "application/json"
        } else {
            "text/plain"
        };
        http::write_response(&mut out, status, content_type, &body, keep_alive)?;
        if !keep_alive {
            break;
        }
    }
    Ok(())
}

fn serve_udp(socket: UdpSocket, identity: &Identity) {
    let mut buf = [0u8; 65536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let reply = if buf[..n].trim_ascii() == b"whoami" {
            identity.line(from).into_bytes()
        } else {
            buf[..n].to_vec()
        };
        let _ = socket.send_to(&reply, from);
    }
}

fn echo_tcp(mut stream: TcpStream) {
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

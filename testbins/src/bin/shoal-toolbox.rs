//! shoal-toolbox: the clients in the `shoal/toolbox` test image. Names are
//! resolved with the container's /etc/resolv.conf by our own DNS client.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use shoal_testbins::{
    dns::{self, Answer},
    http,
};

#[derive(Parser)]
#[command(
    name = "toolbox",
    version,
    about = "Static test clients for Shoal's lab"
)]
struct Cli {
    /// Give up on one attempt after this many milliseconds.
    #[arg(long, global = true, default_value_t = 2000)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// HTTP GET, repeated: one line per response (`<n> <status> <body>`), a
    /// summary on stderr; exits 1 if any request failed.
    HttpGet {
        /// http://HOST[:PORT][/PATH]
        url: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, default_value_t = 0)]
        interval_ms: u64,
        /// Print the body's length in bytes instead of the body.
        #[arg(long)]
        length: bool,
    },
    /// Look up A records: one address per line. Exit 3 on NXDOMAIN, 4 on another error rcode.
    Dns {
        name: String,
        /// IP[:PORT] of the server (default: the first nameserver of /etc/resolv.conf).
        #[arg(long)]
        server: Option<String>,
    },
    /// Open a TCP connection; with --send, write the text and print what comes back.
    TcpConnect {
        /// HOST:PORT
        target: String,
        #[arg(long)]
        send: Option<String>,
    },
    /// Send one UDP datagram and print the reply.
    UdpSend {
        /// HOST:PORT
        target: String,
        text: String,
    },
    /// Steady HTTP load: GET / on a new connection each time, round-robin
    /// over the entries, at --rate requests/s; one line per request
    /// (`<ms> <entry> <task>` or `<ms> <entry> FAILED <why>`) and a summary
    /// (`# requests=N failed=F seconds=S rate=R`); exits 1 if any failed.
    /// Ends after --seconds or at SIGTERM.
    Load {
        /// IP:PORT, one or more.
        #[arg(required = true)]
        entries: Vec<SocketAddr>,
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long, default_value_t = 16)]
        workers: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Sleep until stopped (the image's default command, for long-running toolbox tasks).
    Idle,
    /// Sleep this many milliseconds, then exit 0 (a job's short task).
    Sleep { ms: u64 },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let timeout = Duration::from_millis(cli.timeout_ms);
    match run(cli.command, timeout) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("toolbox: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, timeout: Duration) -> Result<ExitCode> {
    match command {
        Command::HttpGet {
            url,
            count,
            interval_ms,
            length,
        } => http_get(&url, count, interval_ms, length, timeout),
        Command::Load {
            entries,
            rate,
            workers,
            seconds,
        } => {
            shoal_testbins::note_terminate();
            let summary = shoal_testbins::load::run(
                &shoal_testbins::load::Load {
                    entries,
                    rate,
                    workers,
                    seconds,
                    timeout,
                },
                std::io::stdout(),
            );
            Ok(if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Dns { name, server } => {
            let server = match server {
                Some(s) => parse_server(&s)?,
                None => dns::system_resolver().context("no nameserver in /etc/resolv.conf")?,
            };
            match dns::resolve_a(server, &name, timeout)? {
                Answer::Addresses(addrs) => {
                    for addr in addrs {
                        println!("{addr}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Answer::NxDomain => {
                    eprintln!("{name}: NXDOMAIN");
                    Ok(ExitCode::from(3))
                }
                Answer::Error(rcode) => {
                    eprintln!("{name}: rcode {rcode}");
                    Ok(ExitCode::from(4))
                }
            }
        }
        Command::TcpConnect { target, send } => {
            let addr = resolve_target(&target, timeout)?;
            let mut stream = TcpStream::connect_timeout(&addr, timeout)
                .with_context(|| format!("connecting to {addr}"))?;
            println!("connected {} -> {addr}", stream.local_addr()?);
            if let Some(text) = send {
                stream.set_read_timeout(Some(timeout))?;
                stream.write_all(text.as_bytes())?;
                let mut reply = vec![0u8; text.len().max(1)];
                let mut got = 0;
                while got < text.len() {
                    match stream.read(&mut reply[got..])? {
                        0 => break,
                        n => got += n,
                    }
                }
                println!("{}", String::from_utf8_lossy(&reply[..got]));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::UdpSend { target, text } => {
            let addr = resolve_target(&target, timeout)?;
            let socket = UdpSocket::bind(("0.0.0.0", 0))?;
            socket.set_read_timeout(Some(timeout))?;
            socket.send_to(text.as_bytes(), addr)?;
            let mut buf = [0u8; 65536];
            let (n, _) = socket
                .recv_from(&mut buf)
                .with_context(|| format!("no reply from {addr}"))?;
            println!("{}", String::from_utf8_lossy(&buf[..n]).trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Command::Sleep { ms } => {
            shoal_testbins::exit_on_terminate();
            std::thread::sleep(Duration::from_millis(ms));
            Ok(ExitCode::SUCCESS)
        }
        Command::Idle => {
            shoal_testbins::exit_on_terminate();
            loop {
                std::thread::park();
            }
        }
    }
}

fn http_get(
    url: &str,
    count: u32,
    interval_ms: u64,
    length: bool,
    timeout: Duration,
) -> Result<ExitCode> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let (host, port) = split_host_port(authority, 80)?;
    let ip = dns::lookup_host(host, timeout).map_err(anyhow::Error::msg)?;
    let addr = SocketAddr::new(IpAddr::V4(ip), port);
    let mut failed = 0;
    let mut slowest = Duration::ZERO;
    for n in 1..=count {
        let started = std::time::Instant::now();
        match http::get(addr, host, &path, timeout) {
            Ok(response) if length => {
                println!("{n} {} {} bytes", response.status, response.body.len())
            }
            Ok(response) => println!("{n} {} {}", response.status, response.body.trim_end()),
            Err(error) => {
                failed += 1;
                println!("{n} error {error}");
            }
        }
        // Answered but slow (a lost SYN costs a second): said on stderr,
        // where the per-request lines' parsers do not look.
        let took = started.elapsed();
        slowest = slowest.max(took);
        if took > Duration::from_millis(500) {
            eprintln!("request {n} took {took:.2?}");
        }
        std::io::stdout().flush()?;
        if n < count && interval_ms > 0 {
            std::thread::sleep(Duration::from_millis(interval_ms));
        }
    }
    eprintln!(
        "{} ok, {failed} failed; slowest {slowest:.2?}",
        count - failed
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(&str, u16)> {
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((
            host,
            port.parse()
                .with_context(|| format!("bad port in {authority:?}"))?,
        )),
        None => Ok((authority, default_port)),
    }
}

fn resolve_target(target: &str, timeout: Duration) -> Result<SocketAddr> {
    let (host, port) = split_host_port(target, 0)?;
    if port == 0 {
        bail!("{target:?}: expected HOST:PORT");
    }
    let ip = dns::lookup_host(host, timeout).map_err(anyhow::Error::msg)?;
    Ok(SocketAddr::new(IpAddr::V4(ip), port))
}

fn parse_server(server: &str) -> Result<SocketAddr> {
    if let Ok(addr) = server.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let ip: IpAddr = server
        .parse()
        .with_context(|| format!("--server {server:?}: expected IP[:PORT]"))?;
    Ok(SocketAddr::new(ip, 53))
}

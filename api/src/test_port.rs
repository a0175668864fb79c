//! A loopback port for a test's manager to listen on, that nothing else on
//! the machine takes while the test runs.
//!
//! Binding port 0, reading the port and closing the socket (so the manager
//! can bind it) races: the kernel hands ports of its ephemeral range to every
//! outgoing connection and every other `bind(0)`, and a manager that a test
//! stops and restarts on the same address leaves the port free for seconds.
//! On a busy machine (CI, tests in parallel) one of those grabbed it now and
//! then: "Address already in use". Ports below the ephemeral range are never
//! handed out by the kernel, so only another test picking the very same
//! random port could collide, and the choice is random over ~20,000 ports.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// Lowest port tried: above the well-known and common service ports.
const LOWEST: u16 = 10_000;

/// A free 127.0.0.1 port below the kernel's ephemeral range.
pub fn unused_loopback_port() -> std::io::Result<SocketAddr> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_start.saturating_sub(LOWEST);
    if span < 1_000 {
        // A machine configured with a huge ephemeral range: fall back to
        // the kernel's choice.
        return TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr();
    }
    for _ in 0..200 {
        let mut random = [0u8; 2];
        getrandom::fill(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
        let port = LOWEST + u16::from_le_bytes(random) % span;
        if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            return listener.local_addr();
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free loopback port in {LOWEST}..{ephemeral_start} after 200 tries"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_free_and_below_the_ephemeral_range() {
        let addr = unused_loopback_port().unwrap();
        assert!(addr.port() >= LOWEST && addr.port() < 32_768, "{addr}");
        TcpListener::bind(addr).unwrap();
    }
}

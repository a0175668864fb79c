//! The manager's local control socket. Until the gRPC control API lands
//! ([2/6]) it speaks one line: a client connects and reads the manager's
//! [`VersionInfo`](crate::VersionInfo) as JSON.

use std::{
    io::{BufRead, BufReader},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

/// Where the CLI looks for a local manager (`--host`/`SHOAL_HOST` override).
pub const DEFAULT_SOCKET: &str = "/run/shoal/manager.sock";

/// Asks the manager at `path` for its version.
pub fn query_version(path: &Path) -> std::io::Result<crate::VersionInfo> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}

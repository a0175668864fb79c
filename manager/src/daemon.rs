//! `shoal-manager run`: owns a data directory (locked, so two managers never
//! share one) and serves the local control socket.

use std::{
    fs::File,
    io::Write,
    os::{fd::AsRawFd, unix::net::UnixListener},
    path::{Path, PathBuf},
};

use shoal_api::VersionInfo;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another shoal-manager")]
    DataDirInUse(PathBuf),
    #[error("control socket {0} is served by another process")]
    SocketInUse(PathBuf),
}

/// A manager that holds its data directory and control socket.
pub struct Daemon {
    _lock: File,
    listener: UnixListener,
    socket: PathBuf,
}

impl Daemon {
    pub fn start(data_dir: &Path, socket: &Path) -> Result<Self, DaemonError> {
        fn io<'a>(
            what: &'static str,
            path: &'a Path,
        ) -> impl FnOnce(std::io::Error) -> DaemonError + 'a {
            move |source| DaemonError::Io {
                what,
                path: path.to_owned(),
                source,
            }
        }
        std::fs::create_dir_all(data_dir).map_err(io("creating", data_dir))?;
        let lock_path = data_dir.join("LOCK");
        let lock = File::create(&lock_path).map_err(io("opening", &lock_path))?;
        // SAFETY: flock on an open descriptor; released when the File closes.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(DaemonError::DataDirInUse(data_dir.to_owned()));
        }
        if let Some(parent) = socket.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        if socket.exists() {
            // A live manager answers; a dead one left its socket file behind.
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Err(DaemonError::SocketInUse(socket.to_owned()));
            }
            std::fs::remove_file(socket).map_err(io("removing stale", socket))?;
        }
        let listener = UnixListener::bind(socket).map_err(io("binding", socket))?;
        Ok(Self {
            _lock: lock,
            listener,
            socket: socket.to_owned(),
        })
    }

    /// Answers control-socket clients until the process is stopped.
    pub fn serve(&self) {
        loop {
            if let Err(error) = self.serve_one() {
                tracing::warn!(%error, "control socket client failed");
            }
        }
    }

    /// Accepts one client and answers it.
    pub fn serve_one(&self) -> std::io::Result<()> {
        let (mut stream, _) = self.listener.accept()?;
        let info = VersionInfo::of("shoal-manager", env!("CARGO_PKG_VERSION"), 0);
        let line = serde_json::to_string(&info).map_err(std::io::Error::other)?;
        stream.write_all(format!("{line}\n").as_bytes())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_manager_per_data_dir_and_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/manager.sock");
        let first = Daemon::start(&dir.path().join("data"), &socket).unwrap();
        assert!(matches!(
            Daemon::start(&dir.path().join("data"), &dir.path().join("other.sock")),
            Err(DaemonError::DataDirInUse(_))
        ));
        assert!(matches!(
            Daemon::start(&dir.path().join("data2"), &socket),
            Err(DaemonError::SocketInUse(_))
        ));
        drop(first);
        assert!(!socket.exists(), "the socket goes with the daemon");
    }

    #[test]
    fn answers_its_version_and_replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("manager.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap()); // stale file
        let daemon = Daemon::start(&dir.path().join("data"), &socket).unwrap();
        std::thread::scope(|s| {
            let server = s.spawn(|| daemon.serve_one());
            let info = shoal_api::socket::query_version(&socket).unwrap();
            assert_eq!(info.component, "shoal-manager");
            assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
            server.join().unwrap().unwrap();
        });
    }
}

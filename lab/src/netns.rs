//! Network namespaces: listing and creating them, and running Rust code
//! inside one (on a dedicated thread, since `setns` changes only the caller).

use std::{fs::File, os::fd::AsRawFd, path::Path};

use crate::{LabError, cmd};

pub fn exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Every namespace whose name starts with `prefix`.
pub fn list_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Creates the namespace if it is missing, with IPv6 off (the lab is IPv4
/// only, and router solicitations would disturb exact packet counts) and
/// loopback up.
pub fn ensure(name: &str) -> Result<bool, LabError> {
    let created = if exists(name) {
        false
    } else {
        cmd::run("ip", &["netns", "add", name])?;
        true
    };
    for knob in ["all", "default"] {
        write_sysctl(name, &format!("net/ipv6/conf/{knob}/disable_ipv6"), "1")?;
    }
    cmd::ip_in(name, &["link", "set", "lo", "up"])?;
    Ok(created)
}

pub fn delete(name: &str) -> Result<(), LabError> {
    if exists(name) {
        cmd::run("ip", &["netns", "delete", name])?;
    }
    Ok(())
}

/// Pids of every process whose network namespace is `name`.
pub fn pids(name: &str) -> Vec<i32> {
    cmd::stdout("ip", &["netns", "pids", name])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `/proc/sys/<key>` as seen from inside the namespace.
pub fn write_sysctl(netns: &str, key: &str, value: &str) -> Result<(), LabError> {
    let path = format!("/proc/sys/{key}");
    let value = value.to_owned();
    run_in(netns, move || std::fs::write(&path, value))?.map_err(|source| LabError::Io {
        what: format!("writing {key} in {netns}"),
        source,
    })
}

/// Runs `f` on a new thread that has joined the named network namespace.
pub fn run_in<T, F>(netns: &str, f: F) -> Result<T, LabError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    run_in_path(&format!("/run/netns/{netns}"), f)
}

/// Like [`run_in`], with the namespace given as a path (e.g. `/proc/PID/ns/net`).
pub fn run_in_path<T, F>(path: &str, f: F) -> Result<T, LabError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let file = File::open(path).map_err(|source| LabError::Io {
        what: format!("opening {path}"),
        source,
    })?;
    let path_owned = path.to_owned();
    std::thread::spawn(move || {
        // SAFETY: file is an open namespace file; setns affects this thread only.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(LabError::Io {
                what: format!("joining {path_owned}"),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(f())
    })
    .join()
    .map_err(|_| LabError::Panicked(path.to_owned()))?
}

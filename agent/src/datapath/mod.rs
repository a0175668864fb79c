//! The node's eBPF data plane: loading the embedded object, attaching its
//! programs, and typed access to its maps.
//!
//! Everything is pinned under one bpffs tree per node ([`BpfRoot`]), so the
//! data plane keeps working while the agent is stopped or restarting; the
//! agent reconciles against what it finds pinned.

pub mod allow;
mod batch;
mod bpffs;
pub mod conntrack;
mod counters;
pub mod dns;
#[cfg(test)]
mod dns_tests;
pub mod guard;
mod loader;
pub(crate) mod maglev;
pub mod mesh;
pub mod pick;
#[cfg(test)]
mod sources_tests;
pub mod sweep;
pub mod unattached;

pub use bpffs::{BpfRoot, DEFAULT_ROOT};
pub use counters::{CounterMap, InterfaceCount};
pub use loader::{attach_counters, detach_counters, remove_all};

use std::path::PathBuf;

/// The compiled `agent-ebpf` object, embedded at build time by `build.rs`.
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shoal-agent-ebpf"));

/// A digest of [`EBPF_OBJECT`] (FNV-1a, 64 bits, hex), part of every link's
/// pin name: an upgraded agent whose programs changed (with the same map
/// layout) finds no pin of its own and replaces the old programs.
pub(crate) fn code_digest() -> &'static str {
    static DIGEST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DIGEST.get_or_init(|| {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in EBPF_OBJECT {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    })
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("interface {name:?} not found in this network namespace")]
    NoSuchInterface { name: String },
    #[error("bpffs at {path}: {source}")]
    Bpffs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("pinned link {path}: {source}")]
    Link {
        path: PathBuf,
        source: aya::programs::links::LinkError,
    },
    #[error("map {path}: {source}")]
    Map {
        path: PathBuf,
        source: aya::maps::MapError,
    },
    #[error("no counters are pinned under {0} (run `shoal-agent datapath attach` first)")]
    NotAttached(PathBuf),
}

/// Resolves an interface name in the caller's network namespace.
pub fn ifindex_of(name: &str) -> Result<u32, DatapathError> {
    let c_name = std::ffi::CString::new(name).map_err(|_| DatapathError::NoSuchInterface {
        name: name.to_owned(),
    })?;
    // SAFETY: c_name is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(DatapathError::NoSuchInterface {
            name: name.to_owned(),
        });
    }
    Ok(index)
}

/// The name of an interface index in the caller's network namespace, if it still exists.
pub fn ifname_of(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes, as if_indextoname requires.
    let ptr = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into buf.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

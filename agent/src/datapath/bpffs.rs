//! Where a node's pinned eBPF objects live.
//!
//! ```text
//! <root>/v<LAYOUT_VERSION>/maps/IFACE_COUNTERS
//! <root>/v<LAYOUT_VERSION>/links/<ifindex>/count_ingress@<code digest>
//! ```
//! The layout version is in the path because aya reuses a pinned map by name
//! without checking its key and value sizes; the digest of the programs'
//! code is in a link's name so that an agent with other code (same layout)
//! attaches its own programs and takes the old ones away.

use std::path::{Path, PathBuf};

use shoal_agent_common::LAYOUT_VERSION;

use super::DatapathError;

/// `statfs` magic of a bpf filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The default place of one node's tree; the lab gives each node its own root.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/shoal";

#[derive(Clone, Debug)]
pub struct BpfRoot {
    root: PathBuf,
}

impl BpfRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn versioned(&self) -> PathBuf {
        self.root.join(format!("v{LAYOUT_VERSION}"))
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.versioned().join("maps")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    pub fn links_dir(&self, ifindex: u32) -> PathBuf {
        self.versioned().join("links").join(ifindex.to_string())
    }

    /// The pin of `program`'s link on `ifindex`, as this agent's code pins it.
    pub fn link(&self, ifindex: u32, program: &str) -> PathBuf {
        self.link_of_code(ifindex, program, super::code_digest())
    }

    fn link_of_code(&self, ifindex: u32, program: &str, digest: &str) -> PathBuf {
        self.links_dir(ifindex).join(format!("{program}@{digest}"))
    }

    /// Pins of `program` on `ifindex` that other code left (an older or
    /// newer agent, or one from before digests were in the names).
    pub fn other_links(&self, ifindex: u32, program: &str) -> Vec<PathBuf> {
        let current = self.link(ifindex, program);
        let prefix = format!("{program}@");
        let Ok(entries) = std::fs::read_dir(self.links_dir(ifindex)) else {
            return Vec::new();
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name == program || name.starts_with(&prefix)
            })
            .map(|e| e.path())
            .filter(|path| *path != current)
            .collect();
        found.sort();
        found
    }

    /// Checks that the root sits on a bpf filesystem (mounting one at
    /// `/sys/fs/bpf` when nothing is there yet) and creates the directories.
    pub fn prepare(&self) -> Result<(), DatapathError> {
        ensure_bpffs_mounted(Path::new("/sys/fs/bpf"))?;
        let maps = self.maps_dir();
        std::fs::create_dir_all(&maps).map_err(|source| DatapathError::Bpffs {
            path: maps.clone(),
            source,
        })?;
        if !is_bpffs(&maps)? {
            return Err(DatapathError::Bpffs {
                path: maps,
                source: std::io::Error::other("not on a bpf filesystem"),
            });
        }
        self.remove_other_layouts();
        Ok(())
    }

    /// An upgraded agent takes away what an older layout pinned: removing
    /// a pin detaches its link, so the old programs (reading maps of the
    /// old layout) stop handling packets before the new ones start.
    fn remove_other_layouts(&self) {
        let current = format!("v{LAYOUT_VERSION}");
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_layout = name
                .strip_prefix('v')
                .is_some_and(|n| n.parse::<u32>().is_ok());
            if is_layout && name != current {
                tracing::info!(layout = %name, "removing the pins of another eBPF layout");
                if let Err(error) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!(layout = %name, %error, "could not remove an old layout's pins");
                }
            }
        }
    }
}

fn is_bpffs(path: &Path) -> Result<bool, DatapathError> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        DatapathError::Bpffs {
            path: path.to_owned(),
            source: std::io::Error::other("path holds a NUL byte"),
        }
    })?;
    // SAFETY: statfs is plain old data that the kernel fills in.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and stat is a valid out pointer.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(DatapathError::Bpffs {
            path: path.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64, other widths elsewhere
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

fn ensure_bpffs_mounted(mountpoint: &Path) -> Result<(), DatapathError> {
    if is_bpffs(mountpoint)? {
        return Ok(());
    }
    tracing::info!(path = %mountpoint.display(), "mounting bpffs");
    let target = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())
        .expect("mount point has no NUL byte");
    // SAFETY: every pointer is a valid NUL-terminated string; data is null.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(DatapathError::Bpffs {
            path: mountpoint.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_carry_the_layout_version() {
        let root = BpfRoot::new("/sys/fs/bpf/shoal/n1");
        let v = format!("v{LAYOUT_VERSION}");
        assert_eq!(
            root.map("IFACE_COUNTERS"),
            PathBuf::from(format!("/sys/fs/bpf/shoal/n1/{v}/maps/IFACE_COUNTERS"))
        );
        assert_eq!(
            root.link(7, "count_ingress"),
            PathBuf::from(format!(
                "/sys/fs/bpf/shoal/n1/{v}/links/7/count_ingress@{}",
                crate::datapath::code_digest()
            ))
        );
    }

    #[test]
    fn links_pinned_by_other_code_are_found_and_this_code_s_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = BpfRoot::new(dir.path());
        std::fs::create_dir_all(root.links_dir(3)).unwrap();
        let old = root.link_of_code(3, "mesh_ingress", "0000000000000000");
        let legacy = root.links_dir(3).join("mesh_ingress");
        for path in [
            &old,
            &legacy,
            &root.link(3, "mesh_ingress"),
            &root.link(3, "mesh_reply"),
        ] {
            std::fs::write(path, b"").unwrap();
        }
        assert_eq!(root.other_links(3, "mesh_ingress"), vec![legacy, old]);
        assert!(root.other_links(3, "mesh_reply").is_empty());
        assert!(root.other_links(4, "mesh_reply").is_empty());
        assert_eq!(crate::datapath::code_digest().len(), 16);
    }
}

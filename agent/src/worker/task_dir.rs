//! Where a task's files live on the node: `<run dir>/tasks/<task id>`, a
//! tmpfs of the task's own when it has secrets or configs. The run dir is
//! root's alone (`0700`), the task id is checked before it becomes a path
//! part, and the tmpfs is as large as what it holds and read-only once
//! written, so neither the container nor anything else can add to it.

use std::{
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use nix::{
    mount::{MntFlags, MsFlags},
    unistd::SysconfVar,
};
use shoal_api::id::{self, BadId};

/// Mode of the run dir, its `tasks` dir and each task's tmpfs.
const PRIVATE: u32 = 0o700;
/// The smallest tmpfs a task gets, in pages: room for the directory's
/// own bookkeeping, whatever the files' sizes.
const MIN_PAGES: u64 = 4;

/// What stops the agent from keeping tasks' files.
#[derive(Debug, thiserror::Error)]
pub enum TaskDirError {
    #[error(transparent)]
    Id(#[from] BadId),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the agent's run dir {path} belongs to uid {uid}: it holds tasks' secrets and must be root's (give --run-dir a directory of the agent's own)"
    )]
    NotRoot { path: PathBuf, uid: u32 },
    #[error(
        "the agent's run dir {path} is writable by others (mode {mode:04o}): give --run-dir a directory of the agent's own"
    )]
    Shared { path: PathBuf, mode: u32 },
    #[error("{what} {path}: {source}")]
    Mount {
        what: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TaskDirError {
    let path = path.to_owned();
    move |source| TaskDirError::Io { what, path, source }
}

/// Makes `run_dir` and its `tasks` dir root's alone (`0700`), creating
/// them if need be. A run dir others may write to (`/tmp`) is refused
/// rather than taken over; one an older agent left `0755` is tightened.
pub fn secure_run_dir(run_dir: &Path) -> Result<(), TaskDirError> {
    if let Some(parent) = run_dir.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    private_dir(run_dir)?;
    let meta = std::fs::metadata(run_dir).map_err(io("reading", run_dir))?;
    let mode = meta.mode() & 0o7777;
    if meta.uid() != 0 {
        return Err(TaskDirError::NotRoot {
            path: run_dir.to_owned(),
            uid: meta.uid(),
        });
    }
    if mode & 0o022 != 0 || mode & 0o1000 != 0 {
        return Err(TaskDirError::Shared {
            path: run_dir.to_owned(),
            mode,
        });
    }
    if mode != PRIVATE {
        std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(PRIVATE))
            .map_err(io("restricting", run_dir))?;
    }
    private_dir(&run_dir.join("tasks"))
}

/// Creates `dir` with mode `0700` unless it exists.
fn private_dir(dir: &Path) -> Result<(), TaskDirError> {
    match std::fs::DirBuilder::new().mode(PRIVATE).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(io("creating", dir)(e)),
    }
}

/// One task's directory, its id checked.
#[derive(Debug, Clone)]
pub struct TaskDir {
    path: PathBuf,
}

impl TaskDir {
    /// The directory of task `task_id` under `run_dir`; an id that is not
    /// a Shoal id is refused before any path is built.
    pub fn of(run_dir: &Path, task_id: &str) -> Result<Self, BadId> {
        let id = id::check("task", task_id)?;
        Ok(Self {
            path: run_dir.join("tasks").join(id),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory (`0700`), without a tmpfs.
    pub fn create(&self) -> Result<(), TaskDirError> {
        private_dir(&self.path)
    }

    /// A new empty tmpfs of `size` bytes holding at most `files` files on
    /// the directory (replacing one a failed try or a dead agent left).
    pub fn mount_tmpfs(&self, size: u64, files: usize) -> Result<(), TaskDirError> {
        self.create()?;
        if self.is_mounted() {
            self.unmount();
        }
        // nr_inodes counts the root directory too.
        let options = format!("size={size},nr_inodes={},mode=0700", files + 1);
        nix::mount::mount(
            Some("tmpfs"),
            &self.path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(options.as_str()),
        )
        .map_err(|source| TaskDirError::Mount {
            what: "mounting a tmpfs at",
            path: self.path.clone(),
            source,
        })
    }

    /// Makes the tmpfs read-only: once its files are written, nothing
    /// (the agent included) changes them while the task runs.
    pub fn seal(&self) -> Result<(), TaskDirError> {
        nix::mount::mount(
            None::<&str>,
            &self.path,
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|source| TaskDirError::Mount {
            what: "remounting read-only the tmpfs at",
            path: self.path.clone(),
            source,
        })
    }

    pub fn is_mounted(&self) -> bool {
        let wanted = self.path.display().to_string();
        std::fs::read_to_string("/proc/self/mounts")
            .map(|m| {
                m.lines()
                    .any(|l| l.split_whitespace().nth(1) == Some(wanted.as_str()))
            })
            .unwrap_or(false)
    }

    fn unmount(&self) {
        // MNT_DETACH lets it go even while a dying container still holds
        // a bind of one of its files.
        if let Err(error) = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH) {
            tracing::debug!(path = %self.path.display(), %error, "unmounting a task's tmpfs");
        }
    }

    /// Unmounts the tmpfs, if any, and removes the directory.
    pub fn remove(&self) {
        if self.is_mounted() {
            self.unmount();
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The system's page size (4 KiB when it cannot be read).
fn page_size() -> u64 {
    nix::unistd::sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(4096)
}

/// The tmpfs size that holds files of these lengths: each rounded up to
/// whole pages (tmpfs stores a file in pages), at least [`MIN_PAGES`].
pub fn tmpfs_size(lengths: impl IntoIterator<Item = usize>) -> u64 {
    let page = page_size();
    let pages: u64 = lengths
        .into_iter()
        .map(|len| (len as u64).div_ceil(page))
        .sum();
    pages.max(MIN_PAGES) * page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_checked_before_a_path_is_built() {
        let run = Path::new("/run/shoal/agent");
        let dir = TaskDir::of(run, "abc123").unwrap();
        assert_eq!(dir.path(), Path::new("/run/shoal/agent/tasks/abc123"));
        for bad in ["", "..", "../../etc", "a/b", "/etc", "a\0b"] {
            let err = TaskDir::of(run, bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid task id "), "{bad:?}: {err}");
        }
    }

    #[test]
    fn tmpfs_size_is_whole_pages_with_a_floor() {
        let page = page_size();
        assert_eq!(tmpfs_size([]), MIN_PAGES * page);
        assert_eq!(tmpfs_size([1, 2, 3]), MIN_PAGES * page);
        let big = (page * 10) as usize;
        // Each file in pages of its own: 10 + 1 + 1.
        assert_eq!(tmpfs_size([big, 1, 1]), 12 * page);
        assert_eq!(tmpfs_size([big + 1, big - 1]), 21 * page);
    }

    #[test]
    fn the_run_dir_is_made_private_and_a_shared_one_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let run = base.path().join("run/agent");
        secure_run_dir(&run).unwrap();
        for dir in [run.clone(), run.join("tasks")] {
            let mode = std::fs::metadata(&dir).unwrap().mode() & 0o7777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        // Left 0755 by an older agent: tightened.
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        secure_run_dir(&run).unwrap();
        assert_eq!(std::fs::metadata(&run).unwrap().mode() & 0o7777, 0o700);
        // A world-writable dir such as /tmp is not taken over.
        let shared = base.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = secure_run_dir(&shared).unwrap_err().to_string();
        assert!(err.contains("is writable by others (mode 1777)"), "{err}");
        assert_eq!(std::fs::metadata(&shared).unwrap().mode() & 0o7777, 0o1777);
    }
}

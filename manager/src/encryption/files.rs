//! The data directory's permissions: the directory `0700`, every file
//! `0600`, set explicitly on every start (not left to the umask, and fixed
//! on files an older manager created `0644`).

use std::{
    fs::{self, File, OpenOptions, Permissions},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use anyhow::{Context, Result};

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and its parents) if missing and makes it `0700`.
pub fn private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
        .with_context(|| format!("making {} private (mode 0700)", dir.display()))
}

/// Opens `path` for writing, creating it `0600` if missing, and makes it
/// `0600` whatever it was.
pub fn private_file(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .with_context(|| format!("making {} private (mode 0600)", path.display()))?;
    Ok(file)
}

/// Replaces `path` with `bytes` at once (a reader sees the old or the new
/// content, also after a crash), mode `0600`.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = Path::new(&temporary);
    let _ = fs::remove_file(temporary);
    {
        let mut file = private_file(temporary)?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", temporary.display()))?;
    }
    fs::rename(temporary, path).with_context(|| format!("replacing {}", path.display()))?;
    if let Some(parent) = path.parent() {
        // The rename itself is durable once the directory is synced.
        File::open(parent)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", parent.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn modes_are_set_whatever_the_umask_left() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        fs::set_permissions(&data, Permissions::from_mode(0o755)).unwrap();
        private_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);

        let old = data.join("state.redb");
        fs::write(&old, b"x").unwrap();
        fs::set_permissions(&old, Permissions::from_mode(0o644)).unwrap();
        private_file(&old).unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(fs::read(&old).unwrap(), b"x", "opening keeps the content");

        let written = data.join("keys.json");
        write_private(&written, b"one").unwrap();
        write_private(&written, b"two").unwrap();
        assert_eq!(fs::read(&written).unwrap(), b"two");
        assert_eq!(mode(&written), 0o600);
        assert!(!data.join("keys.json.tmp").exists());
    }
}

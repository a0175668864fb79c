//! Files a compose file names (`env_file`, a secret's or config's `file`)
//! read with a bound: `/dev/zero` or a huge file is refused with its name
//! instead of growing the client's memory until the kernel kills it.

use std::{io::Read, path::Path};

/// Far above what a cluster takes (secrets < 500 KiB, configs < 1000 KiB
/// by default, env files are a few lines), far below a machine's memory.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The whole file at `path`, or why not (its path in the message).
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    read_at_most(path, MAX_FILE_BYTES)
}

/// All of `stream` (the standard input, named `name` in errors), or why not.
pub fn read_stream(stream: impl Read, name: &Path) -> Result<Vec<u8>, String> {
    read_limited(stream, name, MAX_FILE_BYTES)
}

fn read_at_most(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| cannot(path, e))?;
    read_limited(file, path, limit)
}

fn read_limited(stream: impl Read, name: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    stream
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot(name, e))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "cannot read {}: larger than {} MiB",
            name.display(),
            limit / (1024 * 1024)
        ));
    }
    Ok(bytes)
}

fn cannot(name: &Path, e: std::io::Error) -> String {
    format!("cannot read {}: {e}", name.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_file_is_refused_with_its_name() {
        let err = read(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(err, "cannot read /dev/zero: larger than 16 MiB");
    }

    #[test]
    fn a_file_at_the_bound_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![b'x'; 3 * 1024 * 1024]).unwrap();
        assert_eq!(read_at_most(&path, 3 * 1024 * 1024).unwrap().len(), 3 << 20);
        let err = read_at_most(&path, 2 * 1024 * 1024).unwrap_err();
        assert!(err.ends_with("larger than 2 MiB"), "{err}");
    }

    #[test]
    fn a_missing_file_names_itself() {
        let err = read(Path::new("/nonexistent/env")).unwrap_err();
        assert!(err.starts_with("cannot read /nonexistent/env: "), "{err}");
    }
}

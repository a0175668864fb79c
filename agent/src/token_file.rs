//! The join token kept in a file (`shoal-agent join --token-file`), as the
//! systemd unit passes it: the token admits a node to the cluster, so the
//! file must be readable by its owner only, as ssh demands of a private key.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading the join token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the join token file {path} can be read by others (mode {mode:04o}): the token admits nodes to the cluster; `chmod 600 {path}`"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error(
        "the join token file {path} holds no token (put the output of `shoal join-token --quiet worker` in it)"
    )]
    Empty { path: PathBuf },
    #[error("the join token file {path} holds more than one line: it should hold the token alone")]
    Garbled { path: PathBuf },
}

/// The token in `path`: the file's only line, surrounding blanks dropped.
/// Refused when group or others have any access to it.
pub fn read(path: &Path) -> Result<String, TokenFileError> {
    let read_error = |source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(read_error)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TokenFileError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let token = lines.next().ok_or_else(|| TokenFileError::Empty {
        path: path.to_owned(),
    })?;
    if lines.next().is_some() {
        return Err(TokenFileError::Garbled {
            path: path.to_owned(),
        });
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("join-token");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn an_owner_only_file_gives_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(dir.path(), "  SHTKN-1-abc-def \n\n", 0o600);
        assert_eq!(read(&path).unwrap(), "SHTKN-1-abc-def");
        let path = file_with(dir.path(), "SHTKN-1-abc-def", 0o400);
        assert_eq!(read(&path).unwrap(), "SHTKN-1-abc-def");
    }

    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let path = file_with(dir.path(), "SHTKN-1-abc-def\n", mode);
            let err = read(&path).unwrap_err().to_string();
            assert!(
                err.contains(&format!("(mode {mode:04o})"))
                    && err.contains(&format!("chmod 600 {}", path.display())),
                "{err}"
            );
        }
    }

    #[test]
    fn missing_empty_and_garbled_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = read(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "reading the join token file {}",
                missing.display()
            )),
            "{err}"
        );
        let path = file_with(dir.path(), " \n", 0o600);
        assert!(
            read(&path)
                .unwrap_err()
                .to_string()
                .contains("holds no token")
        );
        let path = file_with(dir.path(), "a\nb\n", 0o600);
        assert!(
            read(&path)
                .unwrap_err()
                .to_string()
                .contains("more than one line")
        );
    }
}

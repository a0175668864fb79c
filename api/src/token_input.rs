//! Where `shoal-agent join` and `shoal-manager join` get their join token
//! without it standing in `ps` (`/proc/PID/cmdline` is readable by every
//! user of the host): a file only its owner may read (`--token-file`, the
//! systemd unit's way), standard input (`--token-stdin`, as `docker login
//! --password-stdin`), or the environment (`SHOAL_JOIN_TOKEN`; a process's
//! environment is readable by its owner only). `--token` still works, as
//! Docker's `swarm join --token` does, for a quick try by hand.
//!
//! The token is held in a [`SecretToken`]: its `Debug` shows no secret, so
//! no log line can carry it, and its memory is wiped when it is dropped.

use std::{
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use zeroize::Zeroizing;

use crate::token::JoinToken;

/// The environment variable a join token may be given in.
pub const ENV: &str = "SHOAL_JOIN_TOKEN";

/// A token is one short line; anything much longer on stdin is not one.
const MAX_INPUT: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum TokenInputError {
    #[error("reading the join token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the join token file {path} can be read by others (mode {mode:04o}): the token admits nodes to the cluster; `chmod 600 {path}`"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("reading the join token from standard input: {0}")]
    Stdin(std::io::Error),
    #[error(
        "{from} holds no token (give it the output of `shoal join-token --quiet worker` or `manager`)"
    )]
    Empty { from: String },
    #[error("{from} holds more than one line: it should hold the token alone")]
    Garbled { from: String },
    // The problem is in the message, not a `source` (printed twice otherwise).
    #[error("{from} holds no join token: {problem}")]
    Invalid {
        from: String,
        problem: crate::token::TokenError,
    },
    #[error(
        "no join token: give it with --token-file FILE, --token-stdin or the {ENV} environment variable"
    )]
    Missing,
}

/// A join token, kept out of logs and wiped from memory once dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(Zeroizing<String>);

impl SecretToken {
    /// The token's text, for the one request that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretToken {
    fn from(text: String) -> Self {
        Self(Zeroizing::new(text))
    }
}

impl std::fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretToken(<redacted>)")
    }
}

/// The ways a join token was offered on the command line.
#[derive(Debug, Default)]
pub struct Given<'a> {
    /// `--token TOKEN`.
    pub token: Option<&'a str>,
    /// `--token-file FILE`.
    pub file: Option<&'a Path>,
    /// `--token-stdin`.
    pub stdin: bool,
}

/// The token from the first of: `--token`, `--token-file`, `--token-stdin`
/// (clap lets only one of them be given), then `$SHOAL_JOIN_TOKEN`. Its
/// shape is checked here, so a wrong one fails before anything is written.
pub fn read(given: &Given<'_>) -> Result<SecretToken, TokenInputError> {
    let env = std::env::var(ENV).ok().map(Zeroizing::new);
    read_from(given, env.as_deref().map(String::as_str), std::io::stdin())
}

/// [`read`] with the environment's value and standard input passed in.
pub fn read_from(
    given: &Given<'_>,
    env: Option<&str>,
    stdin: impl Read,
) -> Result<SecretToken, TokenInputError> {
    if let Some(token) = given.token {
        return one_line("--token", token);
    }
    if let Some(path) = given.file {
        return read_file(path);
    }
    if given.stdin {
        let mut text = Zeroizing::new(String::new());
        stdin
            .take(MAX_INPUT)
            .read_to_string(&mut text)
            .map_err(TokenInputError::Stdin)?;
        return one_line("standard input", &text);
    }
    match env {
        Some(text) => one_line(ENV, text),
        None => Err(TokenInputError::Missing),
    }
}

/// The token in `path`: the file's only line, surrounding blanks dropped.
/// Refused when group or others have any access to it, as ssh refuses a
/// private key others can read.
pub fn read_file(path: &Path) -> Result<SecretToken, TokenInputError> {
    let read_error = |source| TokenInputError::Read {
        path: path.to_owned(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(read_error)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TokenInputError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(read_error)?);
    one_line(&format!("the join token file {}", path.display()), &text)
}

/// `text`'s only non-blank line, checked to be a join token; `from` names
/// where it came from in errors (never the text itself).
fn one_line(from: &str, text: &str) -> Result<SecretToken, TokenInputError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let token = lines.next().ok_or_else(|| TokenInputError::Empty {
        from: from.to_owned(),
    })?;
    if lines.next().is_some() {
        return Err(TokenInputError::Garbled {
            from: from.to_owned(),
        });
    }
    JoinToken::parse(token).map_err(|problem| TokenInputError::Invalid {
        from: from.to_owned(),
        problem,
    })?;
    Ok(SecretToken::from(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> String {
        JoinToken::new(&"0".repeat(50), &"a".repeat(25)).to_string()
    }

    fn file_with(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("join-token");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn from(given: Given<'_>, env: Option<&str>, stdin: &str) -> Result<String, String> {
        read_from(&given, env, stdin.as_bytes())
            .map(|t| t.expose().to_owned())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_owner_only_file_gives_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(dir.path(), &format!("  {} \n\n", token()), 0o600);
        assert_eq!(read_file(&path).unwrap().expose(), token());
        let path = file_with(dir.path(), &token(), 0o400);
        assert_eq!(read_file(&path).unwrap().expose(), token());
    }

    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let path = file_with(dir.path(), &token(), mode);
            let err = read_file(&path).unwrap_err().to_string();
            assert!(
                err.contains(&format!("(mode {mode:04o})"))
                    && err.contains(&format!("chmod 600 {}", path.display())),
                "{err}"
            );
        }
    }

    #[test]
    fn missing_empty_garbled_and_wrong_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = read_file(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "reading the join token file {}",
                missing.display()
            )),
            "{err}"
        );
        let path = file_with(dir.path(), " \n", 0o600);
        let err = read_file(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "the join token file {} holds no token",
                path.display()
            )),
            "{err}"
        );
        let path = file_with(dir.path(), "a\nb\n", 0o600);
        assert!(
            read_file(&path)
                .unwrap_err()
                .to_string()
                .contains("more than one line")
        );
        let path = file_with(dir.path(), "password123\n", 0o600);
        let err = read_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("holds no join token: invalid join token") && !err.contains("password"),
            "{err}"
        );
    }

    #[test]
    fn stdin_and_the_environment_give_a_token() {
        let t = token();
        let stdin = Given {
            stdin: true,
            ..Default::default()
        };
        assert_eq!(from(stdin, None, &format!("{t}\n")), Ok(t.clone()));
        assert_eq!(from(Given::default(), Some(&t), ""), Ok(t.clone()));
        // A flag wins over the environment (as Docker's flags do).
        let flag = Given {
            token: Some(&t),
            ..Default::default()
        };
        assert_eq!(from(flag, Some("SHTKN-1-other-x"), ""), Ok(t.clone()));
        let stdin = Given {
            stdin: true,
            ..Default::default()
        };
        assert_eq!(from(stdin, Some("ignored"), &t), Ok(t.clone()));
    }

    #[test]
    fn empty_stdin_a_bad_environment_and_no_token_are_explained() {
        let stdin = Given {
            stdin: true,
            ..Default::default()
        };
        let err = from(stdin, None, "").unwrap_err();
        assert!(err.starts_with("standard input holds no token"), "{err}");
        let err = from(Given::default(), Some("nope"), "").unwrap_err();
        assert!(
            err.starts_with("SHOAL_JOIN_TOKEN holds no join token"),
            "{err}"
        );
        let err = from(Given::default(), None, "").unwrap_err();
        assert!(
            err.contains("--token-file FILE, --token-stdin or the SHOAL_JOIN_TOKEN"),
            "{err}"
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let secret = SecretToken::from(token());
        let shown = format!("{secret:?}");
        assert!(
            !shown.contains("SHTKN") && shown.contains("redacted"),
            "{shown}"
        );
    }
}

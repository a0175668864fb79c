//! Client certificates for reaching a manager over TCP, in Docker's way:
//! `--tlscacert`/`--tlscert`/`--tlskey`, or a directory holding `ca.pem`,
//! `cert.pem` and `key.pem` (`SHOAL_CERT_PATH`, default `~/.shoal`), as
//! `shoal cert issue --out DIR` writes it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use shoal_pki::transport::Dialer;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Trust certs signed only by this CA (default: ca.pem in SHOAL_CERT_PATH).
    #[arg(long, global = true, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// Path to TLS certificate file (default: cert.pem in SHOAL_CERT_PATH).
    #[arg(long, global = true, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// Path to TLS key file (default: key.pem in SHOAL_CERT_PATH).
    #[arg(long, global = true, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
    /// Directory holding ca.pem, cert.pem and key.pem for TCP hosts.
    #[arg(long, global = true, env = "SHOAL_CERT_PATH", value_name = "DIR")]
    pub cert_path: Option<PathBuf>,
}

impl TlsArgs {
    fn dir(&self) -> PathBuf {
        self.cert_path.clone().unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".shoal")
        })
    }

    /// The dialer for a TCP host: the client certificate and the CA.
    pub fn dialer(&self) -> Result<Dialer> {
        let dir = self.dir();
        let pick =
            |given: &Option<PathBuf>, name: &str| given.clone().unwrap_or_else(|| dir.join(name));
        let (ca, cert, key) = (
            pick(&self.tlscacert, "ca.pem"),
            pick(&self.tlscert, "cert.pem"),
            pick(&self.tlskey, "key.pem"),
        );
        let read = |path: &Path| {
            std::fs::read_to_string(path).with_context(|| {
                format!(
                    "reading {} (a TCP host takes a client certificate: run `shoal cert issue --out DIR` on a manager, then set SHOAL_CERT_PATH=DIR or --tlscacert/--tlscert/--tlskey)",
                    path.display()
                )
            })
        };
        Dialer::with_certificate(&read(&cert)?, &read(&key)?, &read(&ca)?)
            .context("the client certificate")
    }
}

/// Writes a client's credentials as Docker's three files (the directory
/// 0700, the key 0600).
pub fn write_dir(dir: &Path, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for (name, text, mode) in [
        ("ca.pem", ca_pem, 0o644),
        ("cert.pem", cert_pem, 0o644),
        ("key.pem", key_pem, 0o600),
    ] {
        use std::io::Write;
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

//! A node's own credentials: its key, its certificate chain and the roots
//! it trusts. Renewal and CA rotation replace them in place; connections
//! made afterwards use the new ones, open connections carry on.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use rcgen::{CertificateParams, KeyPair};
use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::WebPkiClientVerifier,
    sign::CertifiedKey,
};

use crate::{Identity, PkiError, Result, transport};

/// A fresh key and a certificate signing request for it. The request names
/// nothing: the CA decides the subject.
pub struct KeyAndCsr {
    pub key_pem: String,
    pub csr_der: Vec<u8>,
}

impl KeyAndCsr {
    pub fn generate() -> Result<Self> {
        let key = Self::generate_raw()?;
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .map_err(PkiError::rcgen("making the certificate signing request"))?;
        Ok(Self {
            key_pem: key.serialize_pem(),
            csr_der: csr.der().to_vec(),
        })
    }

    pub(crate) fn generate_raw() -> Result<KeyPair> {
        KeyPair::generate().map_err(PkiError::rcgen("generating a key"))
    }
}

/// Seals the node's private key on disk: a manager seals it with its data
/// key, so that with autolock the key cannot be read without the unlock key
/// (as swarmkit encrypts its TLS key with the key-encryption key).
pub trait KeySeal: Send + Sync {
    fn seal(&self, key_pem: &[u8]) -> std::result::Result<Vec<u8>, String>;
    fn open(&self, sealed: &[u8]) -> std::result::Result<Vec<u8>, String>;
}

/// The PEM texts a node keeps on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialFiles {
    /// The node's certificate, then any intermediates (leaf first).
    pub chain_pem: String,
    pub key_pem: String,
    /// Every root the node trusts (two while the CA rotates).
    pub roots_pem: String,
}

/// What connections use now.
pub(crate) struct Current {
    pub files: CredentialFiles,
    pub identity: Identity,
    pub certified: Arc<CertifiedKey>,
    pub client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    pub client_config: Arc<rustls::ClientConfig>,
}

/// A node's credentials, shared by its servers and clients.
pub struct Credentials {
    current: RwLock<Arc<Current>>,
    /// Where they are kept, if anywhere: replacing them writes them there.
    dir: Option<PathBuf>,
    /// How the key is sealed there, if it is.
    seal: Option<Arc<dyn KeySeal>>,
    changed: tokio::sync::watch::Sender<u64>,
}

const CHAIN_FILE: &str = "node.crt";
const KEY_FILE: &str = "node.key";
const SEALED_KEY_FILE: &str = "node.key.sealed";
const ROOTS_FILE: &str = "ca.crt";

impl Credentials {
    /// Credentials from PEM texts, kept in memory only.
    pub fn new(files: CredentialFiles) -> Result<Arc<Self>> {
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(build(files)?)),
            dir: None,
            seal: None,
            changed: tokio::sync::watch::channel(0).0,
        }))
    }

    /// Credentials kept in `dir` (0700, files 0600): written now, and again
    /// whenever they are replaced.
    pub fn create_in(dir: &Path, files: CredentialFiles) -> Result<Arc<Self>> {
        Self::create_sealed_in(dir, files, None)
    }

    /// As [`Credentials::create_in`], the key sealed by `seal`.
    pub fn create_sealed_in(
        dir: &Path,
        files: CredentialFiles,
        seal: Option<Arc<dyn KeySeal>>,
    ) -> Result<Arc<Self>> {
        let current = build(files)?;
        write_files(dir, &current.files, seal.as_deref())?;
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(current)),
            dir: Some(dir.to_owned()),
            seal,
            changed: tokio::sync::watch::channel(0).0,
        }))
    }

    /// The credentials kept in `dir`, if it holds any.
    pub fn load(dir: &Path) -> Result<Option<Arc<Self>>> {
        Self::load_sealed(dir, None)
    }

    /// As [`Credentials::load`], the key sealed by `seal`.
    pub fn load_sealed(dir: &Path, seal: Option<Arc<dyn KeySeal>>) -> Result<Option<Arc<Self>>> {
        let current = dir.join(CURRENT);
        let read = |name: &str| {
            let path = current.join(name);
            std::fs::read_to_string(&path).map_err(|source| PkiError::Io {
                what: "reading",
                path,
                source,
            })
        };
        let sealed_path = current.join(SEALED_KEY_FILE);
        let key_pem = match &seal {
            Some(seal) if sealed_path.exists() => {
                let sealed = std::fs::read(&sealed_path).map_err(|source| PkiError::Io {
                    what: "reading",
                    path: sealed_path.clone(),
                    source,
                })?;
                let key = seal.open(&sealed).map_err(|e| {
                    PkiError::Invalid(format!("opening {}: {e}", sealed_path.display()))
                })?;
                String::from_utf8(key).map_err(|_| {
                    PkiError::Invalid(format!("{} holds no PEM key", sealed_path.display()))
                })?
            }
            _ if current.join(KEY_FILE).exists() => read(KEY_FILE)?,
            _ => return Ok(None),
        };
        let files = CredentialFiles {
            chain_pem: read(CHAIN_FILE)?,
            key_pem,
            roots_pem: read(ROOTS_FILE)?,
        };
        let current = build(files)
            .map_err(|e| PkiError::Invalid(format!("the credentials in {}: {e}", dir.display())))?;
        Ok(Some(Arc::new(Self {
            current: RwLock::new(Arc::new(current)),
            dir: Some(dir.to_owned()),
            seal,
            changed: tokio::sync::watch::channel(0).0,
        })))
    }

    pub(crate) fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Who these credentials say this node is.
    pub fn identity(&self) -> Identity {
        self.current().identity.clone()
    }

    pub fn files(&self) -> CredentialFiles {
        self.current().files.clone()
    }

    /// Replaces the credentials (renewal, rotation): saved first, then used
    /// by every connection made from now on.
    pub fn replace(&self, files: CredentialFiles) -> Result<()> {
        let next = build(files)?;
        if let Some(dir) = &self.dir {
            write_files(dir, &next.files, self.seal.as_deref())?;
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Trusts `roots_pem` from now on, keeping the node's certificate.
    pub fn replace_roots(&self, roots_pem: &str) -> Result<()> {
        let mut files = self.files();
        if files.roots_pem == roots_pem {
            return Ok(());
        }
        files.roots_pem = roots_pem.to_owned();
        self.replace(files)
    }

    /// Changes each time the credentials are replaced.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

fn build(files: CredentialFiles) -> Result<Current> {
    let chain = crate::certs_from_pem(&files.chain_pem)?;
    let identity = Identity::of_der(&chain[0])?;
    let key_der =
        pem::parse(&files.key_pem).map_err(|e| PkiError::Invalid(format!("node key PEM: {e}")))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.into_contents()));
    let provider = transport::provider();
    let certified = Arc::new(
        CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
            .map_err(PkiError::rustls("the node key and certificate"))?,
    );
    let roots = Arc::new(root_store(&files.roots_pem)?);
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), Arc::new(provider.clone()))
            // Joining nodes have no certificate yet: the CA service takes
            // them; every other call checks the caller's certificate.
            .allow_unauthenticated()
            .build()
            .map_err(|e| PkiError::Invalid(format!("client verifier: {e}")))?;
    let client_config = Arc::new(transport::client_config(roots.clone(), Some((chain, key)))?);
    Ok(Current {
        files,
        identity,
        certified,
        client_verifier,
        client_config,
    })
}

/// A root store holding every certificate of `roots_pem`.
pub fn root_store(roots_pem: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in crate::certs_from_pem(roots_pem)? {
        roots
            .add(CertificateDer::from(cert.to_vec()))
            .map_err(PkiError::rustls("a root CA certificate"))?;
    }
    Ok(roots)
}

/// The link to the generation of files in use.
const CURRENT: &str = "current";

/// Writes the three files as a new generation (a directory) and then
/// points `current` at it with one rename: a crash or a full disk leaves
/// the old set or the new one, never a new key beside an old certificate.
fn write_files(dir: &Path, files: &CredentialFiles, seal: Option<&dyn KeySeal>) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| PkiError::Io { what, path, source }
    };
    let private_dir = |path: &Path| -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io("creating", path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(io("setting the mode of", path))
    };
    private_dir(dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let generation = format!("v{nanos}");
    let gen_dir = dir.join(&generation);
    private_dir(&gen_dir)?;
    let key = match seal {
        Some(seal) => (
            SEALED_KEY_FILE,
            seal.seal(files.key_pem.as_bytes())
                .map_err(|e| PkiError::Invalid(format!("sealing the node key: {e}")))?,
        ),
        None => (KEY_FILE, files.key_pem.as_bytes().to_vec()),
    };
    for (name, bytes) in [
        (key.0, key.1.as_slice()),
        (CHAIN_FILE, files.chain_pem.as_bytes()),
        (ROOTS_FILE, files.roots_pem.as_bytes()),
    ] {
        use std::io::Write;
        let path = gen_dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_0600()
            .open(&path)
            .map_err(io("writing", &path))?;
        file.write_all(bytes)
            .and_then(|_| file.sync_all())
            .map_err(io("writing", &path))?;
    }
    let link = dir.join(CURRENT);
    let tmp = dir.join(".current.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&generation, &tmp).map_err(io("linking", &tmp))?;
    std::fs::rename(&tmp, &link).map_err(io("replacing", &link))?;
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
    // Earlier generations are no longer needed.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('v') && name != generation {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(())
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::PermissionsExt, time::Duration};

    use super::*;
    use crate::{CertificateAuthority, NodeRequest, Role};

    pub(crate) fn files_for(ca: &CertificateAuthority, id: &str, role: Role) -> CredentialFiles {
        let (chain_pem, key_pem) = ca
            .issue_with_new_key(&NodeRequest {
                node_id: id,
                role,
                cluster_id: "c",
                validity: Duration::from_secs(3600),
            })
            .unwrap();
        CredentialFiles {
            chain_pem,
            key_pem,
            roots_pem: ca.cert_pem().to_owned(),
        }
    }

    /// A toy seal (XOR) for the test: what matters is that the file on
    /// disk is not the PEM, and that it reads back.
    struct Xor;
    impl KeySeal for Xor {
        fn seal(&self, key: &[u8]) -> std::result::Result<Vec<u8>, String> {
            Ok(key.iter().map(|b| b ^ 0x5a).collect())
        }
        fn open(&self, sealed: &[u8]) -> std::result::Result<Vec<u8>, String> {
            self.seal(sealed)
        }
    }

    #[test]
    fn a_sealed_key_is_never_on_disk_in_the_clear() {
        let ca = CertificateAuthority::create("c").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let seal: Arc<dyn KeySeal> = Arc::new(Xor);
        let files = files_for(&ca, "m1", Role::Manager);
        Credentials::create_sealed_in(dir.path(), files.clone(), Some(seal.clone())).unwrap();
        let current = dir.path().join(CURRENT);
        assert!(!current.join(KEY_FILE).exists());
        let on_disk = std::fs::read(current.join(SEALED_KEY_FILE)).unwrap();
        assert!(!String::from_utf8_lossy(&on_disk).contains("PRIVATE KEY"));
        let again = Credentials::load_sealed(dir.path(), Some(seal))
            .unwrap()
            .unwrap();
        assert_eq!(again.files(), files);
    }

    #[test]
    fn kept_on_disk_owner_only_and_replaced_in_place() {
        let ca = CertificateAuthority::create("c").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certificates");
        let creds = Credentials::create_in(&certs, files_for(&ca, "n1", Role::Worker)).unwrap();
        assert_eq!(creds.identity().node_id, "n1");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&certs), 0o700);
        for f in [KEY_FILE, CHAIN_FILE, ROOTS_FILE] {
            assert_eq!(mode(&certs.join(CURRENT).join(f)), 0o600, "{f}");
        }
        let watch = creds.watch();
        creds.replace(files_for(&ca, "n1", Role::Manager)).unwrap();
        assert!(watch.has_changed().unwrap());
        let again = Credentials::load(&certs).unwrap().unwrap();
        assert_eq!(again.identity().role, Role::Manager);
        // One generation is kept: the one in use.
        let generations = std::fs::read_dir(&certs)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('v')
            })
            .count();
        assert_eq!(generations, 1);
        assert!(
            Credentials::load(&dir.path().join("none"))
                .unwrap()
                .is_none()
        );
    }
}

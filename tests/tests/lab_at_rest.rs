//! Encryption at rest on real managers: after a secret with a known marker
//! is created, `grep -r` over every manager's data directory in the lab
//! finds neither the marker, nor a private key, nor a join token's secret —
//! not as they are, nor inside the base64 Raft entries carry.

use std::{io::Write, os::unix::fs::PermissionsExt, path::PathBuf, time::Duration};

use anyhow::{Context, Result, ensure};
use shoal_tests::{lab_cluster::LabCluster, topology::Host};

/// `needle` as it is and inside base64 at each of the three alignments.
fn forms(needle: &str) -> Vec<String> {
    let mut forms = vec![needle.to_owned()];
    for shift in 0..3 {
        let mut shifted = vec![0u8; shift];
        shifted.extend_from_slice(needle.as_bytes());
        let text = shoal_api::base64::encode(&shifted);
        let skip = (shift * 8).div_ceil(6);
        forms.push(text[skip..text.len() - 4].to_owned());
    }
    forms
}

/// The files under `dirs` that `grep -r` finds any of `patterns` in
/// (the manager's own TLS key included: it is sealed with its data key).
fn grep(dirs: &[PathBuf], patterns: &[String]) -> Result<String> {
    let mut list = tempfile::NamedTempFile::new()?;
    for pattern in patterns {
        writeln!(list, "{pattern}")?;
    }
    let output = std::process::Command::new("grep")
        .args(["-r", "-l", "-a", "-F", "-f"])
        .arg(list.path())
        .args(dirs)
        .output()
        .context("running grep")?;
    // 1: no match; 0: matches; anything else: grep failed.
    ensure!(
        output.status.code().is_some_and(|c| c <= 1),
        "grep failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn no_manager_data_dir_holds_a_secret_a_private_key_or_a_token_secret() -> Result<()> {
    let cluster = LabCluster::start(3, false)?;
    let marker = format!("at-rest-marker-{}-7f3a9c1e5b", std::process::id());
    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(marker.as_bytes())?;
    let path = file.path().to_str().context("a UTF-8 temp path")?;
    cluster.shoal(&["secret", "create", "db_password", path])?;
    let mut needles = vec![marker.clone(), "PRIVATE KEY".to_owned()];
    for role in ["worker", "manager"] {
        let token = cluster.shoal(&["join-token", "--quiet", role])?;
        let secret = token.trim().rsplit('-').next().context("a token secret")?;
        needles.push(secret.to_owned());
    }
    let dirs: Vec<PathBuf> = (1..=3)
        .map(|i| shoal_lab::cluster::node_dir(&cluster.lab, &Host::node(i)).join("manager"))
        .collect();
    // Every manager has the secret, and its state file has had time to
    // take it (it trails memory by 50 ms).
    for node in ["n1", "n2", "n3"] {
        cluster.wait(
            &format!("{node}'s manager to have the secret"),
            Duration::from_secs(15),
            || {
                let rows = cluster.json_rows_via(node, &["secret", "ls"]).ok()?;
                (!rows.is_empty()).then_some(())
            },
        )?;
    }
    std::thread::sleep(Duration::from_millis(500));

    // The check itself works: what is meant to be plain is found.
    let plain = grep(&dirs, &["raft_id".to_owned()])?;
    ensure!(
        plain.lines().count() == 3,
        "manager.json in each dir: {plain:?}"
    );

    let patterns: Vec<String> = needles.iter().flat_map(|n| forms(n)).collect();
    let found = grep(&dirs, &patterns)?;
    ensure!(found.is_empty(), "readable in plaintext:\n{found}");
    for dir in &dirs {
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        ensure!(mode == 0o700, "{} is {mode:o}", dir.display());
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let mode = meta.permissions().mode() & 0o777;
            let wanted = if meta.is_dir() { 0o700 } else { 0o600 };
            ensure!(mode == wanted, "{} is {mode:o}", entry.path().display());
        }
    }
    Ok(())
}

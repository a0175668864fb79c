//! Secret and config files of a service's container: a target that stays
//! inside the container, owner ids that are numbers (the agent writes the
//! file before the container's `/etc/passwd` could be read, so `uid=root`
//! would silently be root), a mode of permission bits, and no two files at
//! one path. Each error names the service, the secret or config and the
//! field, as `service web: invalid secret pw uid "root": …`.

use std::collections::BTreeSet;

use shoal_api::{
    file_target,
    pb::{ContainerSpec, FileTarget},
};

use super::{Check, invalid};

pub(super) fn check(service: &str, c: &ContainerSpec) -> Check {
    let mut paths: BTreeSet<String> = BTreeSet::new();
    let secrets = c
        .secrets
        .iter()
        .map(|s| ("secret", &s.secret_name, &s.file));
    let configs = c
        .configs
        .iter()
        .map(|c| ("config", &c.config_name, &c.file));
    for (kind, name, file) in secrets.chain(configs) {
        let file = file.clone().unwrap_or_default();
        let path = one(service, kind, name, &file)?;
        if !name.is_empty() && !paths.insert(path.clone()) {
            return invalid!(
                "service {service}: {kind} {name}: another secret or config is already at {path}"
            );
        }
    }
    Ok(())
}

/// Checks one file; returns where it lands in the container (as the agent
/// places it).
fn one(service: &str, kind: &str, name: &str, file: &FileTarget) -> Result<String, super::Invalid> {
    let target = if file.name.is_empty() {
        name
    } else {
        file.name.as_str()
    };
    if target.contains('\0') || target.ends_with('/') {
        return invalid!(
            "service {service}: invalid {kind} {name} target {target:?}: a file name is expected"
        );
    }
    if target.split('/').any(|part| part == "..") {
        return invalid!(
            "service {service}: invalid {kind} {name} target {target:?}: '..' is not allowed"
        );
    }
    for (field, id) in [("uid", &file.uid), ("gid", &file.gid)] {
        if let Err(problem) = file_target::owner_id(id) {
            return invalid!("service {service}: invalid {kind} {name} {field} {id:?}: {problem}");
        }
    }
    if let Err(problem) = file_target::mode(file.mode) {
        return invalid!(
            "service {service}: invalid {kind} {name} mode {:o}: {problem}",
            file.mode
        );
    }
    Ok(match (target.starts_with('/'), kind) {
        (true, _) => target.to_owned(),
        (false, "secret") => format!("/run/secrets/{target}"),
        (false, _) => format!("/{target}"),
    })
}

#[cfg(test)]
mod tests {
    use shoal_api::pb::{ConfigReference, SecretReference};

    use super::*;

    fn secret(name: &str, target: &str) -> SecretReference {
        SecretReference {
            secret_name: name.into(),
            file: Some(FileTarget {
                name: target.into(),
                uid: "0".into(),
                gid: "0".into(),
                mode: 0o444,
            }),
            ..Default::default()
        }
    }

    fn refused(secrets: Vec<SecretReference>) -> String {
        let c = ContainerSpec {
            secrets,
            ..Default::default()
        };
        check("web", &c).unwrap_err().0
    }

    fn with_file(change: impl FnOnce(&mut FileTarget)) -> SecretReference {
        let mut s = secret("pw", "pw");
        change(s.file.as_mut().unwrap());
        s
    }

    #[test]
    fn targets_stay_inside_and_do_not_collide() {
        let c = ContainerSpec {
            secrets: vec![secret("a", "a"), secret("b", "/etc/b.pem")],
            configs: vec![ConfigReference {
                config_name: "conf".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(check("web", &c), Ok(()));
        assert_eq!(
            refused(vec![secret("pw", "../../etc/passwd")]),
            r#"service web: invalid secret pw target "../../etc/passwd": '..' is not allowed"#
        );
        assert_eq!(
            refused(vec![secret("a", "same"), secret("b", "same")]),
            "service web: secret b: another secret or config is already at /run/secrets/same"
        );
    }

    #[test]
    fn owners_must_be_numbers_naming_service_secret_and_field() {
        assert_eq!(
            refused(vec![with_file(|f| f.uid = "root".into())]),
            r#"service web: invalid secret pw uid "root": a number is expected (user and group names are not looked up)"#
        );
        assert_eq!(
            refused(vec![with_file(|f| f.gid = "staff".into())]),
            r#"service web: invalid secret pw gid "staff": a number is expected (user and group names are not looked up)"#
        );
        let err = refused(vec![with_file(|f| f.uid = "4294967295".into())]);
        assert!(err.contains(r#"uid "4294967295": out of range"#), "{err}");
        let c = ContainerSpec {
            configs: vec![ConfigReference {
                config_name: "app".into(),
                file: Some(FileTarget {
                    uid: "-1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = check("api", &c).unwrap_err().0;
        assert!(
            err.starts_with(r#"service api: invalid config app uid "-1": a number"#),
            "{err}"
        );
        // Empty owner and mode: root and 0444, as Docker's defaults.
        let defaults = with_file(|f| {
            f.uid.clear();
            f.gid.clear();
            f.mode = 0;
        });
        let c = ContainerSpec {
            secrets: vec![defaults],
            ..Default::default()
        };
        assert_eq!(check("web", &c), Ok(()));
    }

    #[test]
    fn modes_past_permission_bits_are_refused() {
        assert_eq!(
            refused(vec![with_file(|f| f.mode = 0o100_644)]),
            "service web: invalid secret pw mode 100644: expected permission bits such as 0444"
        );
        assert!(refused(vec![with_file(|f| f.mode = 0o10000)]).contains("mode 10000"));
        let c = ContainerSpec {
            secrets: vec![with_file(|f| f.mode = 0o7777)],
            ..Default::default()
        };
        assert_eq!(check("web", &c), Ok(()));
    }
}

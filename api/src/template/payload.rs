//! The content of a secret or config whose template driver is `golang`
//! (Swarm's `Templating`): expanded by the agent for each task with
//! Swarm's context — the placeholders of [`super::Context`], and the
//! functions `env "NAME"` (the task's environment), `secret "TARGET"` and
//! `config "TARGET"` (the content of the task's own secret or config at
//! that target), as swarmkit's payload context offers them.

use super::{Context, Template, TemplateError};
use crate::pb::ContainerSpec;

/// The only template driver there is.
pub const GOLANG: &str = "golang";

/// Whether `driver` names a template driver Shoal has; the reason if not.
pub fn check_driver(driver: &str) -> Result<(), String> {
    match driver {
        "" | GOLANG => Ok(()),
        other => Err(format!(
            "unknown template driver {other:?}: the only one is {GOLANG}"
        )),
    }
}

/// What the functions of a payload template read, for one task.
pub struct Payload<'a> {
    /// The task's container: its env and its secret and config targets.
    pub container: &'a ContainerSpec,
    /// A secret's content by its id (the ones delivered with the task).
    pub secret_data: &'a dyn Fn(&str) -> Option<Vec<u8>>,
    /// A config's content by its id.
    pub config_data: &'a dyn Fn(&str) -> Option<Vec<u8>>,
}

impl Payload<'_> {
    /// The value of the task's variable `name`; empty when it has none, as
    /// in Swarm.
    pub fn env(&self, name: &str) -> String {
        self.container
            .env
            .iter()
            .find_map(|entry| {
                let (k, v) = entry.split_once('=')?;
                (k == name).then(|| v.to_owned())
            })
            .unwrap_or_default()
    }

    pub fn secret(&self, target: &str) -> Result<String, TemplateError> {
        let id = self
            .container
            .secrets
            .iter()
            .find(|r| r.file.as_ref().is_some_and(|f| f.name == target))
            .map(|r| r.secret_id.as_str());
        self.content("secret", target, id, self.secret_data)
    }

    pub fn config(&self, target: &str) -> Result<String, TemplateError> {
        let id = self
            .container
            .configs
            .iter()
            .find(|r| r.file.as_ref().is_some_and(|f| f.name == target))
            .map(|r| r.config_id.as_str());
        self.content("config", target, id, self.config_data)
    }

    fn content(
        &self,
        kind: &'static str,
        target: &str,
        id: Option<&str>,
        data: &dyn Fn(&str) -> Option<Vec<u8>>,
    ) -> Result<String, TemplateError> {
        let missing = || TemplateError::NoSuchTarget {
            kind,
            target: target.to_owned(),
        };
        let bytes = data(id.ok_or_else(missing)?).ok_or_else(missing)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Parses a templated content, refusing what could never expand (the
/// manager checks this when the secret or config is created).
pub fn check(data: &[u8]) -> Result<(), TemplateError> {
    Template::parse_with(text(data)?, true).map(drop)
}

fn text(data: &[u8]) -> Result<&str, TemplateError> {
    std::str::from_utf8(data)
        .map_err(|_| TemplateError::Unsupported("content that is not UTF-8 text".to_owned()))
}

/// The content for one task.
pub fn expand(data: &[u8], context: &Context, payload: &Payload) -> Result<Vec<u8>, TemplateError> {
    let template = Template::parse_with(text(data)?, true)?;
    Ok(template.expand_with(context, Some(payload))?.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{ConfigReference, FileTarget, SecretReference};

    fn context() -> Context {
        Context {
            service_name: "app_web".into(),
            node_hostname: "node-1".into(),
            task_name: "app_web.2.t1".into(),
            task_slot: "2".into(),
            ..Default::default()
        }
    }

    fn container() -> ContainerSpec {
        let file = |name: &str| FileTarget {
            name: name.into(),
            ..Default::default()
        };
        ContainerSpec {
            env: vec!["DB_HOST=db".into(), "EMPTY=".into(), "BARE".into()],
            secrets: vec![SecretReference {
                secret_id: "s1".into(),
                secret_name: "app_pw".into(),
                file: Some(file("db_password")),
            }],
            configs: vec![ConfigReference {
                config_id: "c1".into(),
                config_name: "app_base".into(),
                file: Some(file("/etc/base.conf")),
            }],
            ..Default::default()
        }
    }

    fn expand_text(text: &str) -> Result<String, TemplateError> {
        let container = container();
        let secrets = |id: &str| (id == "s1").then(|| b"hunter2".to_vec());
        let configs = |id: &str| (id == "c1").then(|| b"base=1".to_vec());
        let payload = Payload {
            container: &container,
            secret_data: &secrets,
            config_data: &configs,
        };
        expand(text.as_bytes(), &context(), &payload).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn swarm_s_payload_context_expands() {
        assert_eq!(
            expand_text(
                "service={{.Service.Name}} node={{.Node.Hostname}} task={{.Task.Name}}\n\
                 db={{env \"DB_HOST\"}} none=[{{env \"NOPE\"}}]\n\
                 password={{secret \"db_password\"}}\n{{config \"/etc/base.conf\"}}\n"
            )
            .unwrap(),
            "service=app_web node=node-1 task=app_web.2.t1\n\
             db=db none=[]\n\
             password=hunter2\nbase=1\n"
        );
    }

    #[test]
    fn unknown_targets_and_bad_templates_are_refused() {
        assert_eq!(
            expand_text("{{secret \"other\"}}").unwrap_err().to_string(),
            "secret target other not found (the task has no secret at that target)"
        );
        assert!(matches!(
            expand_text("{{config \"/nope\"}}"),
            Err(TemplateError::NoSuchTarget { kind: "config", .. })
        ));
        assert!(check(b"{{env NAME}}").is_err());
        assert!(check(b"{{.Bogus}}").is_err());
        assert!(check(&[0xff, 0xfe]).is_err());
        assert!(check(b"plain {{env \"X\"}}").is_ok());
        assert_eq!(check_driver("golang"), Ok(()));
        assert!(check_driver("jinja").is_err());
    }

    #[test]
    fn payload_functions_are_refused_in_container_fields() {
        assert_eq!(
            Template::parse("{{env \"HOME\"}}"),
            Err(TemplateError::PayloadOnly("env".into()))
        );
    }
}

//! The content of a secret or config whose template driver is `golang`,
//! expanded for one task (Swarm's `Templating`): placeholders such as
//! `{{.Service.Name}}` and `{{.Node.Hostname}}`, and `env`, `secret` and
//! `config` reading the task's own environment, secrets and configs
//! (`shoal_api::template::payload`). Other content is used as it is.

use std::borrow::Cow;

use anyhow::{Context as _, Result};
use shoal_api::{
    pb::{AssignmentSet, Task},
    template::{Context, payload},
};

/// `data` for `task`, expanded when `driver` says so.
pub fn content<'a>(
    kind: &str,
    name: &str,
    data: &'a [u8],
    driver: &str,
    task: &Task,
    set: &AssignmentSet,
    context: &Context,
) -> Result<Cow<'a, [u8]>> {
    if driver.is_empty() {
        return Ok(Cow::Borrowed(data));
    }
    payload::check_driver(driver).map_err(|why| anyhow::anyhow!("{kind} {name}: {why}"))?;
    let container = task
        .spec
        .as_ref()
        .and_then(|s| s.container.clone())
        .unwrap_or_default();
    let secret_data = |id: &str| {
        set.secrets
            .iter()
            .find(|s| s.meta.as_ref().is_some_and(|m| m.id == id))
            .and_then(|s| s.spec.as_ref())
            .map(|s| s.data.clone())
    };
    let config_data = |id: &str| {
        set.configs
            .iter()
            .find(|c| c.meta.as_ref().is_some_and(|m| m.id == id))
            .and_then(|c| c.spec.as_ref())
            .map(|c| c.data.clone())
    };
    let payload = payload::Payload {
        container: &container,
        secret_data: &secret_data,
        config_data: &config_data,
    };
    payload::expand(data, context, &payload)
        .map(Cow::Owned)
        .with_context(|| format!("expanding the template of {kind} {name}"))
}

#[cfg(test)]
mod tests {
    use shoal_api::pb::{
        Config, ConfigReference, ConfigSpec, ContainerSpec, FileTarget, Meta, TaskSpec,
    };

    use super::*;

    #[test]
    fn a_golang_config_is_expanded_for_the_task_and_others_are_not() {
        let task = Task {
            service_name: "app_web".into(),
            spec: Some(TaskSpec {
                container: Some(ContainerSpec {
                    env: vec!["GREETING=hello".into()],
                    configs: vec![ConfigReference {
                        config_id: "c2".into(),
                        config_name: "app_other".into(),
                        file: Some(FileTarget {
                            name: "/other".into(),
                            ..Default::default()
                        }),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let set = AssignmentSet {
            configs: vec![Config {
                meta: Some(Meta {
                    id: "c2".into(),
                    ..Default::default()
                }),
                spec: Some(ConfigSpec {
                    data: b"other".to_vec(),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        };
        let context = Context {
            service_name: "app_web".into(),
            node_hostname: "n1".into(),
            ..Default::default()
        };
        let template =
            b"{{.Service.Name}} on {{.Node.Hostname}}: {{env \"GREETING\"}} {{config \"/other\"}}";
        let out = content("config", "app_t", template, "golang", &task, &set, &context).unwrap();
        assert_eq!(&*out, b"app_web on n1: hello other");
        let plain = content("config", "app_t", template, "", &task, &set, &context).unwrap();
        assert_eq!(&*plain, &template[..]);
        let error = content(
            "config",
            "app_t",
            b"{{.Bogus}}",
            "golang",
            &task,
            &set,
            &context,
        )
        .unwrap_err();
        assert!(
            format!("{error:#}")
                .contains("expanding the template of config app_t: unknown placeholder .Bogus"),
            "{error:#}"
        );
    }
}

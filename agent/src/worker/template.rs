//! Swarm's placeholders in a service's hostname: `{{.Service.Name}}`,
//! `{{.Task.Slot}}`, `{{.Node.Hostname}}`, … expanded per task.

use shoal_api::pb::Task;

/// Expands the placeholders Swarm supports; unknown ones stay as written.
pub fn expand(template: &str, task: &Task, node_id: &str, node_hostname: &str) -> String {
    let task_id = task.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
    let slot = if task.slot > 0 {
        task.slot.to_string()
    } else {
        node_id.to_owned()
    };
    let values = [
        ("Service.Name", task.service_name.clone()),
        ("Service.ID", task.service_id.clone()),
        ("Task.ID", task_id.to_owned()),
        ("Task.Slot", slot.clone()),
        (
            "Task.Name",
            format!("{}.{slot}.{task_id}", task.service_name),
        ),
        ("Node.ID", node_id.to_owned()),
        ("Node.Hostname", node_hostname.to_owned()),
    ];
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = rest[start + 2..start + end].trim().trim_start_matches('.');
        match values.iter().find(|(key, _)| *key == inner) {
            Some((_, value)) => out.push_str(value),
            None => out.push_str(&rest[start..start + end + 2]),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::pb::Meta;

    #[test]
    fn expands_swarm_placeholders() {
        let task = Task {
            meta: Some(Meta {
                id: "t1".into(),
                ..Default::default()
            }),
            service_id: "s1".into(),
            service_name: "web".into(),
            slot: 3,
            ..Default::default()
        };
        assert_eq!(
            expand("{{.Service.Name}}-{{.Task.Slot}}", &task, "n1", "host1"),
            "web-3"
        );
        assert_eq!(
            expand("{{.Node.Hostname}}.{{ .Task.ID }}", &task, "n1", "host1"),
            "host1.t1"
        );
        assert_eq!(expand("x{{.Unknown}}y", &task, "n1", "h"), "x{{.Unknown}}y");
        assert_eq!(expand("plain", &task, "n1", "h"), "plain");
        assert_eq!(
            expand("open{{.Task.Slot", &task, "n1", "h"),
            "open{{.Task.Slot"
        );
    }
}

//! `inspect` output as Docker's: an indented JSON array (four spaces), or
//! with `-f json` one compact array, or with `-f TEMPLATE` the template run
//! on each object (the API's shape, the same fields the JSON shows).

use serde::Serialize;
use serde_json::Value;

use super::template::{GoTemplate, TemplateError, to_value};

pub fn render(values: &[Value], format: Option<&str>) -> Result<String, TemplateError> {
    match format.unwrap_or("") {
        "" => {
            if values.is_empty() {
                return Ok("[]\n".to_owned());
            }
            let mut out = Vec::new();
            let mut serializer = serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(b"    "),
            );
            values
                .serialize(&mut serializer)
                .map_err(|e| TemplateError::from(e.to_string()))?;
            Ok(format!("{}\n", String::from_utf8_lossy(&out)))
        }
        "json" => Ok(format!("{}\n", Value::Array(values.to_vec()))),
        text => {
            let template = GoTemplate::parse(text)?;
            let mut out = String::new();
            for value in values {
                out.push_str(&template.execute(&to_value(value))?);
                out.push('\n');
            }
            if out.is_empty() {
                out.push('\n');
            }
            Ok(out)
        }
    }
}

/// After printing what was found, the references that were not, as one
/// error (Docker prints the found objects and fails for the rest).
pub fn fail_on_missing(missing: Vec<anyhow::Error>) -> anyhow::Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = missing.iter().map(|e| format!("{e:#}")).collect();
    anyhow::bail!("{}", text.join("\n"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn service() -> Value {
        json!({
            "ID": "abc",
            "Spec": { "Name": "web", "Labels": { "a": "1", "b": "2" }, "TaskTemplate": { "ContainerSpec": { "Args": ["x", "y"] } } },
        })
    }

    #[test]
    fn plain_inspect_is_an_array_indented_by_four() {
        let out = render(&[json!({ "ID": "abc" })], None).unwrap();
        assert_eq!(out, "[\n    {\n        \"ID\": \"abc\"\n    }\n]\n");
        assert_eq!(render(&[], None).unwrap(), "[]\n");
        assert_eq!(
            render(&[json!({ "ID": "abc" })], Some("json")).unwrap(),
            "[{\"ID\":\"abc\"}]\n"
        );
    }

    #[test]
    fn templates_run_on_each_object() {
        let values = [service(), service()];
        assert_eq!(
            render(&values, Some("{{.Spec.Name}}")).unwrap(),
            "web\nweb\n"
        );
        assert_eq!(
            render(&values[..1], Some("{{json .Spec.Labels}}")).unwrap(),
            "{\"a\":\"1\",\"b\":\"2\"}\n"
        );
        assert_eq!(
            render(&values[..1], Some("{{.Spec.Labels}}")).unwrap(),
            "map[a:1 b:2]\n"
        );
        assert_eq!(
            render(
                &values[..1],
                Some("{{range .Spec.TaskTemplate.ContainerSpec.Args}}<{{.}}>{{end}}")
            )
            .unwrap(),
            "<x><y>\n"
        );
        assert_eq!(
            render(&values[..1], Some("{{index .Spec.Labels \"b\"}}")).unwrap(),
            "2\n"
        );
    }

    #[test]
    fn a_missing_field_is_an_error_naming_it() {
        let error = render(&[service()], Some("{{.Spec.Nope}}"))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("template parsing error: "), "{error}");
        assert!(error.contains("Nope"), "{error}");
    }
}

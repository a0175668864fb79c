//! Listings (`ls`, `ps`) as Docker prints them: each row is the object
//! Docker's formatter context would be (the same field names, the same
//! strings), rendered through `--format`: Docker's default table, `table
//! TEMPLATE`, `json` (one object per line) or any Go template.

use serde_json::Value;

use super::{
    Format,
    tabwriter::align,
    template::{GoTemplate, TemplateError, template_text, to_value},
};

/// What a kind of listing looks like by default, and its column headings
/// (`table {{.ID}}` prints the heading of `ID`).
pub struct Columns {
    /// Docker's default table format for this listing.
    pub table: &'static str,
    /// (field, heading) for each field a table template may name.
    pub headers: &'static [(&'static str, &'static str)],
}

/// Rows to print, each an object of Docker's field names.
pub struct Listing {
    columns: &'static Columns,
    rows: Vec<Value>,
}

impl Listing {
    pub fn new(columns: &'static Columns) -> Self {
        Self {
            columns,
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, row: Value) {
        self.rows.push(row);
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn print(&self, format: &Format, quiet: bool) -> Result<(), TemplateError> {
        print!("{}", self.render(format, quiet)?);
        Ok(())
    }

    /// The listing as `print` writes it. `quiet` prints IDs unless a
    /// template of the user's own was given (Docker's choice too).
    pub fn render(&self, format: &Format, quiet: bool) -> Result<String, TemplateError> {
        let source = match format.as_str() {
            "table" if quiet => "{{.ID}}",
            "table" => self.columns.table,
            "json" => "{{json .}}",
            other => other,
        };
        let text = template_text(source);
        let template = GoTemplate::parse(&text)?;
        let mut body = String::new();
        for row in &self.rows {
            body.push_str(&template.execute(&to_value(row))?);
            body.push('\n');
        }
        if !source.starts_with("table") {
            return Ok(body);
        }
        let headers: serde_json::Map<String, Value> = self
            .columns
            .headers
            .iter()
            .map(|(field, heading)| (field.to_string(), Value::String(heading.to_string())))
            .collect();
        let header =
            GoTemplate::parse_header(&text)?.execute(&to_value(&Value::Object(headers)))?;
        Ok(align(&format!("{header}\n{body}")))
    }
}

/// Docker's `formatter.Ellipsis`: at most `max` columns, the last one `…`
/// when cut.
pub fn ellipsis(text: &str, max: usize) -> String {
    use super::tabwriter::display_width;
    if display_width(text) <= max {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w > max.saturating_sub(1) {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// Labels as Docker's listings show them: `k=v` pairs, sorted, by commas.
pub fn labels_text<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut pairs: Vec<String> = labels
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    pairs.sort();
    pairs.join(",")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    static COLUMNS: Columns = Columns {
        table: "table {{.ID}}\t{{.Name}}\t{{.Mode}}",
        headers: &[("ID", "ID"), ("Name", "NAME"), ("Mode", "MODE")],
    };

    fn listing() -> Listing {
        let mut listing = Listing::new(&COLUMNS);
        listing.row(json!({ "ID": "abc123def456", "Name": "web", "Mode": "replicated", "Labels": { "tier": "front" } }));
        listing
            .row(json!({ "ID": "0123456789ab", "Name": "数据库", "Mode": "global", "Labels": {} }));
        listing
    }

    fn render(format: &str, quiet: bool) -> String {
        listing()
            .render(&format.parse().unwrap(), quiet)
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn the_default_table_is_dockers_tabwriter_layout() {
        assert_eq!(
            render("table", false),
            "ID             NAME      MODE\n\
             abc123def456   web       replicated\n\
             0123456789ab   数据库    global\n"
        );
    }

    #[test]
    fn a_table_template_names_its_own_columns() {
        assert_eq!(
            render(r"table {{.Name}}\t{{.ID}}", false),
            "NAME      ID\nweb       abc123def456\n数据库    0123456789ab\n"
        );
    }

    #[test]
    fn quiet_prints_ids_and_json_one_object_per_line() {
        assert_eq!(render("table", true), "abc123def456\n0123456789ab\n");
        let first = render("json", false).lines().next().unwrap().to_owned();
        let row: Value = serde_json::from_str(&first).unwrap();
        assert_eq!(row["Name"], "web");
        assert_eq!(row["Labels"]["tier"], "front");
    }

    #[test]
    fn go_templates_see_fields_maps_and_dockers_functions() {
        assert_eq!(render("{{.Name}}", false), "web\n数据库\n");
        assert_eq!(
            render("{{json .Labels}}", false),
            "{\"tier\":\"front\"}\n{}\n"
        );
        assert_eq!(render("{{.Labels}}", false), "map[tier:front]\nmap[]\n");
        assert_eq!(
            render(
                r#"{{range $k, $v := .Labels}}{{$k}}={{$v}}{{end}}|{{index .Labels "tier"}}"#,
                false
            ),
            "tier=front|front\n|<no value>\n"
        );
        assert_eq!(
            render(r#"{{upper .Mode}} {{title "hello world"}} {{join (split .ID "5") "-"}} [{{pad .Name 1 2}}] {{truncate .ID 3}} {{lower "ABC"}}"#, false)
                .lines()
                .next()
                .unwrap(),
            "REPLICATED Hello World abc123def4-6 [ web  ] abc abc"
        );
        // A quiet listing still honours a template of the user's own.
        assert_eq!(render("{{.Mode}}", true), "replicated\nglobal\n");
    }

    #[test]
    fn bad_templates_say_so_as_docker_does() {
        let parse = render("{{.Name", false);
        assert!(parse.starts_with("template parsing error: "), "{parse}");
        let function = render("{{nosuch .Name}}", false);
        assert!(
            function.starts_with("template parsing error: "),
            "{function}"
        );
        assert!(function.contains("nosuch"), "{function}");
        let field = render("{{.Nope}}", false);
        assert!(field.contains("Nope"), "{field}");
    }

    #[test]
    fn ellipsis_cuts_by_display_width() {
        assert_eq!(ellipsis("short", 30), "short");
        assert_eq!(ellipsis("abcdefghij", 5), "abcd…");
        assert_eq!(ellipsis("数据库数据库", 5), "数据…");
    }
}

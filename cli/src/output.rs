//! Output as Docker prints it: aligned tables, `--format json` (one object
//! per line with Docker's field names), and inspect's indented JSON array.

use clap::ValueEnum;
use serde_json::Value;

#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// Rows of (Docker field name, value); printed as a table or JSON lines.
pub struct Listing {
    columns: Vec<(&'static str, &'static str)>,
    rows: Vec<Vec<String>>,
}

impl Listing {
    /// `columns`: (table heading, JSON field name).
    pub fn new(columns: &[(&'static str, &'static str)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, values: Vec<String>) {
        self.rows.push(values);
    }

    pub fn print(&self, format: Format, quiet: bool) {
        print!("{}", self.render(format, quiet));
    }

    /// The listing as `print` writes it: IDs only (`quiet`), JSON lines, or
    /// an aligned table.
    pub fn render(&self, format: Format, quiet: bool) -> String {
        let mut out = String::new();
        if quiet {
            for row in &self.rows {
                out.push_str(row[0].trim_start_matches(" \\_ "));
                out.push('\n');
            }
            return out;
        }
        match format {
            Format::Json => {
                for row in &self.rows {
                    let object: serde_json::Map<String, Value> = self
                        .columns
                        .iter()
                        .zip(row)
                        .map(|((_, field), value)| {
                            (field.to_string(), Value::String(value.trim().to_owned()))
                        })
                        .collect();
                    out.push_str(&Value::Object(object).to_string());
                    out.push('\n');
                }
            }
            Format::Table => {
                let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| h.len()).collect();
                for row in &self.rows {
                    for (w, v) in widths.iter_mut().zip(row) {
                        *w = (*w).max(v.chars().count());
                    }
                }
                let mut line = |cells: Vec<&str>| {
                    let mut text = String::new();
                    let last = cells.len() - 1;
                    for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                        if i == last {
                            text.push_str(cell);
                        } else {
                            text.push_str(&format!("{cell:<width$}", width = w + 3));
                        }
                    }
                    out.push_str(text.trim_end());
                    out.push('\n');
                };
                line(self.columns.iter().map(|(h, _)| *h).collect());
                for row in &self.rows {
                    line(row.iter().map(String::as_str).collect());
                }
            }
        }
        out
    }
}

/// Inspect's output: an indented JSON array, as `docker inspect`.
pub fn print_inspect(values: Vec<Value>) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&Value::Array(values))?);
    Ok(())
}

/// RFC 3339 time of unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// "8 seconds ago".
pub fn ago(ms: i64) -> String {
    format!(
        "{} ago",
        shoal_api::display::human_duration(shoal_api::now_ms() - ms)
    )
}

/// Docker's capitalised state words: "Running", "Shutdown".
pub fn title(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// IDs shown in tables: 12 characters unless --no-trunc.
pub fn short(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_owned()
    } else {
        id.chars().take(12).collect()
    }
}

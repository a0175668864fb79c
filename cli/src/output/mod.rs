//! Output as Docker prints it: `--format` Go templates over Docker's field
//! names, tables aligned by display width, `--format json`, inspect's JSON,
//! and `--filter`.

pub mod filter;
pub mod inspect;
pub mod listing;
pub mod tabwriter;
pub mod template;

use std::{convert::Infallible, fmt, str::FromStr};

use serde_json::Value;

pub use filter::Filters;
pub use listing::{Columns, Listing};

/// `--format` of a listing: `table` (Docker's default table), `table
/// TEMPLATE`, `json`, or a Go template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format(String);

impl Format {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Tables (default or `table TEMPLATE`) show history as ` \_ ` rows
    /// and cut long cells; templates and JSON get the values whole.
    pub fn is_table(&self) -> bool {
        self.0.starts_with("table")
    }
}

impl Default for Format {
    fn default() -> Self {
        Self("table".to_owned())
    }
}

impl FromStr for Format {
    type Err = Infallible;

    fn from_str(text: &str) -> Result<Self, Infallible> {
        Ok(if text.is_empty() {
            Self::default()
        } else {
            Self(text.to_owned())
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Inspect's output: an indented JSON array as `docker inspect` prints it,
/// or with `-f`/`--format` compact `json` or a Go template.
pub fn print_inspect_as(values: Vec<Value>, format: Option<&str>) -> anyhow::Result<()> {
    print!("{}", inspect::render(&values, format)?);
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

//! Where a key path (`services.web.deploy.replicas`) sits in a compose
//! file's text, so an error found after parsing (a wrong type, an unknown
//! key, a missing variable) can name its line and column. The parsed
//! value keeps no positions; this reads the block-style YAML that compose
//! files are written in. Flow style (`{a: 1}`, `[a, b]`) is located to the
//! nearest enclosing key.

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// `services.web.ports[0].target`, as users read it.
pub fn display(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

struct Line<'a> {
    /// Spaces before the first character.
    raw: usize,
    /// Column of the content after any `- ` item markers.
    indent: usize,
    /// Starts with an item marker.
    dash: bool,
    rest: &'a str,
}

fn lines(text: &str) -> Vec<Option<Line<'_>>> {
    text.lines()
        .map(|line| {
            let raw = line.len() - line.trim_start_matches(' ').len();
            let mut rest = &line[raw..];
            if rest.is_empty() || rest.starts_with('#') || rest.starts_with("---") {
                return None;
            }
            let mut indent = raw;
            let dash = rest.starts_with("- ") || rest == "-";
            while rest == "-" || rest.starts_with("- ") {
                let after = &rest[1..];
                let spaces = after.len() - after.trim_start_matches(' ').len();
                indent += 1 + spaces;
                rest = &after[spaces..];
            }
            Some(Line {
                raw,
                indent,
                dash,
                rest,
            })
        })
        .collect()
}

/// `key:` (plain or quoted) at the start of `rest`: the byte length of the
/// key with its colon.
fn key_prefix(rest: &str, key: &str) -> Option<usize> {
    for quoted in [key.to_owned(), format!("\"{key}\""), format!("'{key}'")] {
        if let Some(after) = rest.strip_prefix(quoted.as_str()) {
            let trimmed = after.trim_start_matches(' ');
            if let Some(value) = trimmed.strip_prefix(':')
                && (value.is_empty() || value.starts_with(' '))
            {
                return Some(rest.len() - value.len());
            }
        }
    }
    None
}

/// Where a key path was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// How many steps of the path were found.
    pub depth: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column of the last key (or item) found.
    pub key_column: usize,
    /// 1-based column of its value when on the same line, else the key's.
    pub column: usize,
}

/// (how many steps of `path` were found, line, column of the value), 1-based.
#[cfg(test)]
pub fn locate(text: &str, path: &[Seg]) -> (usize, usize, usize) {
    let found = find(text, path);
    (found.depth, found.line, found.column)
}

/// Where `path` (or the deepest part of it that exists) is in `text`.
pub fn find(text: &str, path: &[Seg]) -> Found {
    let lines = lines(text);
    let mut found = Found {
        depth: 0,
        line: 1,
        key_column: 1,
        column: 1,
    };
    // The block being searched: lines [lo, hi) deeper than `parent`.
    let (mut lo, mut hi, mut parent): (usize, usize, isize) = (0, lines.len(), -1);
    for (depth, seg) in path.iter().enumerate() {
        let content = |i: usize| lines[i].as_ref();
        match seg {
            Seg::Key(key) => {
                let Some(child) = (lo..hi)
                    .filter_map(content)
                    .map(|l| l.indent)
                    .find(|&indent| indent as isize > parent)
                else {
                    return found;
                };
                let Some(at) = (lo..hi).find(|&i| {
                    content(i)
                        .is_some_and(|l| l.indent == child && key_prefix(l.rest, key).is_some())
                }) else {
                    return found;
                };
                let line = content(at).expect("found above");
                let key_len = key_prefix(line.rest, key).unwrap_or(0);
                let value = &line.rest[key_len..];
                let value_col = line.indent + key_len + (value.len() - value.trim_start().len());
                let col = if value.trim().is_empty() || value.trim_start().starts_with('#') {
                    line.indent
                } else {
                    value_col
                };
                found = Found {
                    depth: depth + 1,
                    line: at + 1,
                    key_column: line.indent + 1,
                    column: col + 1,
                };
                let end = (at + 1..hi)
                    .find(|&i| content(i).is_some_and(|l| l.indent <= child))
                    .unwrap_or(hi);
                (lo, hi, parent) = (at + 1, end, child as isize);
            }
            Seg::Index(index) => {
                let items: Vec<usize> = (lo..hi)
                    .filter(|&i| content(i).is_some_and(|l| l.dash && l.raw as isize >= parent))
                    .collect();
                let Some(first_raw) = items.first().and_then(|&i| content(i)).map(|l| l.raw) else {
                    return found;
                };
                let items: Vec<usize> = items
                    .into_iter()
                    .filter(|&i| content(i).is_some_and(|l| l.raw == first_raw))
                    .collect();
                let Some(&at) = items.get(*index) else {
                    return found;
                };
                let end = items.get(index + 1).copied().unwrap_or(hi);
                let line = content(at).expect("found above");
                found = Found {
                    depth: depth + 1,
                    line: at + 1,
                    key_column: line.indent + 1,
                    column: line.indent + 1,
                };
                // The item's own keys start on its line, after the marker.
                (lo, hi, parent) = (at, end, first_raw as isize);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> Vec<Seg> {
        text.split('.')
            .flat_map(|part| {
                let mut segs = Vec::new();
                let mut rest = part;
                if let Some(open) = rest.find('[') {
                    segs.push(Seg::Key(rest[..open].to_owned()));
                    rest = &rest[open..];
                    while let Some(r) = rest.strip_prefix('[') {
                        let close = r.find(']').unwrap();
                        segs.push(Seg::Index(r[..close].parse().unwrap()));
                        rest = &r[close + 1..];
                    }
                } else {
                    segs.push(Seg::Key(rest.to_owned()));
                }
                segs
            })
            .collect()
    }

    const FILE: &str = "version: \"3\"
# a comment
services:
  web:
    image: shoal/echo:1
    ports:
      - \"80:80\"
      - target: 81
        published: 8081
    deploy:
      replicas: two
  db:
    image: x
    secrets:
    - source: a
      target: b
    - source: c
";

    #[test]
    fn keys_items_and_values_are_found() {
        assert_eq!(
            locate(FILE, &path("services.web.deploy.replicas")),
            (4, 11, 17)
        );
        assert_eq!(locate(FILE, &path("services.web.image")), (3, 5, 12));
        assert_eq!(
            locate(FILE, &path("services.web.ports[1].published")),
            (5, 9, 20)
        );
        assert_eq!(locate(FILE, &path("services.web.ports[0]")), (4, 7, 9));
        assert_eq!(
            locate(FILE, &path("services.db.secrets[1].source")),
            (5, 17, 15)
        );
        assert_eq!(
            locate(FILE, &path("services.db.secrets[0].target")),
            (5, 16, 15)
        );
        assert_eq!(locate(FILE, &path("services.db")), (2, 12, 3));
    }

    #[test]
    fn what_is_not_there_is_located_to_its_nearest_parent() {
        assert_eq!(locate(FILE, &path("services.web.deploy.mode")), (3, 10, 5));
        assert_eq!(locate(FILE, &path("services.cache.image")), (1, 3, 1));
        assert_eq!(
            display(&path("services.web.ports[1].published")),
            "services.web.ports[1].published"
        );
    }
}

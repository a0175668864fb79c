//! The one place that knows which YAML crate Shoal uses: `yaml_serde`, the
//! maintained fork of the archived `serde_yaml` (same data model, same
//! error positions). Everything else sees [`Value`] and [`parse`].
//!
//! Compose files come from anywhere, so reading one is bounded the way
//! Docker's loader (`yaml.v3`) bounds it: a file that nests too deep or
//! whose aliases expand to too many values is refused with an error that
//! says so, in milliseconds, instead of taking seconds and gigabytes.

use std::cell::Cell;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
pub use yaml_serde::{Mapping, Value};

use super::locate::Seg;

/// How deep collections may nest. Compose files need a dozen levels;
/// `yaml_serde` itself stops at 128 with a vaguer message.
pub const MAX_DEPTH: usize = 100;

/// How many values a document may hold once its aliases are expanded.
/// The largest real compose files hold a few thousand; this is far above
/// them and still small enough to build in a fraction of a second.
pub const MAX_VALUES: usize = 250_000;

/// A YAML syntax error's place and message (line and column from 1).
#[derive(Debug)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl SyntaxError {
    fn at_start(message: String) -> Self {
        Self {
            line: 1,
            column: 1,
            message,
        }
    }
}

/// Parses the first document of `text` (as Docker does; later ones are
/// ignored), with anchors resolved and `<<` merge keys applied. A UTF-8
/// byte order mark before the first line is skipped.
pub fn parse(text: &str) -> Result<Value, SyntaxError> {
    let text = strip_bom(text);
    check_flow_depth(text)?;
    let Some(document) = yaml_serde::Deserializer::from_str(text).next() else {
        return Ok(Value::Mapping(Mapping::new()));
    };
    let budget = Budget {
        values: Cell::new(0),
    };
    let mut value = Bounded {
        budget: &budget,
        depth: 0,
    }
    .deserialize(document)
    .map_err(syntax_error)?;
    value.apply_merge().map_err(|e| {
        SyntaxError::at_start(format!("merge key: {}", without_position(&e.to_string())))
    })?;
    // An empty file is an empty project, not a null one.
    Ok(match value {
        Value::Null => Value::Mapping(Mapping::new()),
        other => other,
    })
}

/// The text without a UTF-8 byte order mark (editors on Windows add one).
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

fn syntax_error(e: yaml_serde::Error) -> SyntaxError {
    let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
    let message = without_position(&e.to_string());
    let message = match message.as_str() {
        "repetition limit exceeded" => "aliases are expanded too many times (a file that \
             repeats one anchor over and over, as a \"billion laughs\" attack does)"
            .to_owned(),
        "recursion limit exceeded" => {
            format!("collections nest deeper than {MAX_DEPTH} levels")
        }
        _ => message,
    };
    SyntaxError {
        line,
        column,
        message,
    }
}

/// The crate appends "at line L column C"; callers print their own.
fn without_position(message: &str) -> String {
    message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_owned()
}

/// Flow collections (`[[[…`) nested past [`MAX_DEPTH`] are refused before
/// the parser sees them: its cost grows with the square of their depth
/// (40,000 took 9 s). This reads just enough YAML to tell a bracket that
/// opens a collection from one inside a quoted, plain or block scalar or a
/// comment; what it cannot tell it leaves to the parser, which bounds
/// depth again.
fn check_flow_depth(text: &str) -> Result<(), SyntaxError> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    // The indentation of a `|`/`>` header: more indented lines are text.
    let mut block_scalar: Option<usize> = None;
    for (number, line) in text.split('\n').enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(header) = block_scalar {
            if quote.is_none() && (line.trim().is_empty() || indent > header) {
                continue;
            }
            block_scalar = None;
        }
        // In block context, a node may start at the start of a line, after
        // `key: ` and after an item marker (`- `, `? `).
        let mut node_start = depth == 0 && quote.is_none();
        let mut marker = false;
        let mut previous = ' ';
        let mut chars = line.chars().enumerate().peekable();
        while let Some((column, c)) = chars.next() {
            if let Some(q) = quote {
                match (q, c) {
                    ('\'', '\'') if chars.peek().is_some_and(|(_, d)| *d == '\'') => {
                        chars.next();
                    }
                    ('"', '\\') => {
                        chars.next();
                    }
                    (q, c) if q == c => quote = None,
                    _ => {}
                }
                previous = c;
                continue;
            }
            let after_separator = previous.is_whitespace() || "[{,".contains(previous);
            match c {
                ' ' | '\t' => {
                    if depth == 0 && (previous == ':' || marker) {
                        node_start = true;
                        marker = false;
                    }
                }
                '#' if previous.is_whitespace() => break,
                '"' | '\'' if node_start || (depth > 0 && (after_separator || previous == ':')) => {
                    quote = Some(c);
                    node_start = false;
                }
                '[' | '{' if node_start || depth > 0 => {
                    depth += 1;
                    node_start = false;
                    if depth > MAX_DEPTH {
                        return Err(SyntaxError {
                            line: number + 1,
                            column: column + 1,
                            message: format!("collections nest deeper than {MAX_DEPTH} levels"),
                        });
                    }
                }
                ']' | '}' if depth > 0 => depth -= 1,
                '|' | '>' if node_start => {
                    block_scalar = Some(indent);
                    break;
                }
                '-' | '?' if node_start => {
                    marker = true;
                    node_start = false;
                }
                _ => {
                    if depth == 0 {
                        node_start = false;
                        marker = false;
                    }
                }
            }
            previous = c;
        }
    }
    Ok(())
}

/// What every value of one document counts against.
struct Budget {
    values: Cell<usize>,
}

impl Budget {
    fn take<E: de::Error>(&self) -> Result<(), E> {
        let used = self.values.get() + 1;
        self.values.set(used);
        if used > MAX_VALUES {
            return Err(E::custom(format!(
                "the document holds more than {MAX_VALUES} values once its aliases are \
                 expanded (a file that repeats one anchor over and over, as a \"billion \
                 laughs\" attack does)"
            )));
        }
        Ok(())
    }
}

/// A [`Value`] read under the document's budget and depth limit.
#[derive(Clone, Copy)]
struct Bounded<'b> {
    budget: &'b Budget,
    depth: usize,
}

impl Bounded<'_> {
    fn deeper<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format!(
                "collections nest deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Self {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Number(i.into()))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Number(u.into()))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Number(f.into()))
    }

    /// An integer past 64 bits: a float, as Docker's YAML reads it.
    fn visit_u128<E: de::Error>(self, u: u128) -> Result<Value, E> {
        self.visit_f64(u as f64)
    }

    fn visit_i128<E: de::Error>(self, i: i128) -> Result<Value, E> {
        self.visit_f64(i as f64)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.budget.take()?;
        let inner = self.deeper()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.budget.take()?;
        let inner = self.deeper()?;
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(inner)? {
            let value = map.next_value_seed(inner)?;
            if mapping.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "mapping key {} is given twice",
                    yaml_serde::to_string(&key)
                        .map(|k| k.trim_end().to_owned())
                        .unwrap_or_default()
                )));
            }
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        // A tagged value (`!tag x`): Compose gives tags no meaning, and
        // Docker's loader reads the value beneath them.
        use de::VariantAccess;
        let (_tag, contents): (String, _) = data.variant()?;
        contents.newtype_variant_seed(self)
    }
}

/// The document back as YAML text (`stack config`).
pub fn to_string(value: &impl serde::Serialize) -> Result<String, String> {
    yaml_serde::to_string(value).map_err(|e| e.to_string())
}

/// Typed reading of a value; on failure, the key path and what went wrong.
pub fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, (Vec<Seg>, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path: Vec<Seg> = e
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                _ => None,
            })
            .collect();
        (path, e.inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Every hostile file must be refused quickly, not only refused.
    fn refused_quickly(text: &str) -> SyntaxError {
        let started = Instant::now();
        let error = parse(text).expect_err("a hostile file is refused");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        error
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_the_first_document_taken() {
        let value = parse("\u{feff}services:\n  a:\n    image: x\n---\nother: 1\n").unwrap();
        assert!(value.get("services").is_some());
        assert!(value.get("other").is_none());
        let value = parse("---\nservices: {}\n...\n---\n: [").unwrap();
        assert!(value.get("services").is_some());
    }

    #[test]
    fn aliases_that_expand_to_too_much_are_refused() {
        // Ten levels of ten aliases each: ten billion values once expanded.
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let prev = level - 1;
            let refs = vec![format!("*a{prev}"); 10].join(", ");
            text.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
        }
        let error = refused_quickly(&text);
        assert!(
            error
                .message
                .contains("aliases are expanded too many times")
                || error.message.contains("more than 250000 values"),
            "{}",
            error.message
        );
        // One big anchor repeated many times, under the parser's own
        // repetition limit: caught by the value budget.
        let big: Vec<String> = (0..5000).map(|i| format!("k{i}: v")).collect();
        let mut text = format!("big: &big {{{}}}\nrefs:\n", big.join(", "));
        for _ in 0..5000 {
            text.push_str("  - *big\n");
        }
        let error = refused_quickly(&text);
        assert!(
            error.message.contains(&MAX_VALUES.to_string()),
            "{}",
            error.message
        );
    }

    #[test]
    fn deep_nesting_is_refused_with_its_place() {
        let error = refused_quickly(&format!("a: {}", "[".repeat(40_000)));
        assert_eq!(error.message, "collections nest deeper than 100 levels");
        assert_eq!((error.line, error.column), (1, 104));
        let mut text = String::from("a:\n");
        for depth in 1..=2000 {
            text.push_str(&" ".repeat(depth * 2));
            text.push_str(&format!("k{depth}:\n"));
        }
        let error = refused_quickly(&text);
        assert!(error.message.contains("nest deeper"), "{}", error.message);
        // Brackets in quotes and comments are text.
        let quoted = format!(
            "a: \"{}\"\nb: '{}'\n# {}\nc: [[1]]\n",
            "[".repeat(500),
            "{".repeat(500),
            "[".repeat(500)
        );
        assert!(parse(&quoted).is_ok());
        // Nor are they in plain and block scalars.
        let plain = format!(
            "a: ${{A:-{}x{}\nb: |\n  {}\n  [[[\nc: [{{d: [e]}}]\n",
            "${A:-".repeat(500),
            "}".repeat(501),
            "{".repeat(500)
        );
        assert!(parse(&plain).is_ok(), "{:?}", parse(&plain).err());
        // Inside a flow collection, every bracket opens one.
        let error = refused_quickly(&format!("a: [{}]", "[x, ".repeat(200)));
        assert!(error.message.contains("nest deeper"), "{}", error.message);
    }

    #[test]
    fn keys_given_twice_and_tags_are_handled() {
        let error = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(error.message.contains("given twice"), "{}", error.message);
        let value = parse("a: !custom x\n").unwrap();
        assert_eq!(value.get("a").and_then(Value::as_str), Some("x"));
    }
}

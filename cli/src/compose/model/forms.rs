//! The forms Compose lets a value take, read into one: a string or a list
//! of them, `KEY=VALUE` lists or mappings, numbers written as strings
//! (`replicas: "2"`, what `${REPLICAS}` leaves), `yes`/`on` for true.
//! Each is a `deserialize_with` function named after what it reads, and
//! reads what Docker's loader reads (`cli/compose/loader` transformers).

use std::collections::BTreeMap;

use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, SeqAccess, Visitor},
};

use super::units::GoDuration;

type Fmt<'a, 'b> = &'a mut std::fmt::Formatter<'b>;

/// A scalar as text: strings, and numbers or booleans as Go prints them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: Fmt) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Text>::deserialize(d)?.map(|t| t.0))
}

/// A whole number of 0 or more, or a string of one.
pub fn uint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<u64>;
        fn expecting(&self, f: Fmt) -> std::fmt::Result {
            f.write_str("a whole number of 0 or more")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Err(E::custom(format!(
                "expected a whole number of 0 or more, found {v}"
            )))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(E::custom(format!("expected a whole number, found {v:?}")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            match v.trim().parse::<i128>() {
                Ok(n) if n < 0 => self.visit_i64(n as i64),
                Ok(n) => u64::try_from(n).map(Some).map_err(|_| {
                    E::custom(format!("expected a whole number, found {v:?}: too large"))
                }),
                Err(_) => Err(E::custom(format!("expected a whole number, found {v:?}"))),
            }
        }
    }
    d.deserialize_any(V)
}

/// A whole number that may be negative, or a string of one.
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: Fmt) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("expected a whole number, found {v}: too large")))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(E::custom(format!("expected a whole number, found {v:?}")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.trim()
                .parse()
                .map(Some)
                .map_err(|_| E::custom(format!("expected a whole number, found {v:?}")))
        }
    }
    d.deserialize_any(V)
}

/// A number, or a string of one.
pub fn float<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<f64>;
        fn expecting(&self, f: Fmt) -> std::fmt::Result {
            f.write_str("a number")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.trim()
                .parse()
                .map(Some)
                .map_err(|_| E::custom(format!("expected a number, found {v:?}")))
        }
    }
    d.deserialize_any(V)
}

/// true/false, or a string Docker reads as one (`yes`, `on`, `n`, …).
fn read_flag<E: de::Error>(v: &str) -> Result<bool, E> {
    match v.to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "on" => Ok(true),
        "n" | "no" | "false" | "off" => Ok(false),
        _ => Err(E::custom(format!("expected true or false, found {v:?}"))),
    }
}

pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<bool>;
        fn expecting(&self, f: Fmt) -> std::fmt::Result {
            f.write_str("true or false")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            read_flag(v).map(Some)
        }
    }
    d.deserialize_any(V)
}

/// A flag whose absence and `false` mean the same (Docker's plain bools).
pub fn plain_flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(flag(d)?.unwrap_or(false))
}

/// A file mode: a number (`0o440` and `288` as YAML reads them), or a
/// string of octal digits (`0440`, which YAML 1.2 leaves a string and
/// Docker's YAML 1.1 reads as octal).
pub fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<u32>;
        fn expecting(&self, f: Fmt) -> std::fmt::Result {
            f.write_str("a file mode such as 0440")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            u32::try_from(v)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Some)
                .ok_or_else(|| {
                    E::custom(format!(
                        "file mode {v} is out of range: a mode is at most 0o7777 (4095)"
                    ))
                })
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Err(E::custom(format!("file mode {v} is negative")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let digits = v.strip_prefix("0o").unwrap_or(v);
            u32::from_str_radix(digits, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Some)
                .ok_or_else(|| {
                    E::custom(format!(
                        "expected a file mode of octal digits such as 0440, found {v:?}"
                    ))
                })
        }
    }
    d.deserialize_any(V)
}

pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GoDuration>, D::Error> {
    Option::<GoDuration>::deserialize(d)
}

/// A string or a list of them (`dns: 8.8.8.8`).
pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: Fmt) -> std::fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            texts(seq)
        }
    }
    d.deserialize_any(V)
}

/// A list of strings (numbers read as text: `expose: [80]`).
pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: Fmt) -> std::fmt::Result {
            f.write_str("a list of strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            texts(seq)
        }
    }
    d.deserialize_any(V)
}

fn texts<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<String>, A::Error> {
    let mut out = Vec::new();
    while let Some(t) = seq.next_element::<Text>()? {
        out.push(t.0);
    }
    Ok(out)
}

/// `command`/`entrypoint`: a list, or a string split as a shell would
/// (quotes group, no variables, no globs).
pub fn command<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: Fmt) -> std::fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            split_words(v).map_err(E::custom).map(non_empty)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            texts(seq).map(non_empty)
        }
    }
    // An empty command is none (the image's), as in Docker.
    fn non_empty(words: Vec<String>) -> Option<Vec<String>> {
        (!words.is_empty()).then_some(words)
    }
    d.deserialize_any(V)
}

/// Shell-like words, as google/shlex (Docker's splitter) makes them.
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed ' in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unclosed \" in {text:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed \" in {text:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => word.push(c),
                    None => return Err(format!("{text:?} ends with an escape (\\)")),
                }
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `environment`: `KEY=VALUE` / `KEY` items, or a mapping whose empty
/// values mean "from the caller's environment" (None).
pub fn env_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Option<String>>, D::Error> {
    key_values(d, true)
}

/// `labels`, `sysctls`, `deploy.labels`: like `environment`, but a key
/// without a value is an empty string.
pub fn labels<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(key_values(d, false)?
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

fn key_values<'de, D: Deserializer<'de>>(
    d: D,
    allow_nil: bool,
) -> Result<BTreeMap<String, Option<String>>, D::Error> {
    struct V {
        allow_nil: bool,
    }
    impl<'de> Visitor<'de> for V {
        type Value = BTreeMap<String, Option<String>>;
        fn expecting(&self, f: Fmt) -> std::fmt::Result {
            f.write_str("a list of KEY=VALUE strings or a mapping")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(Text(item)) = seq.next_element::<Text>()? {
                match item.split_once('=') {
                    Some((k, v)) => out.insert(k.to_owned(), Some(v.to_owned())),
                    None if self.allow_nil => out.insert(item, None),
                    None => out.insert(item, Some(String::new())),
                };
            }
            Ok(out)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(Text(key)) = map.next_key::<Text>()? {
                let value = map.next_value::<Option<Text>>()?.map(|t| t.0);
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V { allow_nil })
}

/// A mapping of strings (numbers read as text), as driver options are.
pub fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: Fmt) -> std::fmt::Result {
            f.write_str("a mapping")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(Text(key)) = map.next_key::<Text>()? {
                let value = map.next_value::<Option<Text>>()?.map(|t| t.0);
                out.insert(key, value.unwrap_or_default());
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// `extra_hosts`: `HOST:IP` or `HOST=IP` items, or a mapping of them;
/// always `HOST:IP`, brackets around IPv6 addresses dropped.
pub fn hosts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: Fmt) -> std::fmt::Result {
            f.write_str("a list of HOST:IP strings or a mapping")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Ok(texts(seq)?
                .into_iter()
                .filter_map(|entry| {
                    let (host, ip) = entry.split_once('=').or_else(|| entry.split_once(':'))?;
                    Some(host_ip(host, ip))
                })
                .collect())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(Text(host)) = map.next_key::<Text>()? {
                if let Some(Text(ip)) = map.next_value::<Option<Text>>()? {
                    out.push(host_ip(&host, &ip));
                }
            }
            out.sort();
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

fn host_ip(host: &str, ip: &str) -> String {
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .filter(|i| !i.is_empty())
        .unwrap_or(ip);
    format!("{host}:{ip}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_as_shlex_does() {
        assert_eq!(
            split_words(r#"echo "a b" c\ d 'e "f"' # a comment"#).unwrap(),
            ["echo", "a b", "c d", "e \"f\""]
        );
        assert_eq!(split_words("a#b").unwrap(), ["a#b"]);
        assert!(split_words("echo \"open").is_err());
    }
}

//! Durations and sizes as Docker's compose loader reads and prints them:
//! Go's `time.ParseDuration` / `Duration.String()` (`1m30s`, `500ms`) and
//! go-units' `RAMInBytes` (`100M`, `1.5g`, 1024-based), printed as a
//! decimal count of bytes.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A duration in nanoseconds, as Go holds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GoDuration(pub i64);

impl GoDuration {
    pub fn millis(self) -> i64 {
        self.0 / 1_000_000
    }

    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }

    /// Go's `time.ParseDuration`: `300ms`, `1.5h`, `2h45m`, `-1m`; a bare
    /// number only when it is 0.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("invalid duration {text:?}: expected e.g. 10s, 1m30s or 500ms");
        let (negative, mut rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        if rest == "0" {
            return Ok(Self(0));
        }
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total: f64 = 0.0;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let number = &rest[..number_len];
            if number.is_empty() || number == "." || number.matches('.').count() > 1 {
                return Err(bad());
            }
            let value: f64 = number.parse().map_err(|_| bad())?;
            rest = &rest[number_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "ns" => 1.0,
                "us" | "µs" | "μs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                "" => return Err(format!("invalid duration {text:?}: missing unit")),
                unit => return Err(format!("invalid duration {text:?}: unknown unit {unit:?}")),
            };
            total += value * scale;
            rest = &rest[unit_len..];
        }
        if total > i64::MAX as f64 {
            return Err(format!("invalid duration {text:?}: too long"));
        }
        let nanos = total.round() as i64;
        Ok(Self(if negative { -nanos } else { nanos }))
    }
}

impl std::fmt::Display for GoDuration {
    /// Go's `Duration.String()`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let d = self.0.unsigned_abs();
        if d == 0 {
            return f.write_str("0s");
        }
        // The fraction of `value / 10^digits`, without trailing zeros.
        let fraction = |value: u64, digits: u32| -> String {
            let unit = 10u64.pow(digits);
            let (whole, frac) = (value / unit, value % unit);
            if frac == 0 {
                return whole.to_string();
            }
            let frac = format!("{frac:0width$}", width = digits as usize);
            format!("{whole}.{}", frac.trim_end_matches('0'))
        };
        if d < 1_000 {
            return write!(f, "{sign}{d}ns");
        }
        if d < 1_000_000 {
            return write!(f, "{sign}{}µs", fraction(d, 3));
        }
        if d < 1_000_000_000 {
            return write!(f, "{sign}{}ms", fraction(d, 6));
        }
        let hours = d / 3_600_000_000_000;
        let minutes = d / 60_000_000_000 % 60;
        let seconds = fraction(d % 60_000_000_000, 9);
        if hours > 0 {
            write!(f, "{sign}{hours}h{minutes}m{seconds}s")
        } else if minutes > 0 {
            write!(f, "{sign}{minutes}m{seconds}s")
        } else {
            write!(f, "{sign}{seconds}s")
        }
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as 10s, 1m30s or 500ms")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
                GoDuration::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoDuration, E> {
                if v == 0 {
                    Ok(GoDuration(0))
                } else {
                    Err(E::custom(format!(
                        "invalid duration {v}: missing unit (e.g. {v}s)"
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes, read as go-units' `RAMInBytes` reads one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bytes(pub i64);

impl Bytes {
    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }

    /// `^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$`, 1024-based.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("invalid size {text:?}: expected e.g. 512M, 1.5g or 1048576");
        let number_len = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(number_len);
        if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
            return Err(bad());
        }
        // Go's pattern allows `1.2.3`; ParseFloat then refuses it.
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
        let unit = unit.strip_suffix('b').unwrap_or(&unit);
        let unit = unit.strip_suffix('i').unwrap_or(unit);
        let power = match unit {
            "" => 0,
            "k" => 1,
            "m" => 2,
            "g" => 3,
            "t" => 4,
            "p" => 5,
            _ => return Err(bad()),
        };
        let bytes = value * 1024f64.powi(power);
        if bytes >= i64::MAX as f64 {
            return Err(format!("invalid size {text:?}: too large"));
        }
        Ok(Self(bytes as i64))
    }
}

impl Serialize for Bytes {
    /// Docker prints sizes as strings of digits.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size such as 512M or 1g")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
                Bytes::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Bytes, E> {
                i64::try_from(v)
                    .map(Bytes)
                    .map_err(|_| E::custom(format!("size {v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Bytes, E> {
                Err(E::custom(format!("size {v} is negative")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_print_as_go_does() {
        for (text, nanos, printed) in [
            ("10s", 10_000_000_000, "10s"),
            ("1m30s", 90_000_000_000, "1m30s"),
            ("90s", 90_000_000_000, "1m30s"),
            ("1h", 3_600_000_000_000, "1h0m0s"),
            ("1.5s", 1_500_000_000, "1.5s"),
            ("500ms", 500_000_000, "500ms"),
            ("1.5ms", 1_500_000, "1.5ms"),
            ("2us", 2_000, "2µs"),
            ("300ns", 300, "300ns"),
            ("0", 0, "0s"),
            ("0s", 0, "0s"),
            ("2h45m0.5s", 9_900_500_000_000, "2h45m0.5s"),
            ("-1m", -60_000_000_000, "-1m0s"),
        ] {
            let d = GoDuration::parse(text).unwrap();
            assert_eq!(d.0, nanos, "{text}");
            assert_eq!(d.to_string(), printed, "{text}");
        }
        for bad in ["10", "", "s", "1x", "1.2.3s", "1 s", "."] {
            assert!(GoDuration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_read_as_go_units_does() {
        for (text, bytes) in [
            ("100M", 100 << 20),
            ("100m", 100 << 20),
            ("1g", 1 << 30),
            ("1.5k", 1536),
            ("512", 512),
            ("10MB", 10 << 20),
            ("10MiB", 10 << 20),
            ("10 kb", 10 << 10),
        ] {
            assert_eq!(Bytes::parse(text).unwrap().0, bytes, "{text}");
        }
        for bad in ["lots", "-1", "1x", "", "1.", "1.2.3m"] {
            assert!(Bytes::parse(bad).is_err(), "{bad}");
        }
    }
}

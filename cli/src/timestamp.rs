//! Times as Docker's CLI takes and prints them: `--since` as a Go duration
//! back from now (`42m`, `1h30m`), an RFC 3339 time or date (the local
//! zone when none is given), or Unix seconds (`1700000000.5`); log
//! timestamps as RFC 3339 with nine fraction digits.

use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, TimeZone, Utc};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimestampError {
    #[error("failed to parse value as time or duration: {0:?}")]
    Unparsable(String),
    #[error("invalid time {value:?}: {reason} (e.g. \"2013-01-02T13:23:37Z\" or \"42m\")")]
    BadTime { value: String, reason: String },
}

/// A Go `time.ParseDuration` string as nanoseconds: an optional sign, then
/// one or more decimal numbers each with a unit (ns, us, µs, ms, s, m, h).
pub fn parse_go_duration(text: &str) -> Option<i128> {
    let (negative, mut rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let number = &rest[..number_len];
        if number.is_empty() || number == "." {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * unit;
    }
    let nanos = total.round() as i128;
    Some(if negative { -nanos } else { nanos })
}

/// `--since` as Unix nanoseconds, `now` being the reference for durations
/// and the local zone (Docker's `GetTimestamp`).
pub fn since_ns(value: &str, now: DateTime<Local>) -> Result<i64, TimestampError> {
    if value != "0"
        && let Some(back) = parse_go_duration(value)
    {
        // Docker sends whole seconds for a duration.
        let seconds = now.timestamp() - (back / 1_000_000_000) as i64;
        return Ok(seconds.saturating_mul(1_000_000_000));
    }
    let in_local_zone = !value.contains(['z', 'Z', '+']) && value.matches('-').count() != 3;
    let parsed = if in_local_zone {
        parse_local(value, now)
    } else {
        parse_zoned(value)
    };
    match parsed {
        Ok(time) => Ok(time.timestamp_nanos_opt().unwrap_or(i64::MAX)),
        // Something with a `-` meant to be a date: its own error.
        Err(reason) if value.contains('-') => Err(TimestampError::BadTime {
            value: value.to_owned(),
            reason,
        }),
        Err(_) => unix_seconds(value).ok_or_else(|| TimestampError::Unparsable(value.to_owned())),
    }
}

/// `SECONDS[.FRACTION]`, Unix time.
fn unix_seconds(value: &str) -> Option<i64> {
    let (seconds, fraction) = value.split_once('.').unwrap_or((value, ""));
    let seconds: i64 = seconds.parse().ok()?;
    let mut nanos = 0i64;
    if !fraction.is_empty() {
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        for (i, d) in fraction.bytes().take(9).enumerate() {
            nanos += i64::from(d - b'0') * 10i64.pow(8 - i as u32);
        }
    }
    seconds.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// The date and time part completed to `YYYY-MM-DDTHH:MM:SS[.f]`: Docker
/// takes `2006-01-02`, `2006-01-02T15` and `2006-01-02T15:04` too.
fn complete(date_time: &str) -> String {
    match date_time.split_once('T') {
        None => format!("{date_time}T00:00:00"),
        Some((_, time)) => match time.matches(':').count() {
            0 => format!("{date_time}:00:00"),
            1 => format!("{date_time}:00"),
            _ => date_time.to_owned(),
        },
    }
}

fn parse_naive(text: &str) -> Result<NaiveDateTime, String> {
    let text = complete(text);
    NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f").map_err(|e| e.to_string())
}

fn parse_local(value: &str, now: DateTime<Local>) -> Result<DateTime<FixedOffset>, String> {
    let naive = parse_naive(value)?;
    // Go parses in a fixed zone: the reference time's offset.
    let offset = *now.offset();
    offset
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.fixed_offset())
        .ok_or_else(|| "no such local time".to_owned())
}

fn parse_zoned(value: &str) -> Result<DateTime<FixedOffset>, String> {
    // The zone is `Z` or the last `+hh:mm`/`-hh:mm`.
    let (date_time, zone) = if let Some(stripped) = value.strip_suffix(['Z', 'z']) {
        (stripped, FixedOffset::east_opt(0).ok_or("zone")?)
    } else {
        let at = value
            .rfind(['+', '-'])
            .filter(|i| *i >= 10)
            .ok_or_else(|| "no time zone offset".to_owned())?;
        let (date_time, zone) = value.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..]
            .split_once(':')
            .ok_or_else(|| format!("time zone {zone:?} is not ±hh:mm"))?;
        let seconds = |s: &str| s.parse::<i32>().map_err(|e| e.to_string());
        let offset = sign * (seconds(h)? * 3600 + seconds(m)? * 60);
        (
            date_time,
            FixedOffset::east_opt(offset)
                .ok_or_else(|| format!("time zone {zone:?} is out of range"))?,
        )
    };
    if date_time.len() == 10 {
        NaiveDate::parse_from_str(date_time, "%Y-%m-%d").map_err(|e| e.to_string())?;
    }
    let naive = parse_naive(date_time)?;
    zone.from_local_datetime(&naive)
        .single()
        .ok_or_else(|| "no such time".to_owned())
}

/// Docker's log timestamp: RFC 3339 in UTC with nine fraction digits.
pub fn rfc3339_nano_fixed(unix_ns: i64) -> String {
    Utc.timestamp_nanos(unix_ns)
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Local> {
        Local.timestamp_opt(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn go_durations_parse_as_go_parses_them() {
        assert_eq!(parse_go_duration("42m"), Some(42 * 60_000_000_000));
        assert_eq!(parse_go_duration("1h30m"), Some(5400 * 1_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Some(5400 * 1_000_000_000));
        assert_eq!(parse_go_duration("300ms"), Some(300_000_000));
        assert_eq!(parse_go_duration("2µs"), Some(2000));
        assert_eq!(parse_go_duration("-1s"), Some(-1_000_000_000));
        assert_eq!(parse_go_duration("0"), Some(0));
        for bad in ["", "10", "m", "1d", "1h30", ".s", "1x"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn since_takes_durations_times_and_unix_seconds() {
        assert_eq!(
            since_ns("10m", now()),
            Ok((1_700_000_000 - 600) * 1_000_000_000)
        );
        assert_eq!(
            since_ns("2013-01-02T13:23:37Z", now()),
            Ok(1_357_133_017 * 1_000_000_000)
        );
        assert_eq!(
            since_ns("2013-01-02T13:23:37.25+01:00", now()),
            Ok((1_357_133_017 - 3600) * 1_000_000_000 + 250_000_000)
        );
        assert_eq!(
            since_ns("2013-01-02Z", now()),
            Ok(1_357_084_800 * 1_000_000_000)
        );
        assert_eq!(since_ns("1700000000", now()), Ok(1_700_000_000_000_000_000));
        assert_eq!(
            since_ns("1700000000.5", now()),
            Ok(1_700_000_000_500_000_000)
        );
        // "0" is Unix time 0, not a duration.
        assert_eq!(since_ns("0", now()), Ok(0));
    }

    #[test]
    fn times_without_a_zone_are_local() {
        let offset = i64::from(now().offset().local_minus_utc()) * 1_000_000_000;
        let utc = 1_357_133_017 * 1_000_000_000;
        assert_eq!(since_ns("2013-01-02T13:23:37", now()), Ok(utc - offset));
        assert_eq!(
            since_ns("2013-01-02T13:23", now()),
            Ok(utc - 37_000_000_000 - offset)
        );
        assert_eq!(
            since_ns("2013-01-02", now()),
            Ok(1_357_084_800 * 1_000_000_000 - offset)
        );
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        assert_eq!(
            since_ns("yesterday", now()),
            Err(TimestampError::Unparsable("yesterday".into()))
        );
        let err = since_ns("2013-13-02", now()).unwrap_err().to_string();
        assert!(err.contains("2013-13-02"), "{err}");
    }

    #[test]
    fn timestamps_print_with_nine_fraction_digits() {
        assert_eq!(
            rfc3339_nano_fixed(1_357_133_017_000_000_001),
            "2013-01-02T13:23:37.000000001Z"
        );
        assert_eq!(rfc3339_nano_fixed(0), "1970-01-01T00:00:00.000000000Z");
    }
}

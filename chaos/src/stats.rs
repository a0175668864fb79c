//! Percentiles of measured durations.

use std::time::Duration;

/// The `p`-th percentile (nearest rank) of `values`; None if empty.
pub fn percentile(values: &[Duration], p: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `p50 … p99 … (n samples)`, or `no samples`.
pub fn summary(values: &[Duration]) -> String {
    match (percentile(values, 50.0), percentile(values, 99.0)) {
        (Some(p50), Some(p99)) => format!(
            "p50 {:.1} s, p99 {:.1} s ({} samples)",
            p50.as_secs_f64(),
            p99.as_secs_f64(),
            values.len()
        ),
        _ => "no samples".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_secs).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_secs(5)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_secs(10)));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(summary(&[]), "no samples");
    }
}

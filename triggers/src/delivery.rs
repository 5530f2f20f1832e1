//! The delivery spec (Knative's `delivery:` knobs): how many retries, which backoff, how long one
//! attempt may take, and which responses are worth retrying.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How delays grow between retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffPolicy {
    /// `delay × 2^n` before retry n (1-based): 2d, 4d, 8d... as Knative's Kafka source does.
    #[default]
    Exponential,
    /// `delay × n` before retry n: d, 2d, 3d...
    Linear,
}

impl BackoffPolicy {
    /// Parses `exponential` or `linear`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "exponential" => Ok(Self::Exponential),
            "linear" => Ok(Self::Linear),
            other => Err(format!("{other:?} is not `exponential` or `linear`")),
        }
    }
}

/// Retries, backoff and per-attempt timeout of one trigger (or of async invocations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliverySpec {
    /// Retries after the first attempt (total attempts = retries + 1).
    pub retries: u32,
    /// The backoff unit, in milliseconds.
    pub backoff_ms: u64,
    /// How the delay grows.
    pub backoff_policy: BackoffPolicy,
    /// How long one attempt may take, in milliseconds, on top of the function's own timeout.
    pub timeout_ms: u64,
}

impl Default for DeliverySpec {
    /// Knative's Kafka defaults when retries are asked for (1 s unit); 3 retries, 30 s per attempt.
    fn default() -> Self {
        Self { retries: 3, backoff_ms: 1000, backoff_policy: BackoffPolicy::Exponential, timeout_ms: 30_000 }
    }
}

/// Longest single backoff: a big retry count must not sleep for years.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Most retries a spec may ask for.
pub const MAX_RETRIES: u32 = 100;

impl DeliverySpec {
    /// The pause before retry `n` (1-based), capped at an hour.
    pub fn backoff(&self, n: u32) -> Duration {
        let unit = Duration::from_millis(self.backoff_ms);
        let delay = match self.backoff_policy {
            BackoffPolicy::Exponential => unit.checked_mul(2u32.checked_pow(n.min(31)).unwrap_or(u32::MAX)),
            BackoffPolicy::Linear => unit.checked_mul(n),
        };
        delay.unwrap_or(MAX_BACKOFF).min(MAX_BACKOFF)
    }

    /// The per-attempt timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks the ranges; errors name the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.retries > MAX_RETRIES {
            return Err(("retries", format!("{} is more than {MAX_RETRIES}", self.retries)));
        }
        if self.timeout_ms == 0 {
            return Err(("timeout", "must be more than 0".into()));
        }
        Ok(())
    }
}

/// Whether a function's status is worth another attempt: no response, 5xx, 404, 408, 409 and
/// 429 (Knative's `SelectiveRetry`, the data-plane spec's list). Other 4xx, 3xx and 2xx are final.
pub fn retryable(status: u16) -> bool {
    matches!(status, 0 | 404 | 408 | 409 | 429 | 500..=599)
}

/// Parses a delay or timeout: ISO-8601 (`PT0.5S`, `PT1M30S`, `P1D`) as in Knative manifests, or
/// a humantime duration (`200ms`, `1s`, `2m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.starts_with('P') || s.starts_with('p') {
        return parse_iso8601(s).ok_or_else(|| format!("{s:?} is not an ISO-8601 duration such as PT0.5S"));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration such as 200ms or PT0.2S ({e})"))
}

/// `PnDTnHnMnS` with an optional fraction on the last number (weeks, months, years are refused:
/// their length is not fixed or nobody uses them for a retry delay).
fn parse_iso8601(s: &str) -> Option<Duration> {
    let rest = s.get(1..)?.to_ascii_uppercase();
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d.to_string(), t.to_string()),
        Some(_) => return None,
        None => (rest, String::new()),
    };
    let mut total = 0f64;
    let mut any = false;
    for (part, units) in [(&date, &[('D', 86_400.0)][..]), (&time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)][..])] {
        let mut number = String::new();
        let mut next_unit = 0;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' || c == ',' {
                number.push(if c == ',' { '.' } else { c });
                continue;
            }
            let i = units.iter().skip(next_unit).position(|(u, _)| *u == c)? + next_unit;
            let value: f64 = number.parse().ok()?;
            total += value * units[i].1;
            number.clear();
            next_unit = i + 1;
            any = true;
        }
        if !number.is_empty() {
            return None;
        }
    }
    (any && total.is_finite() && total < 1e9).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_both_ways() {
        let ms = |s| parse_duration(s).map(|d| d.as_millis());
        assert_eq!(ms("PT0.5S"), Ok(500));
        assert_eq!(ms("PT0.2S"), Ok(200));
        assert_eq!(ms("PT1M30S"), Ok(90_000));
        assert_eq!(ms("PT2H"), Ok(7_200_000));
        assert_eq!(ms("P1D"), Ok(86_400_000));
        assert_eq!(ms("P1DT1S"), Ok(86_401_000));
        assert_eq!(ms("200ms"), Ok(200));
        assert_eq!(ms("1s"), Ok(1000));
        for bad in ["PT", "P", "PTS", "PT1X", "PT1S2", "P1H", "PT1S1M", "soon", "", "P1W"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_follows_the_policy() {
        let spec = |policy| DeliverySpec { backoff_ms: 200, backoff_policy: policy, ..DeliverySpec::default() };
        let exp: Vec<_> = (1..=4).map(|n| spec(BackoffPolicy::Exponential).backoff(n).as_millis()).collect();
        assert_eq!(exp, [400, 800, 1600, 3200]);
        let lin: Vec<_> = (1..=4).map(|n| spec(BackoffPolicy::Linear).backoff(n).as_millis()).collect();
        assert_eq!(lin, [200, 400, 600, 800]);
        assert_eq!(spec(BackoffPolicy::Exponential).backoff(99), MAX_BACKOFF);
    }

    #[test]
    fn retries_only_what_knative_retries() {
        for s in [0, 404, 408, 409, 429, 500, 502, 503, 504, 599] {
            assert!(retryable(s), "{s}");
        }
        for s in [200, 202, 204, 301, 400, 401, 403, 410, 413, 422] {
            assert!(!retryable(s), "{s}");
        }
    }
}

//! Human-readable sizes, durations and times for tables and `describe`.

use std::time::{SystemTime, UNIX_EPOCH};

/// `512 B`, `1.5 KiB`, `91 KiB`, `128 MiB`: one decimal below 10, none above.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // 1023.5 would round to "1024 KiB": show it as the next unit instead.
    while value >= 1023.5 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let number = if value < 9.95 {
        let s = format!("{value:.1}");
        s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
    } else {
        format!("{value:.0}")
    };
    format!("{number} {}", UNITS[unit])
}

/// `250ms`, `1.5s`, `30s`, `1m30s`, `2h`, `1h5m` (sub-second parts of minutes and seconds of
/// hours are dropped).
pub fn duration_ms(ms: u64) -> String {
    const SEC: u64 = 1_000;
    const MIN: u64 = 60 * SEC;
    const HOUR: u64 = 60 * MIN;
    if ms < SEC {
        format!("{ms}ms")
    } else if ms < MIN {
        if ms.is_multiple_of(SEC) {
            format!("{}s", ms / SEC)
        } else {
            let s = format!("{}.{:03}", ms / SEC, ms % SEC);
            format!("{}s", s.trim_end_matches('0'))
        }
    } else if ms < HOUR {
        let (m, s) = (ms / MIN, ms % MIN / SEC);
        if s == 0 { format!("{m}m") } else { format!("{m}m{s}s") }
    } else {
        let (h, m) = (ms / HOUR, ms % HOUR / MIN);
        if m == 0 { format!("{h}h") } else { format!("{h}h{m}m") }
    }
}

/// Coarse age of a unix-milliseconds instant, kubectl style: `45s`, `17m`, `5h`, `3d`.
pub fn age(then_ms: u64, now_ms: u64) -> String {
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// `2025-11-22 03:33:20 UTC` for a unix-milliseconds instant.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm, unsigned form).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3_600, rem % 3_600 / 60, rem % 60)
}

/// `sha256:abcd1234…`: the algorithm and the first 8 digits.
pub fn short_hash(hash: &str) -> String {
    let (algo, digest) = hash.split_once(':').unwrap_or(("", hash));
    if digest.chars().count() <= 8 {
        return hash.to_owned();
    }
    let short: String = digest.chars().take(8).collect();
    if algo.is_empty() { format!("{short}…") } else { format!("{algo}:{short}…") }
}

/// Milliseconds since the unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1 KiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(91_234), "89 KiB");
        assert_eq!(size(93_184), "91 KiB");
        assert_eq!(size(1_048_575), "1 MiB");
        assert_eq!(size(1_048_576), "1 MiB");
        assert_eq!(size(1_114_112), "1.1 MiB");
        assert_eq!(size(8 * 1024 * 1024), "8 MiB");
        assert_eq!(size(134_217_728), "128 MiB");
        assert_eq!(size(10_200), "10 KiB");
        assert_eq!(size(3 << 30), "3 GiB");
        assert_eq!(size(u64::MAX), "16384 PiB");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms(0), "0ms");
        assert_eq!(duration_ms(250), "250ms");
        assert_eq!(duration_ms(1_000), "1s");
        assert_eq!(duration_ms(1_500), "1.5s");
        assert_eq!(duration_ms(1_250), "1.25s");
        assert_eq!(duration_ms(30_000), "30s");
        assert_eq!(duration_ms(60_000), "1m");
        assert_eq!(duration_ms(90_000), "1m30s");
        assert_eq!(duration_ms(3_600_000), "1h");
        assert_eq!(duration_ms(3_900_000), "1h5m");
    }

    #[test]
    fn ages() {
        let now = 1_763_780_000_000;
        assert_eq!(age(now, now), "0s");
        assert_eq!(age(now + 5_000, now), "0s");
        assert_eq!(age(now - 45_000, now), "45s");
        assert_eq!(age(now - 17 * 60_000, now), "17m");
        assert_eq!(age(now - 5 * 3_600_000, now), "5h");
        assert_eq!(age(now - 3 * 86_400_000, now), "3d");
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_763_780_000_000), "2025-11-22 02:53:20 UTC");
    }

    #[test]
    fn hashes() {
        assert_eq!(short_hash("sha256:abcd1234ef567890"), "sha256:abcd1234…");
        assert_eq!(short_hash("sha256:abcd"), "sha256:abcd");
        assert_eq!(short_hash("abcd1234ef"), "abcd1234…");
    }
}

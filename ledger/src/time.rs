//! UTC calendar arithmetic for usage queries and bill periods: RFC 3339 times and dates in,
//! Unix milliseconds out (and back, for reports). Proleptic Gregorian, no leap seconds.

/// An hour in milliseconds: rollups are kept per hour.
pub const HOUR_MS: u64 = 3_600_000;

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01 (`civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Unix milliseconds of a UTC instant at or after 1970.
fn unix_ms(y: i64, m: u32, d: u32, secs_of_day: i64) -> Option<u64> {
    let ms = (days_from_civil(y, m, d) * 86_400 + secs_of_day).checked_mul(1000)?;
    u64::try_from(ms).ok()
}

fn number(s: &str, digits: usize) -> Option<u32> {
    (s.len() == digits && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

/// `YYYY-MM-DD`, checked.
fn date(s: &str) -> Option<(i64, u32, u32)> {
    let (y, m, d) = (number(s.get(0..4)?, 4)?, number(s.get(5..7)?, 2)?, number(s.get(8..10)?, 2)?);
    let ok = s.len() == 10 && &s[4..5] == "-" && &s[7..8] == "-" && (1..=12).contains(&m);
    (ok && d >= 1 && d <= days_in_month(y as i64, m)).then_some((y as i64, m, d))
}

/// A time as Unix milliseconds: a UTC date (`2025-11-22`, its midnight) or an RFC 3339 time
/// (`2025-11-22T03:00:00Z`, `2025-11-22T04:00:00+01:00`, seconds and fractions optional; a
/// fraction finer than a millisecond is truncated). `None` if it is neither, or before 1970.
pub fn parse_time(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.len() == 10 {
        let (y, m, d) = date(s)?;
        return unix_ms(y, m, d, 0);
    }
    let (y, m, d) = date(s.get(..10)?)?;
    let rest = s.get(10..)?;
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    // The offset: `Z` or `±HH:MM` at the end.
    let (clock, offset_s) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else {
        let at = rest.len().checked_sub(6)?;
        let (clock, offset) = rest.split_at(at);
        let sign = match offset.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (h, mi) = (number(&offset[1..3], 2)?, number(&offset[4..6], 2)?);
        (&offset[3..4] == ":" && h < 24 && mi < 60).then_some(())?;
        (clock, sign * (h as i64 * 3600 + mi as i64 * 60))
    };
    let (hms, frac) = clock.split_once('.').map_or((clock, None), |(a, b)| (a, Some(b)));
    let mut parts = hms.split(':');
    let h = number(parts.next()?, 2)?;
    let mi = number(parts.next()?, 2)?;
    let sec = parts.next().map_or(Some(0), |p| number(p, 2))?;
    (parts.next().is_none() && h < 24 && mi < 60 && sec < 60).then_some(())?;
    let ms = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0, |n, b| n * 10 + u64::from(b - b'0'))
        }
        Some(_) => return None,
    };
    let secs = h as i64 * 3600 + mi as i64 * 60 + sec as i64 - offset_s;
    unix_ms(y, m, d, secs)?.checked_add(ms)
}

/// `2025-11-22T03:00:00Z` (whole seconds; milliseconds are dropped).
pub fn format_time(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s % 3600 / 60, s % 60)
}

/// A calendar month in UTC, the period of a bill: `2026-11`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Period {
    /// The year, 1970 or later.
    pub year: u32,
    /// The month, 1 to 12.
    pub month: u32,
}

impl Period {
    /// `YYYY-MM`, from 1970-01 on.
    pub fn parse(s: &str) -> Option<Period> {
        let s = s.trim();
        let (year, month) = (number(s.get(0..4)?, 4)?, number(s.get(5..7)?, 2)?);
        (s.len() == 7 && &s[4..5] == "-" && year >= 1970 && (1..=12).contains(&month)).then_some(Period { year, month })
    }

    /// Its first millisecond (inclusive) and the next month's first (exclusive).
    pub fn range_ms(self) -> (u64, u64) {
        let start = unix_ms(self.year as i64, self.month, 1, 0).unwrap_or(0);
        let (ny, nm) = if self.month == 12 { (self.year + 1, 1) } else { (self.year, self.month + 1) };
        (start, unix_ms(ny as i64, nm, 1, 0).unwrap_or(u64::MAX))
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The start of the hour containing `ms`.
pub fn floor_hour(ms: u64) -> u64 {
    ms - ms % HOUR_MS
}

/// The start of the first hour at or after `ms`.
pub fn ceil_hour(ms: u64) -> u64 {
    floor_hour(ms.saturating_add(HOUR_MS - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_dates_and_periods() {
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("2025-11-22T03:00:00Z"), Some(1_763_780_400_000));
        assert_eq!(parse_time("2025-11-22T04:00:00+01:00"), Some(1_763_780_400_000));
        assert_eq!(parse_time("2025-11-22T03:00Z"), Some(1_763_780_400_000));
        assert_eq!(parse_time("2025-11-22T03:00:00.25Z"), Some(1_763_780_400_250));
        assert_eq!(parse_time("2025-11-22"), Some(1_763_769_600_000));
        for bad in ["", "2026-11-31", "2026-13-01", "2026-02-29", "2025-11-22T24:00Z", "2025-11-22T03:00", "yesterday"]
        {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(parse_time("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(format_time(1_763_780_400_999), "2025-11-22T03:00:00Z");
        for day in [0, 59, 365, 10_000, 20_779, 40_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        let p = Period::parse("2026-12").unwrap();
        assert_eq!(p.to_string(), "2026-12");
        assert_eq!(p.range_ms(), (parse_time("2026-12-01").unwrap(), parse_time("2027-01-01").unwrap()));
        for bad in ["2026-13", "2026-1", "1969-12", "2026-11-01", "26-11"] {
            assert_eq!(Period::parse(bad), None, "{bad}");
        }
        assert_eq!(
            (floor_hour(HOUR_MS + 1), ceil_hour(HOUR_MS + 1), ceil_hour(HOUR_MS)),
            (HOUR_MS, 2 * HOUR_MS, HOUR_MS)
        );
    }
}

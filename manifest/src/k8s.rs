//! Kubernetes' string checks (k8s.io/apimachinery `util/validation`, `api/validate/content`) with
//! their exact messages, Go's `time.ParseDuration` and `strconv` number rules, and resource
//! quantities (`api/resource`).

/// `RegexError`: `msg (e.g. 'a',  or 'b', regex used for validation is 'fmt')`.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{e}', "));
    }
    out.push_str(&format!("regex used for validation is '{fmt}')"));
    out
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1035(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_lowercase()
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

/// `IsDNS1035Label`: the rule for Service, revision and tag names.
pub fn dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !matches_dns1035(s) {
        errs.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            "[a-z]([-a-z0-9]*[a-z0-9])?",
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `IsDNS1123Label`: the rule for namespaces.
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !matches_dns1123_label(s) {
        errs.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?",
            &["my-name", "123-abc"],
        ));
    }
    errs
}

/// `IsDNS1123Subdomain`.
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !s.split('.').all(matches_dns1123_label) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
            &["example.com"],
        ));
    }
    errs
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_label_key_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

const LABEL_KEY_MSG: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_KEY_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

/// `IsQualifiedName` (= `IsLabelKey`): label and annotation keys, traffic revision names.
pub fn qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(dns1123_subdomain(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            return vec![format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(LABEL_KEY_MSG, LABEL_KEY_FMT, &["MyName", "my.name", "123-abc"])
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !matches_label_key_name(name) {
        errs.push(format!(
            "name part {}",
            regex_error(LABEL_KEY_MSG, LABEL_KEY_FMT, &["MyName", "my.name", "123-abc"])
        ));
    }
    errs
}

/// `IsLabelValue`.
pub fn label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !(s.is_empty() || matches_label_key_name(s)) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `IsCIdentifier`: environment variable names Wisp accepts (a guest reads them as C names).
pub fn c_identifier(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_');
    if ok {
        Vec::new()
    } else {
        vec![regex_error(
            "a valid C identifier must start with alphabetic character or '_', followed by a string of alphanumeric characters or '_'",
            "[A-Za-z_][A-Za-z0-9_]*",
            &["my_name", "MY_NAME", "MyName"],
        )]
    }
}

/// Go's `fmt.Sprint` of a `[]string`: `[a b]`.
pub fn go_list(msgs: &[String]) -> String {
    format!("[{}]", msgs.join(" "))
}

/// Go's `time.ParseDuration`, in nanoseconds: `300ms`, `1.5h`, `1h30m`, `-2s`, `0`.
pub fn parse_go_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let unit_len = after.bytes().take_while(|c| !c.is_ascii_digit() && *c != b'.').count();
        let (unit, after) = after.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut value = whole.checked_mul(scale)?;
        if !frac.is_empty() {
            let digits = &frac[..frac.len().min(30)];
            let f: i128 = digits.parse().ok()?;
            value = value.checked_add(f.checked_mul(scale)? / 10i128.checked_pow(digits.len() as u32)?)?;
        }
        total = total.checked_add(value)?;
        if total > i64::MAX as i128 {
            return None;
        }
        rest = after;
    }
    Some(if neg { -total } else { total })
}

/// Go's `strconv.ParseFloat` for the forms manifests use (`0.7`, `70`, `1e2`, `-1`); Wisp
/// refuses NaN and infinities, which Go parses.
pub fn parse_go_float(s: &str) -> Option<f64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-')) {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Go's `strconv.ParseInt(s, 10, 32)`: `Err(true)` for out of range, `Err(false)` for syntax.
pub fn parse_go_int32(s: &str) -> Result<i32, bool> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(false);
    }
    s.parse::<i32>().map_err(|_| true)
}

/// The regular expression Kubernetes names when a quantity does not parse.
pub const QUANTITY_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// A resource quantity (`128Mi`, `1G`, `0.5Gi`, `1e3`, `100m`) as a whole number of units,
/// rounded up the way `Quantity.Value()` does. `None` when it does not parse, is negative or
/// does not fit in a u64.
pub fn parse_quantity(s: &str) -> Option<u64> {
    let num_len = s.bytes().take_while(|c| c.is_ascii_digit() || matches!(c, b'.' | b'+' | b'-')).count();
    let (number, suffix) = s.split_at(num_len);
    let number = number.strip_prefix('+').unwrap_or(number);
    if number.starts_with('-') {
        return None;
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    // value = mantissa / 10^frac_len * base^exp (exp may be negative for m, u, n, e-3).
    let mantissa: u128 = format!("{int}{frac}").trim_start_matches('0').parse().unwrap_or(0);
    if int.len() + frac.len() > 30 {
        return None;
    }
    let (base, exp): (u128, i32) = match suffix {
        "" => (10, 0),
        "Ki" => (2, 10),
        "Mi" => (2, 20),
        "Gi" => (2, 30),
        "Ti" => (2, 40),
        "Pi" => (2, 50),
        "Ei" => (2, 60),
        "n" => (10, -9),
        "u" => (10, -6),
        "m" => (10, -3),
        "k" => (10, 3),
        "M" => (10, 6),
        "G" => (10, 9),
        "T" => (10, 12),
        "P" => (10, 15),
        "E" => (10, 18),
        e if e.starts_with(['e', 'E']) => (10, parse_go_int32(&e[1..]).ok()?),
        _ => return None,
    };
    let mut numerator = mantissa;
    let mut denominator: u128 = 10u128.checked_pow(frac.len() as u32)?;
    if exp >= 0 {
        numerator = numerator.checked_mul(base.checked_pow(exp as u32)?)?;
    } else {
        denominator = denominator.checked_mul(base.checked_pow(exp.unsigned_abs())?)?;
    }
    let value = numerator.div_ceil(denominator);
    u64::try_from(value).ok()
}

/// A byte count as the shortest exact quantity: `128Mi`, `1Gi`, `1500`.
pub fn format_bytes(n: u64) -> String {
    for (suffix, shift) in [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if n != 0 && n.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", n >> shift);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(parse_quantity("128Mi"), Some(128 << 20));
        assert_eq!(parse_quantity("1G"), Some(1_000_000_000));
        assert_eq!(parse_quantity("512M"), Some(512_000_000));
        assert_eq!(parse_quantity("0.5Gi"), Some(512 << 20));
        assert_eq!(parse_quantity("1.5Ki"), Some(1536));
        assert_eq!(parse_quantity("1048576"), Some(1 << 20));
        assert_eq!(parse_quantity("+64Ki"), Some(64 << 10));
        assert_eq!(parse_quantity("1e3"), Some(1000));
        assert_eq!(parse_quantity("1E6"), Some(1_000_000));
        assert_eq!(parse_quantity("2k"), Some(2000));
        // Value() rounds up: 100m of a byte is one byte; 1.0000001 bytes is two.
        assert_eq!(parse_quantity("100m"), Some(1));
        assert_eq!(parse_quantity("1.0000001"), Some(2));
        assert_eq!(parse_quantity(".5Ki"), Some(512));
        assert_eq!(parse_quantity("0"), Some(0));
        for bad in ["", "Mi", "12Xi", "-1Mi", "1.2.3", "1 Mi", "1mi", "1KB", "abc", "1e", "99999999999999999999999Ei"] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bytes_format_as_the_shortest_exact_quantity() {
        assert_eq!(format_bytes(128 << 20), "128Mi");
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(1536), "1536");
        assert_eq!(format_bytes(1024), "1Ki");
        assert_eq!(format_bytes(0), "0");
        for n in [1u64, 1000, 4096, 3 << 30, 1_000_000_000] {
            assert_eq!(parse_quantity(&format_bytes(n)), Some(n));
        }
    }

    #[test]
    fn go_durations() {
        let s = 1_000_000_000i128;
        assert_eq!(parse_go_duration("6s"), Some(6 * s));
        assert_eq!(parse_go_duration("1h"), Some(3600 * s));
        assert_eq!(parse_go_duration("1h30m"), Some(5400 * s));
        assert_eq!(parse_go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_go_duration("300ms"), Some(300_000_000));
        assert_eq!(parse_go_duration("-1s"), Some(-s));
        assert_eq!(parse_go_duration("0"), Some(0));
        for bad in ["", "10", "1x", "s", "1.s5", "-", "1h-1m"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert!(dns1035_label("hello-1").is_empty());
        assert_eq!(dns1035_label("Hello").len(), 1);
        assert_eq!(dns1035_label(&"a".repeat(64)), vec!["must be no more than 63 characters".to_string()]);
        assert!(dns1123_label("1ns").is_empty());
        assert!(qualified_name("app.kubernetes.io/name").is_empty());
        assert!(!qualified_name("a/b/c").is_empty());
        assert!(!qualified_name("-x").is_empty());
        assert!(c_identifier("MY_VAR1").is_empty());
        assert!(!c_identifier("my-var").is_empty());
        assert!(!c_identifier("1X").is_empty());
        assert_eq!(parse_go_int32("2147483648"), Err(true));
        assert_eq!(parse_go_int32("1.5"), Err(false));
        assert_eq!(parse_go_int32("-3"), Ok(-3));
    }
}

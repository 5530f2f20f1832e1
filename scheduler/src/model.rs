//! What a function is, as users describe it: its name and settings, with validation that
//! names the offending field.

use crate::scaling::Scaling;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use wisp_runtime::Limits;

use crate::SchedulerError;

/// Settings of one revision: scaling and per-invocation limits. Stored as JSON with every
/// field defaulted on read, so a field added later does not break data dirs (or clients)
/// written before it; unknown names are refused only on user input (`from_params`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Replicas (ready instances) kept while the function is in use: the KPA activation scale.
    pub min_warm: u32,
    /// Without requests for this long, the function drops to zero resident instances: the KPA
    /// stable window.
    pub idle_timeout_ms: u64,
    pub memory_bytes: u64,
    pub timeout_ms: u64,
    pub max_request_body_bytes: u64,
    pub max_response_body_bytes: u64,
    /// Invocations of this function running at once before more get 429; 0 means the node's
    /// default (`wisp up --function-concurrency`).
    pub max_concurrency: u32,
    /// Knative's `containerConcurrency`: requests one replica serves at once, the excess
    /// waiting in the activator; 0 means no hard limit.
    pub container_concurrency: u32,
    /// The KPA knobs (`autoscaling.knative.dev/*`).
    pub scaling: Scaling,
    /// Requests one Wasm instance may serve one after another; 1 (the default) gives every
    /// request a fresh instance. Above 1, guest state persists between those requests.
    pub max_instance_reuse_count: u32,
    /// Environment variables the guest sees.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Environment variables set from a secret's key (Knative `env[].valueFrom.secretKeyRef`).
    /// Only the reference is stored: the value is read when an instance starts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<SecretKeyRef>,
    /// Secrets whose every key becomes an environment variable (`--secret`, Knative
    /// `envFrom[].secretRef`); `env` and `secret_env` win over them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Origins (`https://api.example.com`) the guest may send HTTP requests to; none by
    /// default. Wasm components only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_outbound: Vec<String>,
    /// The port a container image's server listens on (`containers[0].ports`); 0 means the
    /// default, 8080. Container images only.
    #[serde(skip_serializing_if = "is_zero")]
    pub port: u16,
    /// Replaces the image's entrypoint (`containers[0].command`); empty keeps it. Container images only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Replaces the image's cmd (`containers[0].args`); empty keeps it unless `command` is
    /// set (Kubernetes drops the image's cmd then). Container images only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Replaces the image's working directory (`containers[0].workingDir`), an absolute
    /// path. Container images only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// An environment variable read from a secret: `name` gets the value of `secret`'s `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretKeyRef {
    /// The environment variable.
    pub name: String,
    /// The secret, in the function's namespace.
    pub secret: String,
    /// The key in the secret.
    pub key: String,
}

/// Environment variables the platform sets itself (Knative's `reservedEnvVars`).
pub const RESERVED_ENV: &[&str] = &["PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"];

/// An environment variable name: a C identifier (what Knative accepts), not reserved.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let identifier = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !identifier {
        return Err(format!(
            "{name:?} is not a valid environment variable name (letters, digits and '_', not starting with a digit)"
        ));
    }
    if RESERVED_ENV.contains(&name) {
        return Err(format!("{name:?} is a reserved environment variable"));
    }
    Ok(())
}

/// An origin outbound HTTP may be granted (`https://api.example.com`, `http://127.0.0.1:8080`),
/// in its canonical form.
pub fn parse_origin(s: &str) -> Result<String, String> {
    wisp_runtime::wasm::Origin::parse(s).map(|o| o.to_string())
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

impl Default for Settings {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            min_warm: 1,
            idle_timeout_ms: 60_000,
            memory_bytes: limits.memory_bytes,
            timeout_ms: limits.timeout.as_millis() as u64,
            max_request_body_bytes: limits.max_request_body,
            max_response_body_bytes: limits.max_response_body,
            max_concurrency: 0,
            container_concurrency: 0,
            scaling: Scaling::default(),
            max_instance_reuse_count: limits.max_instance_reuse,
            env: BTreeMap::new(),
            secret_env: Vec::new(),
            secrets: Vec::new(),
            allow_outbound: Vec::new(),
            port: 0,
            command: Vec::new(),
            args: Vec::new(),
            working_dir: None,
        }
    }
}

/// Deploy-time settings names, as accepted in query parameters and manifests. `env`
/// (`K=V`), `secret` and `allow_outbound` may repeat: together they replace the previous
/// revision's list (an empty value clears it).
pub const SETTING_NAMES: [&str; 11] = [
    "min_warm",
    "idle_timeout",
    "memory",
    "timeout",
    "max_request_body",
    "max_response_body",
    "max_concurrency",
    "max_instance_reuse_count",
    "env",
    "secret",
    "allow_outbound",
];

const MAX_MIN_WARM: u32 = 1000;
const MAX_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const MAX_BODY: u64 = 1 << 30;
const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);
const MAX_CONCURRENCY: u32 = 100_000;
/// Largest `max_instance_reuse_count`.
pub const MAX_INSTANCE_REUSE: u32 = 10_000;
const MIN_MEMORY: u64 = 1 << 20;

impl Settings {
    /// Defaults overridden by `(name, value)` pairs, e.g. `("memory", "64Mi")`.
    pub fn from_params<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, SchedulerError> {
        Settings::default().with_params(params)
    }

    /// These settings with some overridden by `(name, value)` pairs: a redeploy starts from
    /// the previous revision's settings, so only what a flag names changes.
    pub fn with_params<'a>(self, params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, SchedulerError> {
        let mut s = self;
        // A repeatable setting given at all replaces the previous list.
        let mut listed = std::collections::BTreeSet::new();
        for (name, value) in params {
            let invalid = |message: String| SchedulerError::InvalidSetting { field: name.to_string(), message };
            if matches!(name, "env" | "secret" | "allow_outbound") && listed.insert(name) {
                match name {
                    "env" => s.env.clear(),
                    "secret" => s.secrets.clear(),
                    _ => s.allow_outbound.clear(),
                }
            }
            match name {
                "env" | "secret" | "allow_outbound" if value.is_empty() => {}
                "env" => {
                    let (k, v) = value.split_once('=').ok_or_else(|| invalid(format!("{value:?} is not K=V")))?;
                    check_env_name(k).map_err(invalid)?;
                    s.env.insert(k.to_string(), v.to_string());
                }
                "secret" => {
                    validate_name(value)
                        .map_err(|_| invalid(format!("{value:?} is not a secret name (a DNS label)")))?;
                    if !s.secrets.iter().any(|n| n == value) {
                        s.secrets.push(value.to_string());
                    }
                }
                "allow_outbound" => {
                    let origin = parse_origin(value).map_err(invalid)?;
                    if !s.allow_outbound.contains(&origin) {
                        s.allow_outbound.push(origin);
                    }
                }
                "min_warm" => {
                    s.min_warm = value.parse().map_err(|_| invalid(format!("{value:?} is not a whole number")))?;
                    if s.min_warm > MAX_MIN_WARM {
                        return Err(invalid(format!("{} is above the maximum of {MAX_MIN_WARM}", s.min_warm)));
                    }
                }
                "idle_timeout" => {
                    let t = parse_duration(value).map_err(invalid)?;
                    if t > MAX_IDLE_TIMEOUT {
                        return Err(invalid(format!("{value} is above the maximum of 720h")));
                    }
                    s.idle_timeout_ms = t.as_millis() as u64;
                }
                "max_concurrency" => {
                    let n: u32 = value.parse().map_err(|_| invalid(format!("{value:?} is not a whole number")))?;
                    if n > MAX_CONCURRENCY {
                        return Err(invalid(format!("{n} is above the maximum of {MAX_CONCURRENCY}")));
                    }
                    s.max_concurrency = n;
                }
                "max_instance_reuse_count" => {
                    let n: u32 = value.parse().map_err(|_| invalid(format!("{value:?} is not a whole number")))?;
                    if !(1..=MAX_INSTANCE_REUSE).contains(&n) {
                        return Err(invalid(format!("{n} must be at least 1 and at most {MAX_INSTANCE_REUSE}")));
                    }
                    s.max_instance_reuse_count = n;
                }
                "memory" => {
                    s.memory_bytes = parse_size(value).map_err(invalid)?;
                    if s.memory_bytes < MIN_MEMORY {
                        return Err(invalid(format!("{value} is below the minimum of 1Mi")));
                    }
                }
                "timeout" => {
                    let t = parse_duration(value).map_err(invalid)?;
                    if t.is_zero() || t > MAX_TIMEOUT {
                        return Err(invalid(format!("{value} must be above 0 and at most 15m")));
                    }
                    s.timeout_ms = t.as_millis() as u64;
                }
                "max_request_body" | "max_response_body" => {
                    let n = parse_size(value).map_err(invalid)?;
                    if n == 0 || n > MAX_BODY {
                        return Err(invalid(format!("{value} must be above 0 and at most 1Gi")));
                    }
                    if name == "max_request_body" {
                        s.max_request_body_bytes = n;
                    } else {
                        s.max_response_body_bytes = n;
                    }
                }
                other => {
                    return Err(SchedulerError::InvalidSetting {
                        field: other.to_string(),
                        message: format!("unknown setting (expected one of: {})", SETTING_NAMES.join(", ")),
                    });
                }
            }
        }
        Ok(s)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.memory_bytes,
            timeout: Duration::from_millis(self.timeout_ms),
            max_request_body: self.max_request_body_bytes,
            max_response_body: self.max_response_body_bytes,
            max_instance_reuse: self.max_instance_reuse_count,
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// The manifest names of the container-only fields these settings set (`ports`, `command`,
    /// `args`, `workingDir`), in that order.
    pub fn container_fields(&self) -> Vec<&'static str> {
        let set = [
            ("ports", self.port != 0),
            ("command", !self.command.is_empty()),
            ("args", !self.args.is_empty()),
            ("workingDir", self.working_dir.is_some()),
        ];
        set.into_iter().filter(|(_, on)| *on).map(|(name, _)| name).collect()
    }
}

/// What a revision runs: a Wasm component, or an OCI container image, by content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Artifact {
    /// A `wasi:http` component stored as `components/<sha256>.wasm`.
    Wasm {
        /// Hex sha256 of the component bytes.
        sha256: String,
        /// Size of the component.
        bytes: u64,
    },
    /// An OCI image in the node's image store (`images/`), run by crun.
    #[serde(rename = "container")]
    Image {
        /// Hex sha256 of the image manifest.
        sha256: String,
        /// Compressed size of its layers and config.
        bytes: u64,
    },
}

impl Default for Artifact {
    fn default() -> Self {
        Artifact::Wasm { sha256: String::new(), bytes: 0 }
    }
}

impl Artifact {
    /// The content digest (`sha256:<hex>`).
    pub fn digest(&self) -> String {
        match self {
            Artifact::Wasm { sha256, .. } | Artifact::Image { sha256, .. } => format!("sha256:{sha256}"),
        }
    }

    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        match self {
            Artifact::Wasm { bytes, .. } | Artifact::Image { bytes, .. } => *bytes,
        }
    }
}

/// Function names are DNS-1123 labels, like Kubernetes object names: they appear in URLs.
pub fn validate_name(name: &str) -> Result<(), SchedulerError> {
    let invalid = |why: &str| SchedulerError::InvalidName { name: name.to_string(), reason: why.to_string() };
    if name.is_empty() || name.len() > 63 {
        return Err(invalid("must be 1 to 63 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(invalid("may contain only lowercase letters, digits and '-'"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) || name.ends_with('-') {
        return Err(invalid("must start with a letter and end with a letter or digit"));
    }
    Ok(())
}

/// `1048576`, `64Ki`, `128Mi`, `1Gi`, `10M` (decimal).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a size (e.g. 64Mi, 1048576)"))?;
    let mult: u64 = match unit {
        "" => 1,
        "K" | "k" => 1000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return Err(format!("{s:?} has an unknown size unit {unit:?} (use Ki, Mi, Gi, K, M or G)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

/// `500ms`, `10s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 10s, 2m)"))?;
    let seconds_per_unit = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "" => return Err(format!("{s:?} needs a unit: ms, s, m or h")),
        _ => return Err(format!("{s:?} has an unknown unit {unit:?} (use ms, s, m or h)")),
    };
    n.checked_mul(seconds_per_unit).map(Duration::from_secs).ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        assert!(validate_name("hello").is_ok());
        assert!(validate_name("a1-b2").is_ok());
        for bad in ["", "Hello", "-x", "x-", "1abc", "a_b", "a.b", &"a".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64Mi").unwrap(), 64 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("2K").unwrap(), 2000);
        assert!(parse_size("12Xi").is_err());
        assert!(parse_size("Mi").is_err());
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("10").is_err());
        // Overflow is an error, never a wrap into the valid range.
        assert!(parse_duration("1147797409030816545h").is_err());
        assert!(parse_duration("18446744073709551615m").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("17179869184Gi").is_err());
    }

    #[test]
    fn settings_name_the_bad_field() {
        let err = Settings::from_params([("memory", "lots")]).unwrap_err().to_string();
        assert!(err.contains("memory"), "{err}");
        let err = Settings::from_params([("colour", "red")]).unwrap_err().to_string();
        assert!(err.contains("colour") && err.contains("min_warm"), "{err}");
        let s = Settings::from_params([("min_warm", "0"), ("timeout", "2s")]).unwrap();
        assert_eq!((s.min_warm, s.timeout_ms), (0, 2000));
        let err = Settings::from_params([("timeout", "1147797409030816545h")]).unwrap_err().to_string();
        assert!(err.contains("timeout") && err.contains("too large"), "{err}");
    }

    #[test]
    fn a_redeploy_keeps_what_no_flag_changes() {
        let first = Settings::from_params([("memory", "64Mi"), ("min_warm", "3")]).unwrap();
        let second = first.with_params([("timeout", "5s")]).unwrap();
        assert_eq!((second.memory_bytes, second.min_warm, second.timeout_ms), (64 << 20, 3, 5000));
    }

    #[test]
    fn stored_settings_tolerate_missing_and_new_fields() {
        // As written by release 921004f: no max_concurrency.
        let old = r#"{"min_warm":2,"idle_timeout_ms":60000,"memory_bytes":67108864,"timeout_ms":5000,
                      "max_request_body_bytes":4194304,"max_response_body_bytes":16777216}"#;
        let s: Settings = serde_json::from_str(old).unwrap();
        assert_eq!((s.min_warm, s.max_concurrency), (2, 0));
        // As a later release might write it.
        let newer = r#"{"min_warm":1,"some_future_field":true}"#;
        assert_eq!(serde_json::from_str::<Settings>(newer).unwrap().min_warm, 1);
    }
}

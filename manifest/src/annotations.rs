//! Annotations that steer a revision: Knative's `autoscaling.knative.dev/*` (validated as
//! pkg/apis/autoscaling/annotation_validation.go does, legacy camelCase aliases included, the
//! first key of a priority list winning as `kmap.KeyPriority.Get` does) and Wisp's own
//! `wisp.dev/*` knobs that have no Knative field.

use crate::field::{FieldErrors, join};
use crate::k8s::{format_bytes, parse_go_duration, parse_go_float, parse_go_int32, parse_quantity};
use std::collections::BTreeMap;
use wisp_scheduler::{Metric, Settings};

/// The autoscaling annotation group (Knative checks the bare prefix, without `/`).
pub const AUTOSCALING_GROUP: &str = "autoscaling.knative.dev";
/// Wisp's annotation prefix.
pub const WISP_PREFIX: &str = "wisp.dev/";

/// One knob: the canonical key first, then its legacy aliases (`kmap.KeyPriority`).
pub struct Key(pub &'static [&'static str]);

impl Key {
    /// The first key present, with its value.
    pub fn get<'m>(&self, m: &'m BTreeMap<String, String>) -> Option<(&'static str, &'m str)> {
        self.0.iter().find_map(|k| m.get(*k).map(|v| (*k, v.as_str())))
    }

    /// The canonical key.
    pub fn canonical(&self) -> &'static str {
        self.0[0]
    }
}

pub const CLASS: Key = Key(&["autoscaling.knative.dev/class"]);
pub const MIN_SCALE: Key = Key(&["autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/minScale"]);
pub const MAX_SCALE: Key = Key(&["autoscaling.knative.dev/max-scale", "autoscaling.knative.dev/maxScale"]);
pub const INITIAL_SCALE: Key = Key(&["autoscaling.knative.dev/initial-scale", "autoscaling.knative.dev/initialScale"]);
pub const SCALE_DOWN_DELAY: Key =
    Key(&["autoscaling.knative.dev/scale-down-delay", "autoscaling.knative.dev/scaleDownDelay"]);
pub const METRIC: Key = Key(&["autoscaling.knative.dev/metric"]);
pub const TARGET: Key = Key(&["autoscaling.knative.dev/target"]);
pub const RETENTION: Key = Key(&[
    "autoscaling.knative.dev/scale-to-zero-pod-retention-period",
    "autoscaling.knative.dev/scaleToZeroPodRetentionPeriod",
]);
pub const ALGORITHM: Key = Key(&[
    "autoscaling.knative.dev/metric-aggregation-algorithm",
    "autoscaling.knative.dev/metricAggregationAlgorithm",
]);
pub const WINDOW: Key = Key(&["autoscaling.knative.dev/window"]);
pub const UTILIZATION: Key = Key(&[
    "autoscaling.knative.dev/target-utilization-percentage",
    "autoscaling.knative.dev/targetUtilizationPercentage",
]);
pub const TBC: Key =
    Key(&["autoscaling.knative.dev/target-burst-capacity", "autoscaling.knative.dev/targetBurstCapacity"]);
pub const PANIC_WINDOW: Key =
    Key(&["autoscaling.knative.dev/panic-window-percentage", "autoscaling.knative.dev/panicWindowPercentage"]);
pub const PANIC_THRESHOLD: Key =
    Key(&["autoscaling.knative.dev/panic-threshold-percentage", "autoscaling.knative.dev/panicThresholdPercentage"]);
pub const ACTIVATION_SCALE: Key = Key(&["autoscaling.knative.dev/activation-scale"]);

const AUTOSCALING_KEYS: &[&Key] = &[
    &CLASS,
    &MIN_SCALE,
    &MAX_SCALE,
    &INITIAL_SCALE,
    &SCALE_DOWN_DELAY,
    &METRIC,
    &TARGET,
    &RETENTION,
    &ALGORITHM,
    &WINDOW,
    &UTILIZATION,
    &TBC,
    &PANIC_WINDOW,
    &PANIC_THRESHOLD,
    &ACTIVATION_SCALE,
];

/// `Settings::max_concurrency` (0..100000; 0 = the node's default).
pub const MAX_CONCURRENCY: &str = "wisp.dev/max-concurrency";
/// `Settings::max_request_body_bytes` (a quantity, above 0 and at most 1Gi).
pub const MAX_REQUEST_BODY: &str = "wisp.dev/max-request-body";
/// `Settings::max_response_body_bytes` (a quantity, above 0 and at most 1Gi).
pub const MAX_RESPONSE_BODY: &str = "wisp.dev/max-response-body";
/// `Settings::allow_outbound`: origins outbound HTTP may reach, comma-separated.
pub const ALLOW_OUTBOUND: &str = "wisp.dev/allow-outbound";
/// `Settings::max_instance_reuse_count`: requests one Wasm instance may serve in sequence
/// (1..10000; 1 = a fresh instance per request).
pub const MAX_INSTANCE_REUSE_COUNT: &str = "wisp.dev/max-instance-reuse-count";
/// The Wisp annotations of a revision template.
pub const TEMPLATE_WISP_KEYS: &[&str] =
    &[MAX_CONCURRENCY, MAX_REQUEST_BODY, MAX_RESPONSE_BODY, ALLOW_OUTBOUND, MAX_INSTANCE_REUSE_COUNT];

pub const KPA: &str = "kpa.autoscaling.knative.dev";
pub const HPA: &str = "hpa.autoscaling.knative.dev";
const NS_PER_SEC: i128 = 1_000_000_000;
const WINDOW_MIN: i128 = 6 * NS_PER_SEC;
const WINDOW_MAX: i128 = 3600 * NS_PER_SEC;
const MAX_WARM: i64 = 1000;
const MAX_CONCURRENCY_LIMIT: i64 = 100_000;
const MAX_BODY: u64 = 1 << 30;

/// Refuses autoscaling and Wisp annotations on a Service's (or source's) own metadata: they work
/// only on the revision template (`ValidateHasNoAutoscalingAnnotation`).
pub fn refuse_on_service(anns: &BTreeMap<String, String>, path: &str, errs: &mut FieldErrors) {
    for key in anns.keys() {
        if key.starts_with(AUTOSCALING_GROUP) {
            errs.invalid_key(
                key,
                path,
                r#"autoscaling annotations must be put under "spec.template.metadata.annotations" to work"#,
            );
        } else if key.starts_with(WISP_PREFIX) {
            errs.invalid_key(
                key,
                path,
                r#"Wisp annotations must be put under "spec.template.metadata.annotations" to work"#,
            );
        }
    }
}

/// Validates a template's annotations and applies them to `settings`.
pub fn apply_template(anns: &BTreeMap<String, String>, path: &str, settings: &mut Settings, errs: &mut FieldErrors) {
    let at = |key: &str| join(path, key);
    let known: Vec<&str> = AUTOSCALING_KEYS.iter().flat_map(|k| k.0.iter().copied()).collect();
    for key in anns.keys() {
        if key.starts_with(AUTOSCALING_GROUP) && !known.contains(&key.as_str()) {
            errs.invalid_key(key, path, "not an autoscaling annotation Knative defines");
        }
        if key.starts_with(WISP_PREFIX) && !TEMPLATE_WISP_KEYS.contains(&key.as_str()) {
            errs.invalid_key(key, path, format!("unknown Wisp annotation (known: {})", TEMPLATE_WISP_KEYS.join(", ")));
        }
    }
    let s = &mut settings.scaling;

    // validateClass; Wisp runs the KPA only.
    if let Some((k, v)) = CLASS.get(anns) {
        if v.ends_with(".knative.dev") && v != KPA && v != HPA {
            errs.invalid(v, at(k));
        } else if v != KPA {
            errs.unsupported_details(at(k), format!("Wisp autoscales with {KPA} only, not {v:?}"));
        }
    }
    let class = CLASS.get(anns).map_or(KPA, |(_, v)| v);

    // validateMinMaxScale (MaxScaleLimit is 0 by default: no limit).
    let min = int_ge0(anns, &MIN_SCALE, path, errs);
    let max = int_ge0(anns, &MAX_SCALE, path, errs);
    if max != 0 && max < min {
        errs.add_paths(
            format!("max-scale={max} is less than min-scale={min}"),
            vec![at(MAX_SCALE.canonical()), at(MIN_SCALE.canonical())],
        );
    }
    s.min_scale = min as u32;
    s.max_scale = max as u32;
    if let Some((k, v)) = ACTIVATION_SCALE.get(anns) {
        match parse_go_int32(v).map(i64::from) {
            Err(_) => errs.invalid(v, at(k)),
            Ok(nz) if i64::from(min) > nz => {
                errs.add(format!("min-scale={min} is greater than activation-scale={nz}"), at(k))
            }
            Ok(nz) if max != 0 && i64::from(max) < nz => {
                errs.add(format!("max-scale={max} is less than activation-scale={nz}"), at(k))
            }
            Ok(nz) if nz < 2 => errs.add(format!("activation-scale={nz} must be greater than 1"), at(k)),
            Ok(nz) if nz > MAX_WARM => {
                errs.invalid_details(v, at(k), format!("Wisp keeps at most {MAX_WARM} replicas warm"))
            }
            Ok(nz) => settings.min_warm = nz as u32,
        }
    }

    // validateFloats.
    if let Some((k, v)) = PANIC_WINDOW.get(anns) {
        match parse_go_float(v) {
            None => errs.invalid(v, at(k)),
            Some(f) if !(1.0..=100.0).contains(&f) => errs.out_of_bounds(v, 1, 100, at(k)),
            Some(f) => s.panic_window_percentage = f,
        }
    }
    if let Some((k, v)) = PANIC_THRESHOLD.get(anns) {
        match parse_go_float(v) {
            None => errs.invalid(v, at(k)),
            Some(f) if !(110.0..=1000.0).contains(&f) => errs.out_of_bounds(v, 110, 1000, at(k)),
            Some(f) => s.panic_threshold_percentage = f,
        }
    }
    if let Some((k, v)) = TARGET.get(anns) {
        match parse_go_float(v) {
            None => errs.invalid(v, at(k)),
            Some(f) if f < 0.01 => errs.add(format!("target {v} should be at least 0.01"), at(k)),
            Some(f) => s.target = Some(f),
        }
    }
    if let Some((k, v)) = UTILIZATION.get(anns) {
        match parse_go_float(v) {
            None => errs.invalid(v, at(k)),
            Some(f) if !(1.0..=100.0).contains(&f) => errs.out_of_bounds(v, 1, 100, at(k)),
            Some(f) => s.target_utilization_percentage = f,
        }
    }
    if let Some((k, v)) = TBC.get(anns) {
        match parse_go_float(v) {
            Some(f) if f >= 0.0 || f == -1.0 => s.target_burst_capacity = f,
            _ => errs.invalid(v, at(k)),
        }
    }

    // validateWindow: the path is always the canonical key.
    if let Some((_, v)) = WINDOW.get(anns) {
        let key = at(WINDOW.canonical());
        match parse_go_duration(v) {
            None => errs.invalid(v, key),
            Some(d) if !(WINDOW_MIN..=WINDOW_MAX).contains(&d) => errs.out_of_bounds(v, "6s", "1h0m0s", key),
            Some(d) if d % NS_PER_SEC != 0 => errs.add("must be specified with at most second precision", key),
            Some(d) => settings.idle_timeout_ms = (d / 1_000_000) as u64,
        }
    }
    // validateLastPodRetention.
    if let Some((k, v)) = RETENTION.get(anns) {
        match parse_go_duration(v) {
            None => errs.invalid(v, at(k)),
            Some(d) if !(0..=WINDOW_MAX).contains(&d) => errs.out_of_bounds(v, "0s", "1h0m0s", at(k)),
            Some(d) => s.scale_to_zero_retention_ms = (d / 1_000_000) as u64,
        }
    }
    // validateScaleDownDelay.
    if let Some((k, v)) = SCALE_DOWN_DELAY.get(anns) {
        match parse_go_duration(v) {
            None => errs.invalid(v, at(k)),
            Some(d) if !(0..=WINDOW_MAX).contains(&d) => errs.out_of_bounds(v, "0s", "1h0m0s", at(k)),
            Some(d) if d % NS_PER_SEC != 0 => errs.add("must be specified with at most second precision", at(k)),
            Some(d) => s.scale_down_delay_ms = (d / 1_000_000) as u64,
        }
    }
    // validateMetric: the path is always the canonical key.
    if let Some((_, metric)) = METRIC.get(anns) {
        let ok = match class {
            KPA => matches!(metric, "concurrency" | "rps"),
            HPA => !metric.is_empty(),
            _ => true,
        };
        if !ok {
            errs.invalid(metric, at(METRIC.canonical()));
        }
        s.metric = if metric == "rps" { Metric::Rps } else { Metric::Concurrency };
    }
    // validateAlgorithm (Knative checks it only under an explicit KPA class; Wisp is always KPA).
    if let Some((k, v)) = ALGORITHM.get(anns).filter(|(_, v)| !v.is_empty()) {
        match v {
            "linear" => {}
            "weighted-exponential" | "weightedExponential" => {
                errs.unsupported_details(at(k), "Wisp's autoscaler averages its windows linearly")
            }
            _ => errs.invalid(v, at(k)),
        }
    }
    // validateInitialScale (allow-zero-initial-scale is false by default).
    if let Some((k, v)) = INITIAL_SCALE.get(anns) {
        match go_atoi(v) {
            None => errs.invalid(v, at(k)),
            Some(n) if n < 0 => errs.invalid(v, at(&format!("{k} must be greater than 0"))),
            Some(0) => errs.invalid(v, at(&format!("{k}=0 not allowed by cluster"))),
            Some(n) => match u32::try_from(n) {
                Ok(n) => s.initial_scale = n,
                Err(_) => errs.invalid(v, at(k)),
            },
        }
    }

    // Wisp's own knobs.
    if let Some(v) = anns.get(MAX_CONCURRENCY) {
        match v.parse::<i64>() {
            Ok(n) if (0..=MAX_CONCURRENCY_LIMIT).contains(&n) => settings.max_concurrency = n as u32,
            Ok(_) => errs.out_of_bounds(v, 0, MAX_CONCURRENCY_LIMIT, at(MAX_CONCURRENCY)),
            Err(_) => errs.invalid(v, at(MAX_CONCURRENCY)),
        }
    }
    if let Some(v) = anns.get(MAX_INSTANCE_REUSE_COUNT) {
        let max = wisp_scheduler::MAX_INSTANCE_REUSE;
        match v.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => settings.max_instance_reuse_count = n,
            Ok(_) => errs.out_of_bounds(v, 1, max, at(MAX_INSTANCE_REUSE_COUNT)),
            Err(_) => errs.invalid(v, at(MAX_INSTANCE_REUSE_COUNT)),
        }
    }
    if let Some(v) = anns.get(ALLOW_OUTBOUND) {
        settings.allow_outbound.clear();
        for origin in v.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            match wisp_scheduler::parse_origin(origin) {
                Ok(o) if !settings.allow_outbound.contains(&o) => settings.allow_outbound.push(o),
                Ok(_) => {}
                Err(why) => errs.invalid_details(v, at(ALLOW_OUTBOUND), why),
            }
        }
    }
    for (key, field) in [
        (MAX_REQUEST_BODY, &mut settings.max_request_body_bytes),
        (MAX_RESPONSE_BODY, &mut settings.max_response_body_bytes),
    ] {
        if let Some(v) = anns.get(key) {
            match parse_quantity(v) {
                None => errs.invalid_details(v, at(key), crate::k8s::QUANTITY_ERROR),
                Some(n) if n == 0 || n > MAX_BODY => errs.out_of_bounds(v, 1, "1Gi", at(key)),
                Some(n) => *field = n,
            }
        }
    }
}

/// `getIntGE0`: absent is 0; a value out of the int32 range or negative is out of bounds.
fn int_ge0(anns: &BTreeMap<String, String>, key: &Key, path: &str, errs: &mut FieldErrors) -> i32 {
    let Some((k, v)) = key.get(anns) else { return 0 };
    match parse_go_int32(v) {
        Ok(n) if n >= 0 => n,
        Ok(_) | Err(true) => {
            errs.out_of_bounds(v, 0, i32::MAX, join(path, k));
            0
        }
        Err(false) => {
            errs.invalid(v, join(path, k));
            0
        }
    }
}

/// Go's `strconv.Atoi` (64-bit).
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The template annotations that make `settings` come out of [`apply_template`], starting from
/// `written`: a key whose written value already yields the setting stays as written; otherwise
/// the canonical key is set (or, where the setting is back at its default and nothing was
/// written, left out). Settings outside Knative's bounds are clamped into them.
pub fn for_settings(written: &BTreeMap<String, String>, settings: &Settings) -> BTreeMap<String, String> {
    let mut parsed = Settings::default();
    apply_template(written, "", &mut parsed, &mut FieldErrors::default());
    let default = Settings::default();
    let (want, have, def) = (&settings.scaling, &parsed.scaling, &default.scaling);
    let mut out = Out { map: written.clone(), written };
    out.knob(&MIN_SCALE, want.min_scale != have.min_scale, want.min_scale == def.min_scale, want.min_scale);
    out.knob(&MAX_SCALE, want.max_scale != have.max_scale, want.max_scale == def.max_scale, want.max_scale);
    out.knob(
        &INITIAL_SCALE,
        want.initial_scale != have.initial_scale,
        want.initial_scale == def.initial_scale,
        want.initial_scale.max(1),
    );
    out.knob(
        &METRIC,
        want.metric != have.metric,
        want.metric == def.metric,
        if want.metric == Metric::Rps { "rps" } else { "concurrency" },
    );
    if want.target != have.target {
        match want.target {
            Some(t) => out.put(TARGET.canonical(), t.max(0.01)),
            None => out.remove(TARGET.canonical()),
        }
    }
    let pct = |v: f64, lo: f64, hi: f64| v.clamp(lo, hi);
    out.knob(
        &UTILIZATION,
        want.target_utilization_percentage != have.target_utilization_percentage,
        want.target_utilization_percentage == def.target_utilization_percentage,
        pct(want.target_utilization_percentage, 1.0, 100.0),
    );
    out.knob(
        &PANIC_WINDOW,
        want.panic_window_percentage != have.panic_window_percentage,
        want.panic_window_percentage == def.panic_window_percentage,
        pct(want.panic_window_percentage, 1.0, 100.0),
    );
    out.knob(
        &PANIC_THRESHOLD,
        want.panic_threshold_percentage != have.panic_threshold_percentage,
        want.panic_threshold_percentage == def.panic_threshold_percentage,
        pct(want.panic_threshold_percentage, 110.0, 1000.0),
    );
    let tbc = want.target_burst_capacity;
    out.knob(
        &TBC,
        tbc != have.target_burst_capacity,
        tbc == def.target_burst_capacity,
        if tbc < 0.0 { -1.0 } else { tbc },
    );
    let secs = |ms: u64, lo: u64, hi: u64| format!("{}s", ms.div_ceil(1000).clamp(lo, hi));
    out.knob(
        &SCALE_DOWN_DELAY,
        want.scale_down_delay_ms != have.scale_down_delay_ms,
        want.scale_down_delay_ms == def.scale_down_delay_ms,
        secs(want.scale_down_delay_ms, 0, 3600),
    );
    out.knob(
        &RETENTION,
        want.scale_to_zero_retention_ms != have.scale_to_zero_retention_ms,
        want.scale_to_zero_retention_ms == def.scale_to_zero_retention_ms,
        secs(want.scale_to_zero_retention_ms, 0, 3600),
    );
    out.knob(
        &WINDOW,
        settings.idle_timeout_ms != parsed.idle_timeout_ms,
        settings.idle_timeout_ms == default.idle_timeout_ms,
        secs(settings.idle_timeout_ms, 6, 3600),
    );
    if settings.min_warm != parsed.min_warm {
        if settings.min_warm >= 2 {
            out.put(ACTIVATION_SCALE.canonical(), settings.min_warm.min(MAX_WARM as u32));
        } else {
            out.remove(ACTIVATION_SCALE.canonical());
        }
    }
    out.knob(
        &Key(&[MAX_CONCURRENCY]),
        settings.max_concurrency != parsed.max_concurrency,
        settings.max_concurrency == default.max_concurrency,
        settings.max_concurrency.min(MAX_CONCURRENCY_LIMIT as u32),
    );
    out.knob(
        &Key(&[MAX_REQUEST_BODY]),
        settings.max_request_body_bytes != parsed.max_request_body_bytes,
        settings.max_request_body_bytes == default.max_request_body_bytes,
        format_bytes(settings.max_request_body_bytes.clamp(1, MAX_BODY)),
    );
    out.knob(
        &Key(&[MAX_RESPONSE_BODY]),
        settings.max_response_body_bytes != parsed.max_response_body_bytes,
        settings.max_response_body_bytes == default.max_response_body_bytes,
        format_bytes(settings.max_response_body_bytes.clamp(1, MAX_BODY)),
    );
    out.knob(
        &Key(&[MAX_INSTANCE_REUSE_COUNT]),
        settings.max_instance_reuse_count != parsed.max_instance_reuse_count,
        settings.max_instance_reuse_count == default.max_instance_reuse_count,
        settings.max_instance_reuse_count,
    );
    if settings.allow_outbound != parsed.allow_outbound {
        if settings.allow_outbound.is_empty() {
            out.remove(ALLOW_OUTBOUND);
        } else {
            out.put(ALLOW_OUTBOUND, settings.allow_outbound.join(","));
        }
    }
    out.map
}

/// The annotations [`for_settings`] builds.
struct Out<'w> {
    map: BTreeMap<String, String>,
    written: &'w BTreeMap<String, String>,
}

impl Out<'_> {
    fn put(&mut self, key: &str, value: impl ToString) {
        self.map.insert(key.to_string(), value.to_string());
    }

    fn remove(&mut self, key: &str) {
        self.map.remove(key);
    }

    /// Sets `key` to `value` when the written annotations yield something else, unless the
    /// wanted value is the default and nothing was written (then absence says it).
    fn knob(&mut self, key: &Key, differs: bool, is_default: bool, value: impl ToString) {
        if differs && !(is_default && key.get(self.written).is_none()) {
            self.put(key.canonical(), value);
        }
    }
}

/// `Scaling` as the autoscaler gets it from annotations alone (for tests and docs).
#[cfg(test)]
pub fn scaling_of(anns: &[(&str, &str)]) -> Result<wisp_scheduler::Scaling, String> {
    let map = anns.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut settings = Settings::default();
    let mut errs = FieldErrors::default();
    apply_template(&map, "spec.template.metadata.annotations", &mut settings, &mut errs);
    if errs.is_empty() { Ok(settings.scaling) } else { Err(errs.to_string()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_key_of_a_priority_list_wins() {
        let s = scaling_of(&[("autoscaling.knative.dev/min-scale", "2"), ("autoscaling.knative.dev/minScale", "5")])
            .unwrap();
        assert_eq!(s.min_scale, 2);
        let s = scaling_of(&[("autoscaling.knative.dev/minScale", "5")]).unwrap();
        assert_eq!(s.min_scale, 5);
        // A bad alias is not looked at when the canonical key is there.
        let s = scaling_of(&[
            ("autoscaling.knative.dev/target-burst-capacity", "0"),
            ("autoscaling.knative.dev/targetBurstCapacity", "nonsense"),
        ])
        .unwrap();
        assert_eq!(s.target_burst_capacity, 0.0);
        // Errors name the key that was used.
        let err = scaling_of(&[("autoscaling.knative.dev/maxScale", "-1")]).unwrap_err();
        assert_eq!(
            err,
            "expected 0 <= -1 <= 2147483647: spec.template.metadata.annotations.autoscaling.knative.dev/maxScale"
        );
    }

    #[test]
    fn every_alias_maps() {
        let s = scaling_of(&[
            ("autoscaling.knative.dev/initialScale", "3"),
            ("autoscaling.knative.dev/maxScale", "9"),
            ("autoscaling.knative.dev/scaleDownDelay", "30s"),
            ("autoscaling.knative.dev/scaleToZeroPodRetentionPeriod", "1m"),
            ("autoscaling.knative.dev/metricAggregationAlgorithm", "linear"),
            ("autoscaling.knative.dev/targetUtilizationPercentage", "80"),
            ("autoscaling.knative.dev/panicWindowPercentage", "20"),
            ("autoscaling.knative.dev/panicThresholdPercentage", "150"),
        ])
        .unwrap();
        assert_eq!(
            (s.initial_scale, s.max_scale, s.scale_down_delay_ms, s.scale_to_zero_retention_ms),
            (3, 9, 30_000, 60_000)
        );
        assert_eq!(
            (s.target_utilization_percentage, s.panic_window_percentage, s.panic_threshold_percentage),
            (80.0, 20.0, 150.0)
        );
    }

    #[test]
    fn annotations_for_settings_round_trip() {
        let mut settings =
            Settings { min_warm: 3, idle_timeout_ms: 120_000, max_concurrency: 7, ..Settings::default() };
        settings.scaling.max_scale = 5;
        settings.scaling.target = Some(10.0);
        settings.scaling.metric = Metric::Rps;
        settings.max_request_body_bytes = 2 << 20;
        let anns = for_settings(&BTreeMap::new(), &settings);
        assert_eq!(anns.get("autoscaling.knative.dev/activation-scale").map(String::as_str), Some("3"));
        assert_eq!(anns.get("autoscaling.knative.dev/window").map(String::as_str), Some("120s"));
        assert_eq!(anns.get(MAX_REQUEST_BODY).map(String::as_str), Some("2Mi"));
        assert!(!anns.contains_key("autoscaling.knative.dev/min-scale"), "defaults are left out: {anns:?}");
        let mut back = Settings::default();
        let mut errs = FieldErrors::default();
        apply_template(&anns, "", &mut back, &mut errs);
        assert!(errs.is_empty(), "{errs}");
        assert_eq!(back, settings);
        // What was written and still holds stays as written (aliases included).
        let written: BTreeMap<String, String> =
            [("autoscaling.knative.dev/maxScale".to_string(), "5".to_string())].into_iter().collect();
        let anns = for_settings(&written, &settings);
        assert!(!anns.contains_key("autoscaling.knative.dev/max-scale"));
    }
}

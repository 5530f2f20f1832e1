//! Price plans and bills, in exact integers: prices are decimals read digit by digit into
//! pico-units (10⁻¹² of the currency unit), products are taken in `u128`, and each line item's
//! amount is rounded once, half up, to micro-units (10⁻⁶). Nothing here touches a float.
//!
//! Meters (Lambda's model, plus Workers' CPU time): requests (invocations that ran: not those
//! refused before running), GB-seconds of configured memory over wall time rounded up to the
//! millisecond per invocation (memory rounded up to the KiB; a GB is 1024 MiB, as Lambda counts
//! it), and optionally CPU milliseconds (thread CPU time per invocation).

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Decimal places a price may have: prices are kept in pico-units.
pub const PRICE_DECIMALS: u32 = 12;
const PICO: u128 = 1_000_000_000_000;
/// Pico-units per micro-unit: amounts are rounded to micro-units.
const PICO_PER_MICRO: u128 = 1_000_000;
/// Largest price accepted, in whole currency units: keeps every product inside `u128`.
pub const MAX_PRICE: u128 = 1_000_000;
/// KiB-milliseconds in a GB-second (1 GiB × 1000 ms).
pub const KIB_MS_PER_GB_S: u128 = 1024 * 1024 * 1000;

/// A price: an exact non-negative decimal with at most [`PRICE_DECIMALS`] places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    pico: u128,
}

impl Price {
    /// `"0.20"`, `"0.0000166667"`, `"5"`: digits, at most one point, at most 12 decimals, at
    /// most [`MAX_PRICE`].
    pub fn parse(s: &str) -> Result<Price, String> {
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(frac) || (s.contains('.') && frac.is_empty()) {
            return Err(format!("{s:?} is not a decimal number like \"0.20\" (digits, one optional point)"));
        }
        if frac.len() > PRICE_DECIMALS as usize {
            return Err(format!("{s:?} has more than {PRICE_DECIMALS} decimal places"));
        }
        let whole: u128 =
            whole.parse().ok().filter(|w| *w <= MAX_PRICE).ok_or_else(|| format!("{s:?} is above {MAX_PRICE}"))?;
        let frac_pico = format!("{frac:0<12}").parse::<u128>().expect("12 digits");
        let pico = whole * PICO + frac_pico;
        if pico > MAX_PRICE * PICO {
            return Err(format!("{s:?} is above {MAX_PRICE}"));
        }
        Ok(Price { pico })
    }

    /// The price in pico-units of the currency.
    pub fn pico(self) -> u128 {
        self.pico
    }
}

impl fmt::Display for Price {
    /// The exact decimal, without trailing zeros (`0.2`, `0.0000166667`, `5`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&decimal(self.pico, PICO))
    }
}

impl Serialize for Price {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `num / den` as an exact decimal, trailing zeros dropped. `den` must have no prime factor
/// but 2 and 5 (every unit here: 10ⁿ, 2²⁰·10³); otherwise the result is rounded down at 30
/// places.
pub fn decimal(num: u128, den: u128) -> String {
    let mut places = 0;
    let mut scale: u128 = 1;
    while !scale.is_multiple_of(den) && places < 30 {
        scale *= 10;
        places += 1;
    }
    let whole = num / den;
    let rest = num % den;
    if rest == 0 {
        return whole.to_string();
    }
    // rest < den ≤ scale, and rest · (scale / den) < scale ≤ 10³⁰: no overflow.
    let frac = format!("{:0width$}", rest * (scale / den), width = places);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Micro-units as a decimal with all six places: `1.500000`.
pub fn format_micros(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// `quantity × price / per`, in micro-units, rounded half up: one rounding per line item.
/// `per` is how many quantity units the price is for (10⁶ requests, a GB-second in KiB-ms...).
pub fn amount_micros(quantity: u64, price: Price, per: u128) -> u64 {
    let den = per * PICO_PER_MICRO;
    // quantity < 2⁶⁴ and price ≤ 10¹⁸ pico: the product stays below 2¹²⁸.
    let micros = (u128::from(quantity) * price.pico + den / 2) / den;
    u64::try_from(micros).unwrap_or(u64::MAX)
}

/// A namespace's prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// ISO 4217 code of the currency the prices are in.
    pub currency: String,
    /// Price of one million requests.
    pub per_million_requests: Price,
    /// Price of one GB-second of configured memory.
    pub per_gb_second: Price,
    /// Price of one million CPU milliseconds; `None`: CPU time is not billed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_million_cpu_ms: Option<Price>,
}

impl Default for Plan {
    /// AWS Lambda's public x86 prices (us-east-1): $0.20 per million requests and
    /// $0.0000166667 per GB-second; CPU time not billed.
    fn default() -> Self {
        Plan {
            currency: "USD".into(),
            per_million_requests: Price { pico: 200_000_000_000 },
            per_gb_second: Price { pico: 16_666_700 },
            per_million_cpu_ms: None,
        }
    }
}

/// The node's price plans: a default, and plans for namespaces that pay differently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pricing {
    /// The plan of every namespace without one of its own.
    pub default: Plan,
    /// Plans by namespace.
    pub namespaces: BTreeMap<String, Plan>,
}

/// Why a pricing file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PricingError {
    /// The file is not YAML (or JSON) of the expected shape.
    #[error("pricing: {0}")]
    Syntax(String),
    /// A field's value is wrong; `field` is its path, e.g. `namespaces.team-a.per_gb_second`.
    #[error("pricing: {field}: {message}")]
    Field {
        /// The field's path.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A price as written: text, or a whole number (both exact); a number with a fraction is
/// refused, since YAML and JSON readers turn it into a binary float before we see it.
#[derive(Debug)]
struct PriceText(Result<String, String>);

impl<'de> Deserialize<'de> for PriceText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PriceText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a price as a quoted decimal, e.g. \"0.20\"")
            }
            fn visit_str<E>(self, v: &str) -> Result<PriceText, E> {
                Ok(PriceText(Ok(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<PriceText, E> {
                Ok(PriceText(Ok(v.to_string())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<PriceText, E> {
                Ok(PriceText(if v < 0 { Err(format!("{v} is negative")) } else { Ok(v.to_string()) }))
            }
            fn visit_f64<E>(self, v: f64) -> Result<PriceText, E> {
                Ok(PriceText(Err(format!(
                    "write {v} in quotes (\"{v}\"): a bare number with a fraction is a binary float, not exact"
                ))))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    currency: Option<String>,
    per_million_requests: Option<PriceText>,
    per_gb_second: Option<PriceText>,
    per_million_cpu_ms: Option<PriceText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPricing {
    #[serde(default)]
    default: Option<RawPlan>,
    #[serde(default)]
    namespaces: BTreeMap<String, RawPlan>,
}

impl Pricing {
    /// Reads a pricing file (YAML, or JSON):
    ///
    /// ```yaml
    /// default: { currency: USD, per_million_requests: "0.20", per_gb_second: "0.0000166667" }
    /// namespaces:
    ///   team-a: { per_million_cpu_ms: "0.02" }
    /// ```
    ///
    /// A field a plan leaves out is the default plan's; a default plan's field left out is
    /// [`Plan::default`]'s.
    pub fn parse(text: &str) -> Result<Pricing, PricingError> {
        let raw: RawPricing = serde_norway::from_str(text).map_err(|e| PricingError::Syntax(e.to_string()))?;
        let default = resolve(raw.default.unwrap_or_default(), &Plan::default(), "default")?;
        let mut namespaces = BTreeMap::new();
        for (namespace, plan) in raw.namespaces {
            let path = format!("namespaces.{namespace}");
            if namespace.is_empty() || namespace.contains('/') {
                return Err(PricingError::Field { field: path, message: "not a namespace name".into() });
            }
            let plan = resolve(plan, &default, &path)?;
            namespaces.insert(namespace, plan);
        }
        Ok(Pricing { default, namespaces })
    }

    /// The plan `namespace` pays by, and whether it is its own (else the default).
    pub fn plan(&self, namespace: &str) -> (&Plan, bool) {
        match self.namespaces.get(namespace) {
            Some(plan) => (plan, true),
            None => (&self.default, false),
        }
    }
}

fn resolve(raw: RawPlan, base: &Plan, path: &str) -> Result<Plan, PricingError> {
    let field = |name: &str, message: String| PricingError::Field { field: format!("{path}.{name}"), message };
    let price = |name: &str, text: Option<PriceText>| -> Result<Option<Price>, PricingError> {
        match text {
            None => Ok(None),
            Some(PriceText(Err(message))) => Err(field(name, message)),
            Some(PriceText(Ok(text))) => Price::parse(&text).map(Some).map_err(|m| field(name, m)),
        }
    };
    let currency = match raw.currency {
        None => base.currency.clone(),
        Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => c,
        Some(c) => return Err(field("currency", format!("{c:?} is not an ISO 4217 code like \"USD\""))),
    };
    Ok(Plan {
        currency,
        per_million_requests: price("per_million_requests", raw.per_million_requests)?
            .unwrap_or(base.per_million_requests),
        per_gb_second: price("per_gb_second", raw.per_gb_second)?.unwrap_or(base.per_gb_second),
        per_million_cpu_ms: price("per_million_cpu_ms", raw.per_million_cpu_ms)?.or(base.per_million_cpu_ms),
    })
}

/// What one function used in a period, as the bill prices it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metered {
    /// Invocations that ran (not refused before running).
    pub requests: u64,
    /// Σ ceil(memory / KiB) × ceil(wall / ms) over those invocations.
    pub kib_ms: u64,
    /// Σ thread CPU time, microseconds.
    pub cpu_us: u64,
}

/// One priced quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BillLine {
    /// The namespace billed.
    pub namespace: String,
    /// The function (its id: `name`, or `namespace/name` outside the default namespace).
    pub function: String,
    /// `requests`, `gb_seconds` or `cpu_ms`.
    pub meter: String,
    /// The quantity in `unit`s, exact (`1.5`).
    pub quantity: String,
    /// `requests`, `GB-s` or `CPU-ms`.
    pub unit: String,
    /// The integer the quantity is counted in: requests, KiB-ms or CPU-µs.
    pub raw_quantity: u64,
    /// The unit of `raw_quantity`: `requests`, `KiB-ms` or `CPU-us`.
    pub raw_unit: String,
    /// The price, exact, per `price_per`.
    pub unit_price: String,
    /// What the price is for: `1M requests`, `GB-s` or `1M CPU-ms`.
    pub price_per: String,
    /// The currency of the amount.
    pub currency: String,
    /// quantity × price, rounded half up to a micro-unit.
    pub amount_micros: u64,
    /// `amount_micros` as a decimal (`0.000002`).
    pub amount: String,
}

impl Default for BillLine {
    fn default() -> Self {
        BillLine {
            namespace: String::new(),
            function: String::new(),
            meter: String::new(),
            quantity: "0".into(),
            unit: String::new(),
            raw_quantity: 0,
            raw_unit: String::new(),
            unit_price: "0".into(),
            price_per: String::new(),
            currency: String::new(),
            amount_micros: 0,
            amount: format_micros(0),
        }
    }
}

/// A namespace's total: the sum of its lines (no second rounding).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamespaceTotal {
    /// The namespace.
    pub namespace: String,
    /// `default`, or the namespace's name when it has a plan of its own.
    pub plan: String,
    /// The currency of its plan.
    pub currency: String,
    /// Σ of its lines' `amount_micros`.
    pub amount_micros: u64,
    /// `amount_micros` as a decimal.
    pub amount: String,
}

/// A bill's total in one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CurrencyTotal {
    /// ISO 4217 code.
    pub currency: String,
    /// Σ of the lines in it.
    pub amount_micros: u64,
    /// `amount_micros` as a decimal.
    pub amount: String,
}

/// What a period's usage costs: line items per namespace, function and meter, then totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bill {
    /// `YYYY-MM` (UTC).
    pub period: String,
    /// The period's first instant (inclusive), RFC 3339.
    pub from: String,
    /// The next period's first instant (exclusive), RFC 3339.
    pub to: String,
    /// How amounts are rounded.
    pub rounding: String,
    /// Line items, ordered by namespace, function, meter.
    pub lines: Vec<BillLine>,
    /// Per namespace, in order.
    pub namespaces: Vec<NamespaceTotal>,
    /// Per currency, in order.
    pub totals: Vec<CurrencyTotal>,
}

/// How every line is rounded (stated in each bill).
pub const ROUNDING: &str = "each line item's amount is rounded half up to a micro-unit; totals are sums of line items";

/// Prices metered usage: one line per meter for each `(namespace, function, usage)`, in the
/// order given, then the totals.
pub fn price(
    pricing: &Pricing,
    usage: &[(String, String, Metered)],
) -> (Vec<BillLine>, Vec<NamespaceTotal>, Vec<CurrencyTotal>) {
    let mut lines = Vec::new();
    let mut namespaces: Vec<NamespaceTotal> = Vec::new();
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for (namespace, function, m) in usage {
        let (plan, own) = pricing.plan(namespace);
        let mut meters = vec![
            (
                "requests",
                m.requests,
                decimal(m.requests.into(), 1),
                "requests",
                "requests",
                plan.per_million_requests,
                "1M requests",
                1_000_000,
            ),
            (
                "gb_seconds",
                m.kib_ms,
                decimal(m.kib_ms.into(), KIB_MS_PER_GB_S),
                "GB-s",
                "KiB-ms",
                plan.per_gb_second,
                "GB-s",
                KIB_MS_PER_GB_S,
            ),
        ];
        if let Some(cpu) = plan.per_million_cpu_ms {
            meters.push((
                "cpu_ms",
                m.cpu_us,
                decimal(m.cpu_us.into(), 1000),
                "CPU-ms",
                "CPU-us",
                cpu,
                "1M CPU-ms",
                1_000_000_000,
            ));
        }
        if namespaces.last().is_none_or(|t| &t.namespace != namespace) {
            let plan_name = if own { namespace.clone() } else { "default".into() };
            namespaces.push(NamespaceTotal {
                namespace: namespace.clone(),
                plan: plan_name,
                currency: plan.currency.clone(),
                ..Default::default()
            });
        }
        let subtotal = namespaces.last_mut().expect("pushed above");
        for (meter, raw, quantity, unit, raw_unit, unit_price, price_per, per) in meters {
            let amount = amount_micros(raw, unit_price, per);
            subtotal.amount_micros = subtotal.amount_micros.saturating_add(amount);
            let total = totals.entry(plan.currency.clone()).or_default();
            *total = total.saturating_add(amount);
            lines.push(BillLine {
                namespace: namespace.clone(),
                function: function.clone(),
                meter: meter.into(),
                quantity,
                unit: unit.into(),
                raw_quantity: raw,
                raw_unit: raw_unit.into(),
                unit_price: unit_price.to_string(),
                price_per: price_per.into(),
                currency: plan.currency.clone(),
                amount_micros: amount,
                amount: format_micros(amount),
            });
        }
    }
    for t in &mut namespaces {
        t.amount = format_micros(t.amount_micros);
    }
    let totals = totals
        .into_iter()
        .map(|(currency, amount_micros)| CurrencyTotal {
            currency,
            amount_micros,
            amount: format_micros(amount_micros),
        })
        .collect();
    (lines, namespaces, totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact() {
        assert_eq!(decimal(0, 1), "0");
        assert_eq!(decimal(1500, 1000), "1.5");
        assert_eq!(decimal(1, KIB_MS_PER_GB_S), "0.00000000095367431640625");
        assert_eq!(decimal(KIB_MS_PER_GB_S * 3, KIB_MS_PER_GB_S), "3");
        assert_eq!(format_micros(1_500_000), "1.500000");
        assert_eq!(format_micros(7), "0.000007");
    }

    #[test]
    fn amounts_round_half_up_once() {
        let p = Price::parse("0.20").unwrap();
        // 2.4 micro-units -> 2, 2.5 -> 3, 2.6 -> 3.
        assert_eq!(amount_micros(12, p, 1_000_000), 2);
        assert_eq!(amount_micros(25, Price::parse("0.1").unwrap(), 1_000_000), 3);
        assert_eq!(amount_micros(13, Price::parse("0.2").unwrap(), 1_000_000), 3);
        assert_eq!(amount_micros(u64::MAX, Price::parse("1000000").unwrap(), 1), u64::MAX);
    }
}

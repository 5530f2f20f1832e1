//! Prices and bills end to end: a node with a pricing file, invocations in two namespaces (two
//! currencies), `wisp bill -o json` against a bill recomputed here from the raw records, to
//! the micro-unit, before and after the raw records are pruned; usage queries; bad input.

use crate::harness::*;
use serde_json::Value;
use std::collections::BTreeMap;

const PRICING: &str = r#"
default:
  currency: USD
  per_million_requests: "0.20"
  per_gb_second: "0.0000166667"
  per_million_cpu_ms: "0.02"
namespaces:
  team:
    currency: EUR
    per_million_requests: "0.35"
"#;

/// Pico-units per currency unit, and a price (as the pricing file writes it) in them: the test's
/// own exact reading, independent of the ledger's.
const PICO: u128 = 1_000_000_000_000;
fn pico(price: &str) -> u128 {
    let (whole, frac) = price.split_once('.').unwrap_or((price, ""));
    whole.parse::<u128>().unwrap() * PICO + format!("{frac:0<12}").parse::<u128>().unwrap()
}

/// quantity × price / per, in micro-units, rounded half up.
fn micros(quantity: u128, price: u128, per: u128) -> u64 {
    let den = per * 1_000_000;
    ((quantity * price + den / 2) / den) as u64
}

/// `YYYY-MM` of a Unix time in ms (UTC), by counting days (Hinnant's civil_from_days).
fn month_of(ms: u64) -> String {
    let z = (ms / 86_400_000) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!("{:04}-{m:02}", yoe + era * 400 + i64::from(m <= 2))
}

/// `(namespace, function, meter)`.
type Line = (String, String, String);

/// Line items as `(raw quantity, amount_micros)` and totals by currency, from raw records.
fn recompute(records: &[Value], period: &str) -> (BTreeMap<Line, (u64, u64)>, BTreeMap<String, u64>) {
    let mut used: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
    for r in records.iter().filter(|r| month_of(r["start_ms"].as_u64().unwrap()) == period) {
        let key = (r["namespace"].as_str().unwrap().to_string(), r["function"].as_str().unwrap().to_string());
        let u = used.entry(key).or_default();
        u.2 += r["cpu_us"].as_u64().unwrap();
        if r["outcome"] != "rejected" {
            let ms = r["wall_us"].as_u64().unwrap().div_ceil(1000);
            u.0 += 1;
            u.1 += ms * r["memory_bytes"].as_u64().unwrap().div_ceil(1024);
        }
    }
    let mut lines = BTreeMap::new();
    let mut totals = BTreeMap::new();
    for ((namespace, function), (requests, kib_ms, cpu_us)) in used {
        let (currency, per_request) = if namespace == "team" { ("EUR", "0.35") } else { ("USD", "0.20") };
        let priced = [
            ("requests", requests, micros(requests.into(), pico(per_request), 1_000_000)),
            ("gb_seconds", kib_ms, micros(kib_ms.into(), pico("0.0000166667"), 1024 * 1024 * 1000)),
            ("cpu_ms", cpu_us, micros(cpu_us.into(), pico("0.02"), 1_000_000_000)),
        ];
        for (meter, raw, amount) in priced {
            lines.insert((namespace.clone(), function.clone(), meter.to_string()), (raw, amount));
            *totals.entry(currency.to_string()).or_default() += amount;
        }
    }
    (lines, totals)
}

fn bill_json(node: &Node, period: &str) -> Value {
    let out = node.cli(wisp_bin()).args(["-o", "json", "bill", "--period", period]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_bill_matches(bill: &Value, records: &[Value], period: &str) {
    let (lines, totals) = recompute(records, period);
    let got: BTreeMap<_, _> = bill["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let key = (
                l["namespace"].as_str().unwrap().into(),
                l["function"].as_str().unwrap().into(),
                l["meter"].as_str().unwrap().into(),
            );
            (key, (l["raw_quantity"].as_u64().unwrap(), l["amount_micros"].as_u64().unwrap()))
        })
        .collect();
    assert_eq!(got, lines, "line items: raw quantities and amounts to the micro-unit");
    let got: BTreeMap<String, u64> = bill["totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["currency"].as_str().unwrap().into(), t["amount_micros"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, totals);
}

#[test]
fn bills_equal_a_recomputation_from_raw_records_before_and_after_pruning() {
    let dir = tempdir();
    let pricing = dir.path().join("pricing.yaml");
    std::fs::write(&pricing, PRICING).unwrap();
    let pricing = pricing.to_str().unwrap();
    let node = Node::start(&dir.path().join("data"), &["--pricing", pricing]);
    node.deploy("hello", "hello", "memory=100Mi");
    let resp = node.post("/v1/functions/api?namespace=team&memory=64Mi", &wasm("hello"));
    assert_eq!(resp.status, 201, "{}", resp.body);
    node.deploy("bad", "misbehave", "");
    for i in 0..30 {
        assert_eq!(node.get("/fn/hello").status, 200);
        if i % 2 == 0 {
            assert_eq!(node.get("/fn/team/api").status, 200);
        }
        if i % 10 == 0 {
            node.get("/fn/bad?mode=trap");
        }
    }

    let usage = node.get("/v1/usage?limit=10000").json();
    let records = usage["records"].as_array().unwrap().clone();
    assert_eq!(records.len(), 30 + 15 + 3);
    // CPU time is metered per invocation, from the thread CPU clock.
    let cpu: u64 = records.iter().map(|r| r["cpu_us"].as_u64().unwrap()).sum();
    assert!(cpu > 0, "no CPU time metered: {records:?}");
    assert!(records.iter().all(|r| r["memory_bytes"].as_u64().unwrap() > 0));
    let team: Vec<_> = records.iter().filter(|r| r["namespace"] == "team").collect();
    assert_eq!(team.len(), 15);
    assert!(team.iter().all(|r| r["function"] == "team/api" && r["memory_bytes"] == 64u64 << 20));

    let mut periods: Vec<String> = records.iter().map(|r| month_of(r["start_ms"].as_u64().unwrap())).collect();
    periods.dedup();
    let bills: Vec<Value> = periods.iter().map(|p| bill_json(&node, p)).collect();
    for (bill, period) in bills.iter().zip(&periods) {
        assert_bill_matches(bill, &records, period);
        assert_eq!(
            bill["namespaces"].as_array().unwrap().iter().find(|n| n["namespace"] == "team").unwrap()["plan"],
            "team"
        );
    }
    // One namespace only.
    let team_bill = node.get(&format!("/v1/bill?period={}&namespace=team", periods[0])).json();
    assert!(team_bill["lines"].as_array().unwrap().iter().all(|l| l["namespace"] == "team" && l["currency"] == "EUR"));

    // Grouped usage equals the summary's totals.
    let by_day = node.get("/v1/usage?by=day&limit=0").json();
    let day_total: u64 = by_day["series"].as_array().unwrap().iter().map(|b| b["invocations"].as_u64().unwrap()).sum();
    assert_eq!(day_total, 48);
    let by_fn = node.get("/v1/usage?by=function&namespace=team&limit=0").json();
    assert_eq!(by_fn["series"].as_array().unwrap().len(), 1);
    assert_eq!(by_fn["series"][0]["function"], "team/api");
    assert_eq!(by_fn["series"][0]["invocations"], 15);
    // A range that ends before any usage has none.
    let empty = node.get("/v1/usage?from=2020-01-01&to=2020-02-01T00:00:00Z&by=hour").json();
    assert!(empty["summary"].as_array().unwrap().is_empty(), "{empty}");
    node.stop();

    // A tiny retention: every raw record goes, every total and bill stays.
    let node = Node::start(&dir.path().join("data"), &["--pricing", pricing, "--usage-retention", "1ms"]);
    let pruned = node.post("/v1/usage/prune", b"").json();
    assert!(pruned["pruned"].as_u64().is_some(), "{pruned}");
    let after = node.get("/v1/usage?limit=10000").json();
    assert!(after["records"].as_array().unwrap().is_empty(), "raw records pruned: {after}");
    assert_eq!(after["summary"], usage["summary"], "totals unchanged by pruning");
    for (bill, period) in bills.iter().zip(&periods) {
        let again = bill_json(&node, period);
        assert_eq!(&again, bill, "the bill is unchanged by pruning");
        assert_bill_matches(&again, &records, period);
    }
    node.stop();
}

#[test]
fn bad_pricing_periods_and_ranges_are_refused_naming_the_field() {
    let dir = tempdir();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "default:\n  per_gb_second: 0.0000166667\n").unwrap();
    let out = std::process::Command::new(wisp_bin())
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--pricing")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("default.per_gb_second") && stderr.contains("quotes"), "{stderr}");

    let node = Node::start(&dir.path().join("data"), &[]);
    let plans = node.get("/v1/plans").json();
    assert_eq!(plans["default"]["per_gb_second"], "0.0000166667", "{plans}");
    assert_eq!(plans["default"]["currency"], "USD");
    for (path, field) in [
        ("/v1/bill", "period: missing"),
        ("/v1/bill?period=2026-13", "period: \"2026-13\""),
        ("/v1/usage?from=yesterday", "from: \"yesterday\""),
        ("/v1/usage?by=week", "by: \"week\""),
        ("/v1/usage?from=2026-02-01&to=2026-01-01", "from: must be before to"),
        ("/v1/usage?namespace=team&function=other/api", "function: \"other/api\""),
    ] {
        let resp = node.get(path);
        assert_eq!(resp.status, 400, "{path}: {}", resp.body);
        assert!(resp.error().contains(field), "{path}: {}", resp.body);
    }
    let out = node.cli(wisp_bin()).args(["bill", "--period", "2026-1"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("period"), "{}", String::from_utf8_lossy(&out.stderr));
    // An empty month bills nothing, in the table too.
    let out = node.cli(wisp_bin()).args(["bill", "--period", "2001-01"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no usage"));
    node.stop();
}

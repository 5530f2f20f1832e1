//! Billing in the ledger: migration of older rows into the v5 rollups, pruning that changes no
//! total or bill (and respects the exporter's cursor), usage by hour, day and function within
//! a range, bills priced exactly, and pricing files read exactly or refused naming the field.

use super::*;
use std::time::Duration;
use wisp_ledger::{GroupBy, Period, Pricing, PricingError};

fn config(retention: Option<Duration>, pricing: Pricing) -> LedgerConfig {
    // A long interval: only the start-up round and explicit prunes run during a test.
    LedgerConfig { retention, prune_interval: Duration::from_secs(3600), pricing, ..LedgerConfig::default() }
}

#[tokio::test]
async fn older_ledger_rows_migrate_with_their_namespace_and_totals() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let old: Vec<_> = (0..12u64)
        .map(|n| {
            let function = ["hello", "team/api", "team/worker"][n as usize % 3];
            let mut r = record(function, Source::Http, T0 + n * HOUR_MS / 3, Outcome::Ok, n);
            (r.memory_bytes, r.cpu_us) = (0, 0);
            r
        })
        .collect();
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(LEDGER_V2_SCHEMA).unwrap();
        for r in &old {
            conn.execute(
                "INSERT INTO usage (function, revision, source, start_ms, wall_us, cold, peak_memory_bytes, outcome,
                                    request_bytes, response_bytes, status)
                 VALUES (?1, ?2, 'http', ?3, ?4, ?5, ?6, 'ok', ?7, ?8, 200)",
                rusqlite::params![
                    &*r.function,
                    r.revision,
                    r.start_ms,
                    r.wall_us,
                    r.cold,
                    r.peak_memory_bytes,
                    r.request_bytes,
                    r.response_bytes
                ],
            )
            .unwrap();
        }
        conn.execute(LEDGER_V2_ROLLUP, []).unwrap();
    }
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let report = ledger.report(all(100)).await.unwrap();
    assert_eq!(report.summary, expected_summary(&old));
    assert_eq!(report.summary.iter().map(|s| s.namespace.as_str()).collect::<Vec<_>>(), ["default", "team", "team"]);
    assert!(report.records.iter().all(|r| r.namespace == if r.function == "hello" { "default" } else { "team" }));
    // The namespace filter reads the migrated rollups.
    let team = ledger.report(UsageQuery { namespace: Some("team".into()), ..all(100) }).await.unwrap();
    assert_eq!(team.summary.iter().map(|s| s.invocations).sum::<u64>(), 8);
    assert_eq!(team.records.len(), 8);
    ledger.close().await;
}

/// Records over three days in two namespaces, with memory and CPU time.
fn spread(n: u64) -> Vec<UsageRecord> {
    (0..n)
        .map(|i| {
            let function = ["hello", "team/api"][i as usize % 2];
            let outcome = if i % 11 == 0 { Outcome::Rejected } else { Outcome::Ok };
            let mut r = record(function, Source::Http, T0 + i * (72 * HOUR_MS / n), outcome, i);
            r.wall_us = 900 + i * 137 % 5000;
            r.outbound_bytes = i % 4;
            r
        })
        .collect()
}

#[tokio::test]
async fn pruning_keeps_every_total_series_and_bill_and_waits_for_the_exporter() {
    let dir = tempfile::tempdir().unwrap();
    let pricing =
        Pricing::parse("default: { per_million_cpu_ms: \"0.02\" }\nnamespaces: { team: { per_gb_second: \"0.5\" } }")
            .unwrap();
    // T0 is long past: a day's retention prunes every record.
    let ledger = Ledger::open(dir.path(), config(Some(Duration::from_secs(86_400)), pricing)).unwrap();
    let sent = spread(300);
    for r in &sent {
        ledger.record(r.clone()).await;
    }
    ledger.flush().await;
    let period = Period::parse("2025-11").unwrap();
    let queries = [GroupBy::Hour, GroupBy::Day, GroupBy::Function].map(|by| UsageQuery { by: Some(by), ..all(0) });
    let mut before = Vec::new();
    for q in &queries {
        before.push(ledger.report(q.clone()).await.unwrap());
    }
    let bill = ledger.bill(period, None).await.unwrap();
    assert_eq!(before[0].summary, expected_summary(&sent));
    assert_eq!(before[0].series.len(), 72);
    // T0 is 03:00: 72 hours touch four calendar days.
    assert_eq!(before[1].series.len(), 4);

    // The exporter has sent rows up to id 100: only those may go.
    let db = dir.path().join("ledger.db");
    let set_cursor = |v: &str| {
        let conn = Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('usage_export_cursor', ?1)", [v]).unwrap();
    };
    set_cursor("100");
    assert_eq!(ledger.prune().await, 100);
    assert_eq!(ledger.report(all(1000)).await.unwrap().records.len(), 200);
    set_cursor("300");
    assert_eq!(ledger.prune().await, 200);
    assert_eq!(ledger.prune().await, 0);
    assert!(ledger.report(all(1000)).await.unwrap().records.is_empty());

    for (q, was) in queries.iter().zip(&before) {
        assert_eq!(&ledger.report(q.clone()).await.unwrap(), was, "{q:?}");
    }
    assert_eq!(ledger.bill(period, None).await.unwrap(), bill);
    // New records after a prune roll up on top of the kept totals.
    let late = record("hello", Source::Http, T0, Outcome::Ok, 999);
    ledger.record(late.clone()).await;
    ledger.flush().await;
    let mut all_sent = sent.clone();
    all_sent.push(late);
    assert_eq!(ledger.report(all(0)).await.unwrap().summary, expected_summary(&all_sent));
    ledger.close().await;
}

#[tokio::test]
async fn usage_by_hour_day_and_function_within_a_range() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let sent = spread(144);
    for r in &sent {
        ledger.record(r.clone()).await;
    }
    ledger.flush().await;
    // From 30 minutes into the second hour (rounded down to it) to the start of the fifth.
    let from = T0 + HOUR_MS + HOUR_MS / 2;
    let to = T0 + 4 * HOUR_MS;
    let in_range: Vec<_> = sent.iter().filter(|r| r.start_ms >= T0 + HOUR_MS && r.start_ms < to).cloned().collect();
    let q = |by| UsageQuery { from_ms: Some(from), to_ms: Some(to), by: Some(by), ..all(1000) };
    let hours = ledger.report(q(GroupBy::Hour)).await.unwrap();
    assert_eq!(hours.from.as_deref(), Some("2025-11-22T04:00:00Z"));
    assert_eq!(hours.to.as_deref(), Some("2025-11-22T07:00:00Z"));
    assert_eq!(hours.summary, expected_summary(&in_range));
    assert_eq!(hours.records.len(), in_range.len());
    let starts: Vec<_> = hours.series.iter().map(|b| b.start_ms.unwrap()).collect();
    assert_eq!(starts, [T0 + HOUR_MS, T0 + 2 * HOUR_MS, T0 + 3 * HOUR_MS]);
    for b in &hours.series {
        let n = in_range.iter().filter(|r| r.start_ms / HOUR_MS * HOUR_MS == b.start_ms.unwrap()).count();
        assert_eq!(b.invocations, n as u64);
    }
    let days = ledger.report(q(GroupBy::Day)).await.unwrap();
    assert_eq!(days.series.len(), 1);
    assert_eq!(days.series[0].start.as_deref(), Some("2025-11-22T00:00:00Z"));
    assert_eq!(days.series[0].invocations, in_range.len() as u64);
    let functions = ledger.report(q(GroupBy::Function)).await.unwrap();
    let got: Vec<_> = functions.series.iter().map(|b| (b.namespace.clone().unwrap(), b.billed_kib_ms)).collect();
    let summary = expected_summary(&in_range);
    let want: Vec<_> = summary.iter().map(|s| (s.namespace.clone(), s.billed_kib_ms)).collect();
    assert_eq!(got, want);
    ledger.close().await;
}

#[tokio::test]
async fn bills_price_each_line_exactly_and_round_once() {
    let dir = tempfile::tempdir().unwrap();
    let pricing = Pricing::parse(
        r#"
default: { currency: USD, per_million_requests: "0.3", per_gb_second: "1000", per_million_cpu_ms: "0.02" }
namespaces: { team: { currency: EUR, per_million_requests: "1" } }
"#,
    )
    .unwrap();
    let ledger = Ledger::open(dir.path(), config(None, pricing)).unwrap();
    // 3 invocations of 1.5 ms (billed 2 ms each) at 128 MiB: 786,432 KiB-ms = 0.00075 GB-s.
    for (i, function) in ["hello", "hello", "hello", "team/api"].iter().enumerate() {
        let mut r = record(function, Source::Http, T0 + i as u64, Outcome::Ok, 0);
        (r.wall_us, r.cpu_us) = (1500, 1250);
        ledger.record(r).await;
    }
    // Refused before running: metered, not billed; and outside the period: not in this bill.
    let mut refused = record("hello", Source::Http, T0, Outcome::Rejected, 7);
    refused.cpu_us = 0;
    ledger.record(refused).await;
    ledger.record(record("hello", Source::Http, T0 + 40 * 24 * HOUR_MS, Outcome::Ok, 8)).await;
    ledger.flush().await;
    let bill = ledger.bill(Period::parse("2025-11").unwrap(), None).await.unwrap();
    let lines: Vec<_> = bill
        .lines
        .iter()
        .map(|l| (l.function.as_str(), l.meter.as_str(), l.quantity.as_str(), l.raw_quantity, l.amount_micros))
        .collect();
    assert_eq!(
        lines,
        [
            // 3 × 0.3 / 1M = 0.0000009 -> 1 micro-unit (half up).
            ("hello", "requests", "3", 3, 1),
            ("hello", "gb_seconds", "0.00075", 786_432, 750_000),
            // 3.75 CPU-ms × 0.02 / 1M = 0.000000075 -> 0.
            ("hello", "cpu_ms", "3.75", 3750, 0),
            ("team/api", "requests", "1", 1, 1),
            ("team/api", "gb_seconds", "0.00025", 262_144, 250_000),
            ("team/api", "cpu_ms", "1.25", 1250, 0),
        ]
    );
    assert_eq!(bill.lines[1].amount, "0.750000");
    assert_eq!(bill.lines[3].currency, "EUR");
    let totals: Vec<_> = bill.totals.iter().map(|t| (t.currency.as_str(), t.amount_micros)).collect();
    assert_eq!(totals, [("EUR", 250_001), ("USD", 750_001)]);
    let team = ledger.bill(Period::parse("2025-11").unwrap(), Some("team".into())).await.unwrap();
    assert_eq!(team.lines.len(), 3);
    assert_eq!(team.namespaces[0].plan, "team");
    ledger.close().await;
}

#[test]
fn pricing_files_are_read_exactly_or_refused_naming_the_field() {
    let p = Pricing::parse(
        "default:\n  currency: USD\n  per_million_requests: \"0.20\"\n  per_gb_second: \"0.0000166667\"\nnamespaces:\n  team:\n    per_million_cpu_ms: \"0.02\"\n",
    )
    .unwrap();
    assert_eq!(p.default.per_gb_second.pico(), 16_666_700);
    assert_eq!(p.default.per_million_requests.to_string(), "0.2");
    assert_eq!(p.default.per_million_cpu_ms, None);
    // A namespace's plan takes the default's fields it leaves out.
    let (team, own) = p.plan("team");
    assert!(own);
    assert_eq!((team.currency.as_str(), team.per_gb_second), ("USD", p.default.per_gb_second));
    assert_eq!(team.per_million_cpu_ms.unwrap().pico(), 20_000_000_000);
    assert_eq!(p.plan("other"), (&p.default, false));
    // JSON is YAML too, and whole numbers are exact.
    assert_eq!(
        Pricing::parse(r#"{"default": {"per_gb_second": 2}}"#).unwrap().default.per_gb_second.pico(),
        2_000_000_000_000
    );
    assert_eq!(Pricing::parse("").unwrap(), Pricing::default());

    let field = |text: &str| match Pricing::parse(text) {
        Err(PricingError::Field { field, message }) => format!("{field}: {message}"),
        other => panic!("{text}: {other:?}"),
    };
    assert!(
        field("default: { per_gb_second: 0.0000166667 }")
            .starts_with("default.per_gb_second: write 0.0000166667 in quotes")
    );
    assert!(field("default: { per_gb_second: \"0.0000000000001\" }").contains("more than 12 decimal places"));
    assert!(
        field("namespaces: { t: { per_million_requests: \"-1\" } }").starts_with("namespaces.t.per_million_requests:")
    );
    assert!(field("namespaces: { t: { per_million_requests: -1 } }").contains("negative"));
    assert!(field("default: { per_gb_second: \"1e-5\" }").contains("not a decimal number"));
    assert!(field("default: { per_gb_second: \"2000000\" }").contains("above 1000000"));
    assert!(field("default: { currency: usd }").starts_with("default.currency:"));
    assert!(field("namespaces: { \"a/b\": {} }").starts_with("namespaces.a/b: not a namespace"));
    assert!(
        matches!(Pricing::parse("default: { per_request: \"1\" }"), Err(PricingError::Syntax(m)) if m.contains("per_request"))
    );
}

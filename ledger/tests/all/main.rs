//! `wisp-ledger` against real SQLite files in a temp dir and its real writer thread. No test
//! asserts on timing; where one must wait for the writer to reach a state (a failed write) it
//! polls for that state.

mod billing;

use rusqlite::Connection;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use wisp_ledger::{
    Durability, Ledger, LedgerConfig, Outcome, ReplicaUsage, Runtime, Source, StoredUsage, UsageQuery, UsageRecord,
    UsageReport, UsageSummary,
};

const HOUR_MS: u64 = 3_600_000;
/// 2025-11-22 03:00:00 UTC, an hour boundary.
const T0: u64 = 1_763_780_400_000;

/// The `usage` table as release 921004f created it in `wisp.db` (scheduler/src/store.rs),
/// with the registry's tables beside it.
const LEGACY_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY,
    revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS revisions (
    function TEXT NOT NULL,
    revision INTEGER NOT NULL,
    component_hash TEXT NOT NULL,
    component_bytes INTEGER NOT NULL,
    settings TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (function, revision)
);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    function TEXT NOT NULL,
    revision INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    wall_us INTEGER NOT NULL,
    cold INTEGER NOT NULL,
    peak_memory_bytes INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    request_bytes INTEGER NOT NULL,
    response_bytes INTEGER NOT NULL,
    status INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_function ON usage (function, id);
";

fn record(function: &str, source: Source, start_ms: u64, outcome: Outcome, n: u64) -> UsageRecord {
    UsageRecord {
        function: Arc::from(function),
        revision: 1 + n % 2,
        source,
        start_ms,
        wall_us: 50 + n,
        cold: n.is_multiple_of(5),
        peak_memory_bytes: 1_114_112 + (n % 7) * 65_536,
        outcome,
        request_bytes: n % 3,
        response_bytes: 17 + n % 11,
        status: if outcome == Outcome::Ok { 200 } else { 0 },
        trigger: None,
        event_id: None,
        runtime: Runtime::Wasm,
        memory_bytes: 128 << 20,
        cpu_us: 40 + n % 13,
        outbound_bytes: 0,
    }
}

fn replica(function: &str, replica: &str, start_ms: u64, end_ms: u64) -> ReplicaUsage {
    let cpu_ms = end_ms.saturating_sub(start_ms) / 10;
    ReplicaUsage { function: Arc::from(function), revision: 1, replica: Arc::from(replica), start_ms, end_ms, cpu_ms }
}

/// The summary computed the slow way, from the records themselves.
fn expected_summary(records: &[UsageRecord]) -> Vec<UsageSummary> {
    let mut by_function: BTreeMap<String, UsageSummary> = BTreeMap::new();
    for r in records {
        let s = by_function.entry(r.function.to_string()).or_insert_with(|| UsageSummary {
            function: r.function.to_string(),
            namespace: r.function.split_once('/').map_or("default", |(ns, _)| ns).to_string(),
            ..UsageSummary::default()
        });
        s.invocations += 1;
        // Billing's sums, recomputed per record: only refused invocations are not billed;
        // wall time rounds up to the ms, configured memory up to the KiB.
        if r.outcome != Outcome::Rejected {
            let ms = r.wall_us.div_ceil(1000);
            s.billed_requests += 1;
            s.billed_ms += ms;
            s.billed_kib_ms += ms * r.memory_bytes.div_ceil(1024);
        }
        s.cpu_us += r.cpu_us;
        s.outbound_bytes += r.outbound_bytes;
        s.cold_starts += u64::from(r.cold);
        if r.outcome == Outcome::Ok {
            s.ok += 1;
        } else {
            s.failed += 1;
        }
        s.wall_us_total += r.wall_us;
        s.request_bytes += r.request_bytes;
        s.response_bytes += r.response_bytes;
        s.peak_memory_bytes_max = s.peak_memory_bytes_max.max(r.peak_memory_bytes);
        *s.by_source.entry(r.source.as_str().to_string()).or_default() += 1;
        *s.by_runtime.entry(r.runtime.as_str().to_string()).or_default() += 1;
    }
    by_function.into_values().collect()
}

fn all(limit: u32) -> UsageQuery {
    UsageQuery { function: None, limit, ..UsageQuery::default() }
}

fn count(db: &Path, sql: &str) -> u64 {
    Connection::open(db).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
}

fn has_usage_table(db: &Path) -> bool {
    count(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'usage'") == 1
}

/// A `wisp.db` as release 921004f left it, with `rows` usage rows (ids 1..=rows).
fn legacy_db(dir: &Path, rows: u64) -> Vec<UsageRecord> {
    let conn = Connection::open(dir.join("wisp.db")).unwrap();
    conn.execute_batch(LEGACY_SCHEMA).unwrap();
    conn.execute("INSERT OR IGNORE INTO functions (name, revision) VALUES ('hello', 2)", []).unwrap();
    let outcomes = [Outcome::Ok, Outcome::Ok, Outcome::Trap, Outcome::Timeout];
    let mut records = Vec::new();
    for n in 0..rows {
        let function = if n.is_multiple_of(3) { "echo" } else { "hello" };
        let mut r = record(function, Source::Http, T0 + n * 1_000_000, outcomes[n as usize % 4], n);
        // That release metered neither configured memory nor CPU time.
        (r.memory_bytes, r.cpu_us) = (0, 0);
        conn.execute(
            "INSERT INTO usage (function, revision, start_ms, wall_us, cold, peak_memory_bytes, outcome,
                                request_bytes, response_bytes, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params![
                &*r.function,
                r.revision,
                r.start_ms,
                r.wall_us,
                r.cold,
                r.peak_memory_bytes,
                r.outcome.as_str(),
                r.request_bytes,
                r.response_bytes,
                r.status
            ],
        )
        .unwrap();
        records.push(r);
    }
    records
}

/// Waits until the writer has seen at least one failed write (it is then retrying).
async fn until_write_error(ledger: &Ledger) {
    for _ in 0..12_000 {
        if ledger.stats().write_errors_total > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the writer never reported a failed write");
}

/// Holds the write lock on ledger.db from another connection, as a stuck writer would.
fn lock(db: &Path) -> Connection {
    let conn = Connection::open(db).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    conn
}

fn impatient() -> LedgerConfig {
    LedgerConfig { busy_timeout: Duration::from_millis(50), ..LedgerConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_ledger_reports_exact_totals_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let sources = [Source::Http, Source::Http, Source::Kafka, Source::Async];
    let mut sent = Vec::new();
    for n in 0..300u64 {
        let function = if n % 4 == 3 { "echo" } else { "hello" };
        let outcome = if n.is_multiple_of(10) { Outcome::Error } else { Outcome::Ok };
        let r = record(function, sources[n as usize % 4], T0 + n, outcome, n);
        ledger.record(r.clone()).await;
        sent.push(r);
    }
    ledger.close().await;
    assert_eq!(ledger.stats().written_total, 300);
    drop(ledger);

    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let report = ledger.report(all(10)).await.unwrap();
    assert_eq!(report.summary, expected_summary(&sent));
    let hello = &report.summary[1];
    assert_eq!((hello.function.as_str(), hello.invocations), ("hello", 225));
    assert_eq!(hello.by_source, BTreeMap::from([("http".to_string(), 150), ("kafka".to_string(), 75)]));
    assert_eq!(report.summary[0].by_source, BTreeMap::from([("async".to_string(), 75)]));

    // Newest first, the limit honoured, each record as sent.
    assert_eq!(report.records.len(), 10);
    assert!(report.records.windows(2).all(|w| w[0].id > w[1].id));
    for (stored, sent) in report.records.iter().zip(sent.iter().rev()) {
        assert_eq!(stored.function, &*sent.function);
        assert_eq!(
            (stored.start_ms, stored.wall_us, stored.source, stored.outcome),
            (sent.start_ms, sent.wall_us, sent.source, sent.outcome)
        );
        assert_eq!((stored.revision, stored.cold, stored.status), (sent.revision, sent.cold, sent.status));
        assert_eq!((stored.request_bytes, stored.response_bytes), (sent.request_bytes, sent.response_bytes));
        assert_eq!(stored.peak_memory_bytes, sent.peak_memory_bytes);
    }

    let echo = ledger
        .report(UsageQuery { function: Some("echo".into()), limit: 1000, ..UsageQuery::default() })
        .await
        .unwrap();
    assert_eq!(echo.summary.len(), 1);
    assert_eq!(echo.summary[0].invocations, 75);
    assert_eq!(echo.records.len(), 75);
    assert!(echo.records.iter().all(|r| r.function == "echo"));
    assert!(echo.records.windows(2).all(|w| w[0].id > w[1].id));

    let totals_only = ledger.report(all(0)).await.unwrap();
    assert!(totals_only.records.is_empty());
    assert_eq!(totals_only.summary, report.summary);
    let none =
        ledger.report(UsageQuery { function: Some("nope".into()), limit: 5, ..UsageQuery::default() }).await.unwrap();
    assert_eq!(none, UsageReport::default());
    assert_eq!(ledger.stats().dropped_total, 0);
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_equals_brute_force_over_raw_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let functions = ["alpha", "beta", "gamma"];
    let mut sent = Vec::new();
    // Several batches (each flush ends one), each spanning two hours, so rollup rows are
    // created in one batch and added to in later ones.
    for batch in 0..5u64 {
        for n in 0..400u64 {
            let i = batch * 400 + n;
            let start = T0 + (i % 2) * HOUR_MS + i * 37 % (HOUR_MS / 2);
            let mut r =
                record(functions[i as usize % 3], Source::ALL[i as usize % 4], start, Outcome::ALL[i as usize % 7], i);
            r.runtime = Runtime::ALL[i as usize % 5 % 2];
            ledger.record(r.clone()).await;
            sent.push(r);
        }
        ledger.flush().await;
    }
    let report = ledger.report(all(0)).await.unwrap();
    assert_eq!(report.summary, expected_summary(&sent));

    // The rollups equal a GROUP BY over the raw rows, hour by hour.
    let db = dir.path().join("ledger.db");
    let conn = Connection::open(&db).unwrap();
    let rows = |sql: &str| -> Vec<Vec<i64>> {
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| (0..n).map(|i| r.get::<_, i64>(i)).collect()).unwrap().map(Result::unwrap).collect()
    };
    let rollups = rows(
        "SELECT hour_ms, unicode(function), revision, unicode(source), unicode(runtime), invocations, cold_starts, ok,
                failed, wall_us, request_bytes, response_bytes, peak_memory_bytes_max, billed_requests, billed_ms,
                billed_kib_ms, cpu_us, outbound_bytes
         FROM usage_hourly_v3 ORDER BY 1, 2, 3, 4, 5",
    );
    let brute = rows(
        "SELECT start_ms / 3600000 * 3600000, unicode(function), revision, unicode(source), unicode(runtime), COUNT(*),
                SUM(cold), SUM(outcome = 'ok'), SUM(outcome != 'ok'), SUM(wall_us), SUM(request_bytes),
                SUM(response_bytes), MAX(peak_memory_bytes), SUM(outcome != 'rejected'),
                SUM(IIF(outcome != 'rejected', (wall_us + 999) / 1000, 0)),
                SUM(IIF(outcome != 'rejected', (wall_us + 999) / 1000 * ((memory_bytes + 1023) / 1024), 0)),
                SUM(cpu_us), SUM(outbound_bytes)
         FROM usage GROUP BY 1, function, 3, source, runtime ORDER BY 1, 2, 3, 4, 5",
    );
    assert_eq!(rollups, brute);
    assert_eq!(rollups.iter().map(|r| r[0]).collect::<std::collections::BTreeSet<_>>().len(), 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM usage"), 2000);
    ledger.close().await;
}

#[tokio::test]
async fn legacy_usage_table_is_imported_once_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = legacy_db(dir.path(), 12);
    let wisp_db = dir.path().join("wisp.db");

    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let report = ledger.report(all(100)).await.unwrap();
    assert_eq!(report.summary, expected_summary(&legacy));
    assert_eq!(report.records.iter().map(|r| r.id).collect::<Vec<_>>(), (1..=12).rev().collect::<Vec<_>>());
    assert!(report.records.iter().all(|r| r.source == Source::Http));
    assert_eq!(report.records[0].start_ms, legacy[11].start_ms);
    assert!(!has_usage_table(&wisp_db));
    // The registry's tables are untouched.
    assert_eq!(count(&wisp_db, "SELECT COUNT(*) FROM functions"), 1);
    assert_eq!(count(&dir.path().join("ledger.db"), "SELECT COUNT(*) FROM meta WHERE key = 'legacy_import'"), 1);

    // New records get ids after the imported ones.
    ledger.record(record("hello", Source::Kafka, T0, Outcome::Ok, 99)).await;
    ledger.close().await;
    drop(ledger);

    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let again = ledger.report(all(100)).await.unwrap();
    assert_eq!(again.records.len(), 13);
    assert_eq!(again.records[0].id, 13);
    assert_eq!(again.records[0].source, Source::Kafka);
    let mut all_sent = legacy.clone();
    all_sent.push(record("hello", Source::Kafka, T0, Outcome::Ok, 99));
    assert_eq!(again.summary, expected_summary(&all_sent));
    ledger.close().await;
}

#[tokio::test]
async fn crash_between_import_and_drop_neither_loses_nor_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = legacy_db(dir.path(), 8);
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    ledger.close().await;
    drop(ledger);

    // As if the node died after the import committed but before the old table was dropped.
    let again = legacy_db(dir.path(), 8);
    assert_eq!(again.len(), legacy.len());
    assert!(has_usage_table(&dir.path().join("wisp.db")));

    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let report = ledger.report(all(100)).await.unwrap();
    assert_eq!(report.records.len(), 8);
    assert_eq!(report.summary, expected_summary(&legacy));
    assert!(!has_usage_table(&dir.path().join("wisp.db")));
    ledger.close().await;
}

#[tokio::test]
async fn legacy_drop_blocked_by_the_registry_is_retried_at_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = legacy_db(dir.path(), 6);
    let wisp_db = dir.path().join("wisp.db");
    // The registry keeps wisp.db in WAL mode and is writing (a deploy) while the node starts.
    let registry = Connection::open(&wisp_db).unwrap();
    registry.pragma_update(None, "journal_mode", "WAL").unwrap();
    registry.execute_batch("BEGIN IMMEDIATE").unwrap();

    // The copy only reads wisp.db, so it goes through; the drop times out and is left for later.
    let ledger = Ledger::open(dir.path(), impatient()).unwrap();
    assert_eq!(ledger.report(all(100)).await.unwrap().summary, expected_summary(&legacy));
    ledger.close().await;
    drop(ledger);
    registry.execute_batch("COMMIT").unwrap();
    assert!(has_usage_table(&wisp_db));

    let ledger = Ledger::open(dir.path(), impatient()).unwrap();
    let report = ledger.report(all(100)).await.unwrap();
    assert_eq!(report.records.len(), 6);
    assert_eq!(report.summary, expected_summary(&legacy));
    assert!(!has_usage_table(&wisp_db));
    ledger.close().await;
}

#[tokio::test]
async fn legacy_rows_whose_ids_are_taken_are_appended() {
    let dir = tempfile::tempdir().unwrap();
    // A ledger that already has records, then a wisp.db with a usage table it never imported
    // (an older binary ran on this data dir in between).
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let mine: Vec<_> = (0..5).map(|n| record("mine", Source::Async, T0 + n, Outcome::Ok, n)).collect();
    for r in &mine {
        ledger.record(r.clone()).await;
    }
    ledger.close().await;
    drop(ledger);
    let legacy = legacy_db(dir.path(), 3);

    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let report = ledger.report(all(100)).await.unwrap();
    assert_eq!(report.records.iter().map(|r| r.id).collect::<Vec<_>>(), (1..=8).rev().collect::<Vec<_>>());
    assert_eq!(report.records[0].start_ms, legacy[2].start_ms);
    assert_eq!(report.summary, expected_summary(&[mine, legacy].concat()));
    ledger.close().await;
}

#[tokio::test]
async fn data_dir_of_release_921004f_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    // The one fixture of that release, shared with the cli upgrade test.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/tests/fixtures/data-921004f/wisp.db");
    std::fs::copy(fixture, dir.path().join("wisp.db")).unwrap();

    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let report = ledger.report(all(10)).await.unwrap();
    let totals: Vec<_> = report.summary.iter().map(|s| (s.function.as_str(), s.invocations, s.ok)).collect();
    assert_eq!(totals, [("echo", 1, 1), ("hello", 3, 3)]);
    assert_eq!(report.summary[0].response_bytes, 192);
    assert_eq!(report.summary[1].by_source, BTreeMap::from([("http".to_string(), 3)]));
    assert_eq!(report.records.iter().map(|r| r.id).collect::<Vec<_>>(), [4, 3, 2, 1]);
    assert_eq!(report.records[0].status, 200);
    let wisp_db = dir.path().join("wisp.db");
    assert!(!has_usage_table(&wisp_db));
    assert_eq!(count(&wisp_db, "SELECT COUNT(*) FROM functions"), 2);
    assert_eq!(count(&wisp_db, "SELECT COUNT(*) FROM revisions"), 3);
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_batch_is_retried_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), impatient()).unwrap();
    let db = dir.path().join("ledger.db");
    let holder = lock(&db);
    let sent: Vec<_> = (0..50).map(|n| record("hello", Source::Http, T0 + n, Outcome::Ok, n)).collect();
    ledger.record(sent[0].clone()).await;
    until_write_error(&ledger).await;
    // Records sent while the batch before them is being retried queue up behind it.
    for r in &sent[1..] {
        ledger.record(r.clone()).await;
    }
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    ledger.flush().await;

    let stats = ledger.stats();
    assert!(stats.write_errors_total > 0);
    assert_eq!((stats.written_total, stats.dropped_total, stats.queue_depth), (50, 0, 0));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM usage"), 50);
    let report = ledger.report(all(0)).await.unwrap();
    assert_eq!(report.summary, expected_summary(&sent));
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let config = LedgerConfig { queue_capacity: 8, ..impatient() };
    let ledger = Ledger::open(dir.path(), config).unwrap();
    let db = dir.path().join("ledger.db");
    let holder = lock(&db);
    ledger.record(record("hello", Source::Http, T0, Outcome::Ok, 0)).await;
    // The writer took that record and is stuck retrying it, so the queue no longer drains.
    until_write_error(&ledger).await;
    for n in 1..=100 {
        ledger.record(record("hello", Source::Http, T0 + n, Outcome::Ok, n)).await;
    }
    let stats = ledger.stats();
    assert_eq!((stats.queue_depth, stats.queue_capacity, stats.dropped_total), (8, 8, 92));

    // A flush while the queue is full waits for room rather than failing or blocking a thread.
    let flushing = tokio::spawn({
        let ledger = ledger.clone();
        async move { ledger.flush().await }
    });
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    flushing.await.unwrap();
    let stats = ledger.stats();
    assert_eq!((stats.written_total, stats.dropped_total, stats.queue_depth), (9, 92, 0));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM usage"), 9);
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_durability_resolves_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let config = LedgerConfig { durability: Durability::Sync, ..LedgerConfig::default() };
    let ledger = Ledger::open(dir.path(), config).unwrap();
    let db = dir.path().join("ledger.db");
    ledger.record(record("hello", Source::Rabbitmq, T0, Outcome::Ok, 1)).await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM usage WHERE source = 'rabbitmq'"), 1);
    assert_eq!(count(&db, "PRAGMA synchronous"), 2, "FULL");

    // Concurrent callers each see their own record committed.
    let tasks: Vec<_> = (0..20u64)
        .map(|n| {
            let (ledger, db) = (ledger.clone(), db.clone());
            tokio::spawn(async move {
                ledger.record(record("hello", Source::Async, T0 + n, Outcome::Ok, n)).await;
                let db = Connection::open(db).unwrap();
                db.query_row("SELECT COUNT(*) FROM usage WHERE start_ms = ?1", [T0 + n], |r| r.get::<_, u64>(0))
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap() >= 1);
    }
    assert_eq!(ledger.stats().written_total, 21);
    ledger.close().await;
}

#[tokio::test]
async fn batched_record_is_ready_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let mut committed = ledger.record(record("hello", Source::Http, T0, Outcome::Ok, 1));
    assert_eq!(Pin::new(&mut committed).poll(&mut Context::from_waker(Waker::noop())), Poll::Ready(()));
    ledger.flush().await;
    assert_eq!(ledger.stats().written_total, 1);
    ledger.close().await;
}

#[tokio::test]
async fn close_is_idempotent_and_later_records_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    for n in 0..10 {
        ledger.record(record("hello", Source::Http, T0 + n, Outcome::Ok, n)).await;
    }
    let other = ledger.clone();
    tokio::join!(ledger.close(), other.close());
    ledger.close().await;
    assert_eq!(ledger.stats().written_total, 10);
    ledger.record(record("hello", Source::Http, T0, Outcome::Ok, 0)).await;
    ledger.flush().await;
    let stats = ledger.stats();
    assert_eq!((stats.written_total, stats.dropped_total, stats.queue_depth), (10, 1, 0));
    // Reports still work after close.
    assert_eq!(ledger.report(all(100)).await.unwrap().records.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_recorders_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                for n in 0..5_000 {
                    // Batched: the future is ready at once and need not be awaited.
                    drop(ledger.record(record("hello", Source::ALL[t as usize], T0 + n, Outcome::Ok, n)));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    ledger.close().await;
    let stats = ledger.stats();
    assert_eq!((stats.written_total, stats.dropped_total), (20_000, 0));
    let report = ledger.report(all(0)).await.unwrap();
    assert_eq!(report.summary[0].invocations, 20_000);
    assert_eq!(report.summary[0].by_source.values().copied().collect::<Vec<_>>(), [5_000; 4]);
}

#[tokio::test]
async fn ledger_from_a_newer_release_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Ledger::open(dir.path(), LedgerConfig::default()).unwrap().close().await;
    Connection::open(dir.path().join("ledger.db")).unwrap().pragma_update(None, "user_version", 99).unwrap();
    assert!(Ledger::open(dir.path(), LedgerConfig::default()).is_err());
}

#[test]
fn report_json_keeps_its_shape_and_reads_leniently() {
    let report = UsageReport {
        summary: vec![UsageSummary {
            function: "hello".into(),
            invocations: 10,
            cold_starts: 1,
            ok: 9,
            failed: 1,
            wall_us_total: 1234,
            request_bytes: 0,
            response_bytes: 170,
            peak_memory_bytes_max: 1_114_112,
            by_source: BTreeMap::from([("http".to_string(), 10)]),
            by_runtime: BTreeMap::from([("container".to_string(), 10)]),
            replica_ms: 60_000,
            replica_cpu_ms: 1_500,
            namespace: "default".into(),
            billed_requests: 10,
            billed_ms: 12,
            billed_kib_ms: 12 * 131_072,
            cpu_us: 900,
            outbound_bytes: 5,
        }],
        records: vec![StoredUsage {
            id: 42,
            function: "hello".into(),
            revision: 3,
            source: Source::Http,
            start_ms: 1_763_780_000_000,
            wall_us: 61,
            cold: false,
            peak_memory_bytes: 1_114_112,
            outcome: Outcome::Ok,
            request_bytes: 0,
            response_bytes: 17,
            status: 200,
            trigger: None,
            event_id: None,
            runtime: Runtime::Container,
            namespace: "default".into(),
            memory_bytes: 128 << 20,
            cpu_us: 40,
            outbound_bytes: 0,
        }],
        ..UsageReport::default()
    };
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "summary": [{ "function": "hello", "invocations": 10, "cold_starts": 1, "ok": 9, "failed": 1,
                          "wall_us_total": 1234, "request_bytes": 0, "response_bytes": 170,
                          "peak_memory_bytes_max": 1114112, "by_source": { "http": 10 },
                          "by_runtime": { "container": 10 }, "replica_ms": 60000,
                          "replica_cpu_ms": 1500, "namespace": "default", "billed_requests": 10,
                          "billed_ms": 12, "billed_kib_ms": 1572864, "cpu_us": 900, "outbound_bytes": 5 }],
            "records": [{ "id": 42, "function": "hello", "revision": 3, "source": "http",
                          "start_ms": 1763780000000u64, "wall_us": 61, "cold": false,
                          "peak_memory_bytes": 1114112, "outcome": "ok", "request_bytes": 0,
                          "response_bytes": 17, "status": 200, "runtime": "container",
                          "namespace": "default", "memory_bytes": 134217728u64, "cpu_us": 40,
                          "outbound_bytes": 0 }]
        })
    );
    assert_eq!(serde_json::from_value::<UsageReport>(json).unwrap(), report);

    // A newer server: extra fields, values this client does not know, fields missing.
    let newer: UsageReport = serde_json::from_str(
        r#"{ "summary": [{ "function": "hello", "invocations": 2, "by_source": { "grpc": 2 }, "cost_usd": 0.1 }],
             "records": [{ "id": 7, "function": "hello", "source": "grpc", "outcome": "evicted", "region": "eu",
                           "runtime": "firecracker" }],
             "next": "abc" }"#,
    )
    .unwrap();
    assert_eq!(newer.summary[0].invocations, 2);
    assert_eq!(newer.summary[0].by_source["grpc"], 2);
    assert_eq!(
        (newer.records[0].id, newer.records[0].source, newer.records[0].outcome, newer.records[0].runtime),
        (7, Source::Http, Outcome::Error, Runtime::Wasm)
    );
    // An older one: no `source`, `runtime`, `by_runtime` or `replica_ms` at all.
    let older: StoredUsage = serde_json::from_str(r#"{ "id": 1, "function": "f", "outcome": "ok" }"#).unwrap();
    assert_eq!((older.source, older.outcome, older.runtime), (Source::Http, Outcome::Ok, Runtime::Wasm));
    let older: UsageSummary = serde_json::from_str(r#"{ "function": "f", "invocations": 3 }"#).unwrap();
    assert_eq!((older.invocations, older.by_runtime.len(), older.replica_ms), (3, 0, 0));
    assert_eq!(serde_json::from_str::<UsageReport>("{}").unwrap(), UsageReport::default());
}

#[test]
fn handles_are_shareable_and_committed_is_a_plain_future() {
    fn committed<T: Future<Output = ()> + Send + Unpin + 'static>() {}
    fn shared<T: Clone + Send + Sync + 'static>() {}
    committed::<wisp_ledger::Committed>();
    shared::<Ledger>();
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    error::<wisp_ledger::LedgerError>();
}

/// `ledger.db` as the release before container functions created it: migrations v1 and v2 as
/// they shipped (ledger/src/schema.rs), `user_version` 2.
const LEDGER_V2_SCHEMA: &str = "
CREATE TABLE usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    function TEXT NOT NULL,
    revision INTEGER NOT NULL,
    source TEXT NOT NULL DEFAULT 'http',
    start_ms INTEGER NOT NULL,
    wall_us INTEGER NOT NULL,
    cold INTEGER NOT NULL,
    peak_memory_bytes INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    request_bytes INTEGER NOT NULL,
    response_bytes INTEGER NOT NULL,
    status INTEGER NOT NULL
);
CREATE INDEX usage_function ON usage (function, id);
CREATE TABLE usage_hourly (
    hour_ms INTEGER NOT NULL,
    function TEXT NOT NULL,
    revision INTEGER NOT NULL,
    source TEXT NOT NULL,
    invocations INTEGER NOT NULL,
    cold_starts INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    wall_us INTEGER NOT NULL,
    request_bytes INTEGER NOT NULL,
    response_bytes INTEGER NOT NULL,
    peak_memory_bytes_max INTEGER NOT NULL,
    PRIMARY KEY (hour_ms, function, revision, source)
);
CREATE INDEX usage_hourly_function ON usage_hourly (function, source);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
ALTER TABLE usage ADD COLUMN trigger TEXT;
ALTER TABLE usage ADD COLUMN event_id TEXT;
PRAGMA user_version = 2;
";

/// The rollup the v2 writer ran after each batch.
const LEDGER_V2_ROLLUP: &str = "
INSERT INTO usage_hourly (hour_ms, function, revision, source, invocations, cold_starts, ok, failed,
                          wall_us, request_bytes, response_bytes, peak_memory_bytes_max)
SELECT start_ms / 3600000 * 3600000, function, revision, source, COUNT(*), SUM(cold != 0),
       SUM(outcome = 'ok'), SUM(outcome != 'ok'), SUM(wall_us), SUM(request_bytes), SUM(response_bytes),
       MAX(peak_memory_bytes)
FROM usage WHERE id > 0 GROUP BY 1, 2, 3, 4";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_round_trips_and_is_counted_per_function() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let mut sent = Vec::new();
    for n in 0..120u64 {
        let function = if n % 3 == 0 { "img" } else { "wasmy" };
        let mut r = record(function, Source::ALL[n as usize % 4], T0 + n * 60_000, Outcome::Ok, n);
        // `img` is a container function; `wasmy` one of each, redeployed as a container.
        r.runtime = if function == "img" || n % 4 == 1 { Runtime::Container } else { Runtime::Wasm };
        ledger.record(r.clone()).await;
        sent.push(r);
    }
    ledger.close().await;
    drop(ledger);

    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let report = ledger.report(all(1000)).await.unwrap();
    assert_eq!(report.summary, expected_summary(&sent));
    assert_eq!(report.summary[0].function, "img");
    assert_eq!(report.summary[0].by_runtime, BTreeMap::from([("container".to_string(), 40)]));
    assert_eq!(report.summary[1].by_runtime, BTreeMap::from([("container".to_string(), 20), ("wasm".to_string(), 60)]));
    assert!(report.summary.iter().all(|s| s.by_runtime.values().sum::<u64>() == s.invocations));
    assert_eq!(report.records.len(), 120);
    for (stored, sent) in report.records.iter().zip(sent.iter().rev()) {
        assert_eq!((stored.start_ms, stored.runtime), (sent.start_ms, sent.runtime));
    }
    let db = dir.path().join("ledger.db");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM usage WHERE runtime = 'container'"), 60);

    let img =
        ledger.report(UsageQuery { function: Some("img".into()), limit: 1, ..UsageQuery::default() }).await.unwrap();
    assert_eq!(img.summary.len(), 1);
    assert_eq!(img.summary[0].by_runtime, BTreeMap::from([("container".to_string(), 40)]));
    assert_eq!(img.records[0].runtime, Runtime::Container);
    ledger.close().await;
}

#[tokio::test]
async fn ledger_db_of_schema_v2_migrates_as_wasm_with_totals_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let old: Vec<_> = (0..9u64)
        .map(|n| {
            let function = if n % 3 == 0 { "echo" } else { "hello" };
            let outcome = if n % 4 == 0 { Outcome::Trap } else { Outcome::Ok };
            let mut r = record(function, Source::ALL[n as usize % 4], T0 + n * HOUR_MS / 2, outcome, n);
            // Schema v2 had no configured memory or CPU time.
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
                                    request_bytes, response_bytes, status, trigger, event_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'orders', 'ev-1')",
                rusqlite::params![
                    &*r.function,
                    r.revision,
                    r.source.as_str(),
                    r.start_ms,
                    r.wall_us,
                    r.cold,
                    r.peak_memory_bytes,
                    r.outcome.as_str(),
                    r.request_bytes,
                    r.response_bytes,
                    r.status
                ],
            )
            .unwrap();
        }
        conn.execute(LEDGER_V2_ROLLUP, []).unwrap();
        assert_eq!(count(&db, "PRAGMA user_version"), 2);
    }

    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    assert_eq!(count(&db, "PRAGMA user_version"), 5);
    let report = ledger.report(all(100)).await.unwrap();
    // Every old row is wasm (`record` builds wasm records), and the totals are as before.
    assert_eq!(report.summary, expected_summary(&old));
    assert_eq!(report.summary[0].by_runtime, BTreeMap::from([("wasm".to_string(), 3)]));
    assert_eq!(report.summary[1].by_runtime, BTreeMap::from([("wasm".to_string(), 6)]));
    assert_eq!(report.records.iter().map(|r| r.id).collect::<Vec<_>>(), (1..=9).rev().collect::<Vec<_>>());
    assert!(report.records.iter().all(|r| r.runtime == Runtime::Wasm));
    assert_eq!(report.records[0].trigger.as_deref(), Some("orders"));
    // The rollups moved (hour by hour, under 'wasm'); the old table is gone.
    assert_eq!(count(&db, "SELECT COUNT(*) FROM usage_hourly_v3 WHERE runtime != 'wasm'"), 0);
    assert_eq!(count(&db, "SELECT COUNT(DISTINCT hour_ms) FROM usage_hourly_v3"), 5);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('usage_hourly', 'usage_hourly_v2')"), 0);

    // New records add to the moved rollups, in the same hour, under their own runtime.
    let mut new = record("hello", Source::Http, T0, Outcome::Ok, 100);
    new.runtime = Runtime::Container;
    ledger.record(new.clone()).await;
    ledger.record(record("hello", Source::Http, T0 + 1, Outcome::Ok, 101)).await;
    ledger.close().await;
    drop(ledger);
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let report = ledger.report(all(100)).await.unwrap();
    let mut all_sent = old.clone();
    all_sent.extend([new, record("hello", Source::Http, T0 + 1, Outcome::Ok, 101)]);
    assert_eq!(report.summary, expected_summary(&all_sent));
    assert_eq!(report.summary[1].by_runtime, BTreeMap::from([("container".to_string(), 1), ("wasm".to_string(), 7)]));
    assert_eq!(report.records[1].id, 10);
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_time_is_summed_per_function_with_the_filter() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    for n in 0..10u64 {
        ledger.record(record("middle", Source::Http, T0 + n, Outcome::Ok, n)).await;
    }
    // Functions before and after the invoked one in name order, one of them with no
    // invocations at all; an end before its start counts as no time.
    let replicas = [
        replica("aardvark", "c1", T0, T0 + 90_000),
        replica("middle", "c2", T0, T0 + 1_500),
        replica("zebra", "c3", T0, T0 + HOUR_MS),
        replica("middle", "c4", T0 + 10, T0 + 2_010),
        replica("zebra", "c5", T0 + 5_000, T0 + 4_000),
        replica("aardvark", "c6", T0 + HOUR_MS, T0 + HOUR_MS + 10_000),
    ];
    for r in &replicas {
        ledger.record_replica(r.clone()).await;
    }
    ledger.close().await;
    assert_eq!(ledger.stats().written_total, 16);
    drop(ledger);

    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let report = ledger.report(all(100)).await.unwrap();
    let totals: Vec<_> = report.summary.iter().map(|s| (s.function.as_str(), s.invocations, s.replica_ms)).collect();
    assert_eq!(totals, [("aardvark", 0, 100_000), ("middle", 10, 3_500), ("zebra", 0, HOUR_MS)]);
    assert_eq!(
        report.summary[0],
        UsageSummary {
            function: "aardvark".into(),
            replica_ms: 100_000,
            replica_cpu_ms: 10_000,
            ..UsageSummary::default()
        }
    );
    // Replica lifetimes are not invocations.
    assert_eq!(report.records.len(), 10);
    let db = dir.path().join("ledger.db");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM replica_usage"), 6);
    assert_eq!(count(&db, "SELECT COUNT(DISTINCT replica) FROM replica_usage"), 6);

    let zebra =
        ledger.report(UsageQuery { function: Some("zebra".into()), limit: 10, ..UsageQuery::default() }).await.unwrap();
    assert_eq!(
        zebra.summary,
        [UsageSummary {
            function: "zebra".into(),
            replica_ms: HOUR_MS,
            replica_cpu_ms: HOUR_MS / 10,
            ..UsageSummary::default()
        }]
    );
    assert!(zebra.records.is_empty());
    let middle =
        ledger.report(UsageQuery { function: Some("middle".into()), limit: 0, ..UsageQuery::default() }).await.unwrap();
    assert_eq!(middle.summary.len(), 1);
    assert_eq!((middle.summary[0].invocations, middle.summary[0].replica_ms), (10, 3_500));
    let none =
        ledger.report(UsageQuery { function: Some("nope".into()), limit: 5, ..UsageQuery::default() }).await.unwrap();
    assert_eq!(none, UsageReport::default());
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_durability_resolves_replica_usage_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let config = LedgerConfig { durability: Durability::Sync, ..LedgerConfig::default() };
    let ledger = Ledger::open(dir.path(), config).unwrap();
    let db = dir.path().join("ledger.db");
    let tasks: Vec<_> = (0..20u64)
        .map(|n| {
            let (ledger, db) = (ledger.clone(), db.clone());
            tokio::spawn(async move {
                ledger.record_replica(replica("img", &format!("c{n}"), T0, T0 + n)).await;
                let db = Connection::open(db).unwrap();
                db.query_row("SELECT COUNT(*) FROM replica_usage WHERE replica = ?1", [format!("c{n}")], |r| {
                    r.get::<_, u64>(0)
                })
                .unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 1);
    }
    assert_eq!(ledger.stats().written_total, 20);
    let report = ledger.report(all(0)).await.unwrap();
    assert_eq!(report.summary[0].replica_ms, (0..20).sum::<u64>());
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_replica_batch_is_retried_and_closed_ledger_drops_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), impatient()).unwrap();
    let db = dir.path().join("ledger.db");
    let holder = lock(&db);
    ledger.record_replica(replica("img", "c0", T0, T0 + 1_000)).await;
    until_write_error(&ledger).await;
    // Invocations and replica lifetimes queue up behind the batch being retried.
    for n in 1..10u64 {
        ledger.record_replica(replica("img", &format!("c{n}"), T0, T0 + 1_000)).await;
        ledger.record(record("img", Source::Http, T0 + n, Outcome::Ok, n)).await;
    }
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    ledger.flush().await;
    let stats = ledger.stats();
    assert!(stats.write_errors_total > 0);
    assert_eq!((stats.written_total, stats.dropped_total, stats.queue_depth), (19, 0, 0));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM replica_usage"), 10);
    let report = ledger.report(all(0)).await.unwrap();
    assert_eq!((report.summary[0].invocations, report.summary[0].replica_ms), (9, 10_000));

    ledger.close().await;
    ledger.record_replica(replica("img", "late", T0, T0 + 1)).await;
    let stats = ledger.stats();
    assert_eq!((stats.written_total, stats.dropped_total), (19, 1));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM replica_usage"), 10);
}

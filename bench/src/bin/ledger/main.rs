//! `wisp-bench-ledger`: usage queries and bills against a big ledger. Fills `ledger.db` with N
//! invocation records (10 million by default) over the last 30 days, 100 functions in 5
//! namespaces, with their hourly rollups, then starts a node on it and times `GET /v1/usage`
//! (totals, grouped by day, a namespace by hour over a week, with the 100 newest records),
//! `GET /v1/bill`, and the CLI's `wisp usage` and `wisp bill` (a process each, startup
//! included): p50 and p99 over `--iterations` sequential calls.
//!
//! The records go in through SQLite directly (a recursive CTE per million rows, one
//! transaction each), and the rollups with one `INSERT ... SELECT` of the same SQL the ledger's
//! writer runs per batch: going through the node would take hours. The node is started on the
//! file afterwards (schema current, so it migrates nothing), with `--usage-retention forever`.
//! Writes `ledger.md` to `--out DIR`; see docs/bench/ledger.md.

#[path = "../../progress.rs"]
mod progress;

use anyhow::Context;
use clap::Parser;
use progress::{log, ms};
use rusqlite::Connection;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wisp_testkit::Node;

#[derive(Parser, Debug)]
#[command(version, about = "Times usage queries and bills against a ledger of millions of records")]
struct Args {
    /// Directory for ledger.md and the node's data dir
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Invocation records in the ledger
    #[arg(long, default_value_t = 10_000_000, value_name = "N")]
    records: u64,
    /// Calls timed per query
    #[arg(long, default_value_t = 50, value_name = "N")]
    iterations: usize,
    /// The `wisp` binary [default: `wisp` next to this executable, else target/release/wisp]
    #[arg(long, value_name = "PATH")]
    wisp_bin: Option<PathBuf>,
}

const DAY_MS: u64 = 86_400_000;
const FUNCTIONS: u64 = 100;
const NAMESPACES: u64 = 5;
const CHUNK: u64 = 1_000_000;

/// The ledger writer's per-batch rollup (ledger/src/schema.rs ROLLUP_FROM_RAW), over every row.
const ROLLUP: &str = "
    INSERT INTO usage_hourly_v3 (hour_ms, namespace, function, revision, source, runtime, invocations, cold_starts,
                                 ok, failed, wall_us, billed_requests, billed_ms, billed_kib_ms, cpu_us,
                                 request_bytes, response_bytes, outbound_bytes, peak_memory_bytes_max)
    SELECT start_ms / 3600000 * 3600000, namespace, function, revision, source, runtime, COUNT(*), SUM(cold != 0),
           SUM(outcome = 'ok'), SUM(outcome != 'ok'), SUM(wall_us), SUM(outcome != 'rejected'),
           SUM(CASE WHEN outcome != 'rejected' THEN (wall_us + 999) / 1000 ELSE 0 END),
           SUM(CASE WHEN outcome != 'rejected' THEN (wall_us + 999) / 1000 * ((memory_bytes + 1023) / 1024) ELSE 0 END),
           SUM(cpu_us), SUM(request_bytes), SUM(response_bytes), SUM(outbound_bytes), MAX(peak_memory_bytes)
    FROM usage GROUP BY 1, 2, 3, 4, 5, 6";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Fills the raw table: record i starts at `from + i * span / n`, runs function i % 100
/// (namespace `ns{f % 5}`, `default` for ns0), 1-50 ms of wall time, 128 MiB configured.
fn fill(conn: &mut Connection, n: u64, from: u64, span: u64) -> anyhow::Result<()> {
    conn.pragma_update(None, "synchronous", "OFF")?;
    let mut done = 0;
    while done < n {
        let rows = CHUNK.min(n - done);
        let tx = conn.transaction()?;
        tx.execute(
            "WITH RECURSIVE seq(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?1 + ?2)
             INSERT INTO usage (function, namespace, revision, source, start_ms, wall_us, cold, peak_memory_bytes,
                                outcome, request_bytes, response_bytes, status, runtime, memory_bytes, cpu_us,
                                outbound_bytes)
             SELECT CASE WHEN i % ?5 % ?6 = 0 THEN 'fn' || (i % ?5)
                         ELSE 'ns' || (i % ?5 % ?6) || '/fn' || (i % ?5) END,
                    CASE WHEN i % ?5 % ?6 = 0 THEN 'default' ELSE 'ns' || (i % ?5 % ?6) END,
                    1, 'http', ?3 + i * ?4 / ?7, 1000 + i * 7919 % 49000, i % 50 = 0, 2000000,
                    CASE WHEN i % 97 = 0 THEN 'trap' ELSE 'ok' END, 100, 200, 200, 'wasm', 134217728,
                    50 + i * 31 % 900, 0
             FROM seq",
            rusqlite::params![
                done as i64,
                rows as i64,
                from as i64,
                span as i64,
                FUNCTIONS as i64,
                NAMESPACES as i64,
                n as i64
            ],
        )?;
        tx.commit()?;
        done += rows;
        log(&format!("  {done} records"));
    }
    log("rollups");
    conn.execute(ROLLUP, [])?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    ms(sorted[i])
}

/// p50 and p99 of `iterations` calls of `call`, which returns whether the call succeeded.
fn time(iterations: usize, mut call: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<(f64, f64)> {
    call()?; // warm: connections, page cache
    let mut all = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        call()?;
        all.push(started.elapsed());
    }
    all.sort();
    Ok((percentile(&all, 0.5), percentile(&all, 0.99)))
}

fn main() -> anyhow::Result<()> {
    progress::elapsed_s();
    let args = Args::parse();
    let bin = wisp_testkit::bench_wisp_bin(args.wisp_bin.clone())?;
    let data = args.out.join("ledger-data");
    std::fs::create_dir_all(&args.out)?;
    let _ = std::fs::remove_dir_all(&data);

    // An empty node writes the current schema; then the records go in behind its back.
    log("creating the ledger");
    let empty = Node::start_with(&bin, &data, &[]);
    // A request first: `wisp up` installs its SIGTERM handler just after printing its address.
    anyhow::ensure!(empty.get("/v1/plans").status == 200, "the node does not answer");
    empty.stop();
    let db = data.join("ledger.db");
    let mut conn = Connection::open(&db).context("opening ledger.db")?;
    let now = now_ms();
    let span = 30 * DAY_MS;
    let filled = Instant::now();
    log(&format!("filling {} records", args.records));
    fill(&mut conn, args.records, now - span, span)?;
    let fill_s = filled.elapsed().as_secs_f64();
    let rollup_rows: i64 = conn.query_row("SELECT COUNT(*) FROM usage_hourly_v3", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    drop(conn);
    let db_bytes = std::fs::metadata(&db)?.len();

    let node = Node::start_with(&bin, &data, &["--usage-retention", "forever"]);
    let total = node.get("/v1/usage?limit=0").json()["summary"]
        .as_array()
        .map_or(0, |s| s.iter().map(|f| f["invocations"].as_u64().unwrap_or(0)).sum::<u64>());
    anyhow::ensure!(total == args.records, "the node counts {total} invocations, not {}", args.records);
    let month = {
        // The month of `now`, from the node's own answer (no calendar code here).
        let usage = node.get("/v1/usage?by=day&limit=0").json();
        let last = usage["series"].as_array().and_then(|s| s.last()).context("no usage by day")?;
        last["start"].as_str().context("no start")?[..7].to_string()
    };
    let week_from = now - 7 * DAY_MS;
    let week = format!("/v1/usage?namespace=ns1&by=hour&limit=0&from={}&to={}", iso(week_from), iso(now));
    let queries: Vec<(String, String)> = vec![
        ("GET /v1/usage?limit=0 (totals)".into(), "/v1/usage?limit=0".into()),
        ("GET /v1/usage?by=day&limit=0".into(), "/v1/usage?by=day&limit=0".into()),
        ("GET /v1/usage (namespace, by hour, a week)".into(), week),
        ("GET /v1/usage (totals + 100 newest records)".into(), "/v1/usage".into()),
        (format!("GET /v1/bill?period={month}"), format!("/v1/bill?period={month}")),
        (format!("GET /v1/bill?period={month}&namespace=ns2"), format!("/v1/bill?period={month}&namespace=ns2")),
    ];
    let mut rows = Vec::new();
    for (name, path) in &queries {
        log(name);
        let timed = time(args.iterations, || {
            let resp = node.get(path);
            anyhow::ensure!(resp.status == 200, "{path}: {}", resp.body);
            Ok(())
        })?;
        rows.push((name.clone(), timed));
    }
    for (name, cli_args) in [
        ("wisp usage".to_string(), vec!["usage".to_string()]),
        ("wisp usage --by day".into(), vec!["usage".into(), "--by".into(), "day".into()]),
        (format!("wisp bill --period {month}"), vec!["bill".into(), "--period".into(), month.clone()]),
        (
            format!("wisp -o json bill --period {month}"),
            vec!["-o".into(), "json".into(), "bill".into(), "--period".into(), month.clone()],
        ),
    ] {
        log(&name);
        let timed = time(args.iterations, || {
            let out = node.cli(&bin).args(&cli_args).output()?;
            anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            Ok(())
        })?;
        rows.push((name, timed));
    }
    node.stop();

    let mut md = String::new();
    writeln!(md, "# Ledger: usage queries and bills at {} records\n", args.records)?;
    writeln!(
        md,
        "`wisp-bench-ledger --records {} --iterations {}` ({} cores). The ledger holds {} invocation records over the last 30 days (100 functions in 5 namespaces), {} hourly rollup rows; `ledger.db` is {:.2} GiB. Filling it (SQLite directly, rollups included) took {:.0} s.\n",
        args.records,
        args.iterations,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.records,
        rollup_rows,
        db_bytes as f64 / (1u64 << 30) as f64,
        fill_s
    )?;
    writeln!(
        md,
        "Sequential calls against one node, after one warm-up call each; the CLI rows include starting the `wisp` process.\n"
    )?;
    writeln!(md, "| query | p50 ms | p99 ms |\n|---|---:|---:|")?;
    for (name, (p50, p99)) in &rows {
        writeln!(md, "| {name} | {p50:.2} | {p99:.2} |")?;
    }
    std::fs::write(args.out.join("ledger.md"), &md)?;
    print!("{md}");
    Ok(())
}

/// RFC 3339 of a Unix time in ms, via the node's own formatting would need a call: use days.
fn iso(ms: u64) -> String {
    let z = (ms / DAY_MS) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let secs = ms / 1000 % 86_400;
    format!(
        "{:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        yoe + era * 400 + i64::from(m <= 2),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

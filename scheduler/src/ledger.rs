//! The usage ledger: invocations send records through a channel (never blocking the request
//! path); one writer thread appends them to SQLite in batches.

use crate::SchedulerError;
use crate::store::open_connection;
use rusqlite::{Connection, TransactionBehavior, params};
use serde::Serialize;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;
use wisp_runtime::{Outcome, UsageRecord, UsageSink};

/// Records arriving within this window (up to `MAX_BATCH`) share one transaction.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
const MAX_BATCH: usize = 4096;

enum Msg {
    Record(UsageRecord),
    /// Write everything received so far, then answer.
    Flush(Sender<()>),
}

/// The sending side, handed to the runtime as its `UsageSink`.
pub struct Ledger {
    tx: Sender<Msg>,
}

impl UsageSink for Ledger {
    fn record(&self, record: UsageRecord) {
        // Only fails if the writer died, which it reports itself.
        let _ = self.tx.send(Msg::Record(record));
    }
}

impl Ledger {
    pub(crate) fn start(db_path: &Path) -> Result<Self, SchedulerError> {
        let conn = open_connection(db_path)?;
        // WAL + NORMAL: a batch survives a crash of the process, only not a power loss; an fsync
        // per batch stalled the request path on this machine.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("wisp-ledger".into()).spawn(move || writer(conn, rx))?;
        Ok(Self { tx })
    }

    /// Blocks until every record sent before this call is on disk.
    pub fn flush(&self) {
        let (ack, done) = mpsc::channel();
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv();
        }
    }
}

fn writer(mut conn: Connection, rx: Receiver<Msg>) {
    // Metering must not compete with requests for the cores: a batch insert is ~1 ms of CPU
    // that, at normal priority, preempted a request worker and showed up in its p99.
    // SAFETY: setpriority on the calling thread (Linux threads are tasks) has no preconditions.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    let mut batch = Vec::with_capacity(256);
    let mut acks = Vec::new();
    while let Ok(first) = rx.recv() {
        // Sleep through the batch window instead of waiting on the channel: a receiver blocked
        // in recv is woken by every send, which cost a context switch per invocation.
        if matches!(first, Msg::Record(_)) {
            std::thread::sleep(BATCH_WINDOW);
        }
        for msg in std::iter::once(first).chain(rx.try_iter().take(MAX_BATCH)) {
            match msg {
                Msg::Record(r) => batch.push(r),
                Msg::Flush(ack) => acks.push(ack),
            }
        }
        if let Err(e) = write_batch(&mut conn, &batch) {
            tracing::error!("usage ledger: writing {} records failed: {e}", batch.len());
        }
        batch.clear();
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

fn write_batch(conn: &mut Connection, batch: &[UsageRecord]) -> rusqlite::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO usage (function, revision, start_ms, wall_us, cold, peak_memory_bytes, outcome,
                                request_bytes, response_bytes, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for r in batch {
            stmt.execute(params![
                &*r.function,
                r.revision,
                r.start_ms,
                r.wall_us,
                r.cold,
                r.peak_memory_bytes,
                r.outcome.as_str(),
                r.request_bytes,
                r.response_bytes,
                r.status,
            ])?;
        }
    }
    tx.commit()
}

/// Per-function totals, for billing.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct UsageSummary {
    pub function: String,
    pub invocations: u64,
    pub cold_starts: u64,
    pub ok: u64,
    pub failed: u64,
    pub wall_us_total: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub peak_memory_bytes_max: u64,
}

/// One stored usage record.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StoredUsage {
    pub id: u64,
    pub function: String,
    pub revision: u64,
    pub start_ms: u64,
    pub wall_us: u64,
    pub cold: bool,
    pub peak_memory_bytes: u64,
    pub outcome: String,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub status: u16,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct UsageReport {
    pub summary: Vec<UsageSummary>,
    pub records: Vec<StoredUsage>,
}

pub(crate) fn report(conn: &Connection, function: Option<&str>, limit: u64) -> rusqlite::Result<UsageReport> {
    let ok = Outcome::Ok.as_str();
    let mut stmt = conn.prepare_cached(
        "SELECT function, COUNT(*), SUM(cold), SUM(outcome = ?2), SUM(outcome != ?2), SUM(wall_us),
                SUM(request_bytes), SUM(response_bytes), MAX(peak_memory_bytes)
         FROM usage WHERE (?1 IS NULL OR function = ?1) GROUP BY function ORDER BY function",
    )?;
    let summary = stmt
        .query_map(params![function, ok], |r| {
            Ok(UsageSummary {
                function: r.get(0)?,
                invocations: r.get(1)?,
                cold_starts: r.get(2)?,
                ok: r.get(3)?,
                failed: r.get(4)?,
                wall_us_total: r.get(5)?,
                request_bytes: r.get(6)?,
                response_bytes: r.get(7)?,
                peak_memory_bytes_max: r.get(8)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, function, revision, start_ms, wall_us, cold, peak_memory_bytes, outcome, request_bytes,
                response_bytes, status
         FROM usage WHERE (?1 IS NULL OR function = ?1) ORDER BY id DESC LIMIT ?2",
    )?;
    let records = stmt
        .query_map(params![function, limit], |r| {
            Ok(StoredUsage {
                id: r.get(0)?,
                function: r.get(1)?,
                revision: r.get(2)?,
                start_ms: r.get(3)?,
                wall_us: r.get(4)?,
                cold: r.get(5)?,
                peak_memory_bytes: r.get(6)?,
                outcome: r.get(7)?,
                request_bytes: r.get(8)?,
                response_bytes: r.get(9)?,
                status: r.get(10)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(UsageReport { summary, records })
}

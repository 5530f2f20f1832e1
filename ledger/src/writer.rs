//! The writer thread: takes records off the bounded queue in batches and commits each batch
//! (raw rows, their hourly rollups, and replica lifetimes) in one transaction, retrying a failed
//! batch until it lands. Flush, close and sync-durability acks are answered only after
//! everything queued before them is committed.

use crate::schema::ROLLUP_FROM_RAW;
use crate::{Durability, ReplicaUsage, Shared, UsageRecord};
use rusqlite::{Connection, TransactionBehavior, params};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::Duration;
use tokio::sync::oneshot;

/// Records (invocations and replica lifetimes) per transaction at most.
const MAX_BATCH: usize = 4096;
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub(crate) enum Msg {
    /// A record; with a sender when the caller waits until it is durable.
    Record(UsageRecord, Option<oneshot::Sender<()>>),
    /// A replica's lifetime; with a sender when the caller waits until it is durable.
    Replica(ReplicaUsage, Option<oneshot::Sender<()>>),
    /// Answer once everything queued before is committed.
    Flush(oneshot::Sender<()>),
    /// Commit everything queued before, answer, and exit.
    Close(oneshot::Sender<()>),
}

/// What the next transaction commits, and who waits for it.
#[derive(Default)]
struct Batch {
    records: Vec<UsageRecord>,
    replicas: Vec<ReplicaUsage>,
    acks: Vec<oneshot::Sender<()>>,
}

impl Batch {
    /// Rows to write (invocations and replica lifetimes).
    fn len(&self) -> usize {
        self.records.len() + self.replicas.len()
    }

    /// Takes one message off the queue; returns the close ack if it was `Close`.
    fn take(&mut self, msg: Msg, shared: &Shared) -> Option<oneshot::Sender<()>> {
        match msg {
            Msg::Record(record, ack) => {
                shared.depth.fetch_sub(1, Ordering::SeqCst);
                self.records.push(record);
                self.acks.extend(ack);
                None
            }
            Msg::Replica(replica, ack) => {
                shared.depth.fetch_sub(1, Ordering::SeqCst);
                self.replicas.push(replica);
                self.acks.extend(ack);
                None
            }
            Msg::Flush(ack) => {
                self.acks.push(ack);
                None
            }
            Msg::Close(ack) => Some(ack),
        }
    }
}

pub(crate) fn run(mut conn: Connection, rx: Receiver<Msg>, shared: &Shared) {
    lower_priority();
    let mut batch = Batch::default();
    let mut was_full = false;
    // Ends when every `Ledger` is gone without close(): the last batch was committed already.
    while let Ok(first) = rx.recv() {
        // Sleep through the batch window instead of waiting on the channel: a receiver blocked
        // in recv is woken by every send, which cost a context switch per invocation. Not after
        // a full batch (more are waiting), and not in sync durability, where callers wait for
        // the commit: there, records that arrive during one commit share the next one.
        let row = matches!(first, Msg::Record(..) | Msg::Replica(..));
        if row && shared.durability == Durability::Batched && !was_full {
            std::thread::sleep(shared.batch_window);
        }
        let mut closing = batch.take(first, shared);
        while closing.is_none() && batch.len() < MAX_BATCH {
            let Ok(msg) = rx.try_recv() else { break };
            closing = batch.take(msg, shared);
        }
        shared.room.notify_waiters();
        was_full = batch.len() >= MAX_BATCH;
        commit_with_retry(&mut conn, &mut batch, shared);
        if let Some(ack) = closing {
            finish(&mut conn, rx, shared, batch, ack);
            return;
        }
    }
}

/// After `Close`: record() calls that raced with close() may still be between their check of
/// `closed` and their send. `depth` counts them (it is raised before the check), so wait until
/// it is zero, writing what they sent; after that every call sees `closed` and counts a drop.
/// Without this a record could land in a queue nobody reads, lost and uncounted.
fn finish(conn: &mut Connection, rx: Receiver<Msg>, shared: &Shared, mut batch: Batch, ack: oneshot::Sender<()>) {
    let mut acks = vec![ack];
    loop {
        while let Ok(msg) = rx.try_recv() {
            acks.extend(batch.take(msg, shared));
        }
        if shared.depth.load(Ordering::SeqCst) == 0 {
            break;
        }
        std::thread::yield_now();
    }
    shared.room.notify_waiters();
    commit_with_retry(conn, &mut batch, shared);
    // Later flushes find the queue disconnected and return at once.
    drop(rx);
    for ack in acks {
        let _ = ack.send(());
    }
}

// Metering must not compete with requests for the cores: a batch insert is ~1 ms of CPU that,
// at normal priority, preempted a request worker and showed up in its p99.
fn lower_priority() {
    // SAFETY: setpriority on the calling thread (Linux threads are tasks) has no preconditions.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) } != 0 {
        // Called once per writer thread, so this logs once.
        tracing::warn!(
            "usage ledger: could not lower the writer thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Commits the batch, retrying with backoff until it lands: records are never dropped on a
/// write error. Then answers everyone waiting for it and empties it.
fn commit_with_retry(conn: &mut Connection, batch: &mut Batch, shared: &Shared) {
    let rows = batch.len();
    if rows > 0 {
        let mut delay = RETRY_FIRST;
        while let Err(e) = commit(conn, &batch.records, &batch.replicas) {
            let errors = shared.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(
                write_errors_total = errors,
                "usage ledger: writing {rows} records failed, retrying in {delay:?}: {e}"
            );
            std::thread::sleep(delay);
            delay = (delay * 2).min(RETRY_MAX);
        }
        shared.written.fetch_add(rows as u64, Ordering::Relaxed);
        batch.records.clear();
        batch.replicas.clear();
    }
    for ack in batch.acks.drain(..) {
        let _ = ack.send(());
    }
}

/// SQLite integers are i64; rusqlite refuses a larger u64, which would fail the batch on every
/// retry. Saturate instead: no real measurement gets near.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn commit(conn: &mut Connection, records: &[UsageRecord], replicas: &[ReplicaUsage]) -> rusqlite::Result<()> {
    // IMMEDIATE: take the write lock up front (and wait busy_timeout for it), rather than fail
    // mid-transaction when another connection wrote in between.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !records.is_empty() {
        let before: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) FROM usage", [], |r| r.get(0))?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO usage (function, revision, source, start_ms, wall_us, cold, peak_memory_bytes, outcome,
                                request_bytes, response_bytes, status, trigger, event_id, runtime)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?;
        for r in records {
            insert.execute(params![
                &*r.function,
                int(r.revision),
                r.source.as_str(),
                int(r.start_ms),
                int(r.wall_us),
                r.cold,
                int(r.peak_memory_bytes),
                r.outcome.as_str(),
                int(r.request_bytes),
                int(r.response_bytes),
                r.status,
                r.trigger.as_deref(),
                r.event_id.as_deref(),
                r.runtime.as_str(),
            ])?;
        }
        // The batch's hourly rollups, in the same transaction: reports never scan raw rows.
        tx.prepare_cached(ROLLUP_FROM_RAW)?.execute([before])?;
    }
    if !replicas.is_empty() {
        let mut insert = tx.prepare_cached(
            "INSERT INTO replica_usage (function, revision, replica, start_ms, end_ms, cpu_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for r in replicas {
            let times = (int(r.start_ms), int(r.end_ms), int(r.cpu_ms));
            insert.execute(params![&*r.function, int(r.revision), &*r.replica, times.0, times.1, times.2])?;
        }
    }
    tx.commit()
}

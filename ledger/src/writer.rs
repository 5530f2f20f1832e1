//! The writer thread: takes records off the bounded queue in batches and commits each batch
//! (raw rows, their hourly rollups, and replica lifetimes) in one transaction, retrying a failed
//! batch until it lands. Flush, close and sync-durability acks are answered only after
//! everything queued before them is committed.

use crate::schema::ROLLUP_FROM_RAW;
use crate::{Durability, ReplicaUsage, Shared, UsageRecord};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// Records (invocations and replica lifetimes) per transaction at most.
const MAX_BATCH: usize = 4096;
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Raw rows deleted per transaction: short enough that writes queued meanwhile wait little.
const PRUNE_CHUNK: usize = 5_000;
/// Raw rows deleted per periodic round at most, before the writer turns back to the queue.
const PRUNE_ROUND: u64 = 100_000;

pub(crate) enum Msg {
    /// A record; with a sender when the caller waits until it is durable.
    Record(UsageRecord, Option<oneshot::Sender<()>>),
    /// A replica's lifetime; with a sender when the caller waits until it is durable.
    Replica(ReplicaUsage, Option<oneshot::Sender<()>>),
    /// Answer once everything queued before is committed.
    Flush(oneshot::Sender<()>),
    /// Commit everything queued before, answer, and exit.
    Close(oneshot::Sender<()>),
    /// Commit everything queued before, prune every raw row past the retention now, and answer
    /// how many were deleted.
    Prune(oneshot::Sender<u64>),
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
            // Handled by `run` before it reaches a batch.
            Msg::Prune(_) => None,
        }
    }
}

pub(crate) fn run(mut conn: Connection, rx: Receiver<Msg>, shared: &Shared) {
    lower_priority();
    let mut batch = Batch::default();
    let mut was_full = false;
    let mut next_prune = Instant::now();
    loop {
        if shared.retention.is_some() && Instant::now() >= next_prune {
            // A round that stopped at its bound left more: come back after the next batch.
            let more = prune_logged(&mut conn, shared, PRUNE_ROUND);
            next_prune = if more { Instant::now() } else { Instant::now() + shared.prune_every };
        }
        let first = match shared.retention {
            Some(_) => match rx.recv_timeout(next_prune.saturating_duration_since(Instant::now())) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            },
            // Ends when every `Ledger` is gone without close(): the last batch was committed already.
            None => match rx.recv() {
                Ok(msg) => msg,
                Err(_) => return,
            },
        };
        if let Msg::Prune(ack) = first {
            // Everything queued before is committed (each batch is, before the next recv).
            let _ = ack.send(prune_all(&mut conn, shared));
            continue;
        }
        // Sleep through the batch window instead of waiting on the channel: a receiver blocked
        // in recv is woken by every send, which cost a context switch per invocation. Not after
        // a full batch (more are waiting), and not in sync durability, where callers wait for
        // the commit: there, records that arrive during one commit share the next one.
        let row = matches!(first, Msg::Record(..) | Msg::Replica(..));
        if row && shared.durability == Durability::Batched && !was_full {
            std::thread::sleep(shared.batch_window);
        }
        let mut closing = batch.take(first, shared);
        let mut prune = None;
        while closing.is_none() && prune.is_none() && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Prune(ack)) => prune = Some(ack),
                Ok(msg) => closing = batch.take(msg, shared),
                Err(_) => break,
            }
        }
        shared.room.notify_waiters();
        was_full = batch.len() >= MAX_BATCH;
        commit_with_retry(&mut conn, &mut batch, shared);
        if let Some(ack) = prune {
            let _ = ack.send(prune_all(&mut conn, shared));
        }
        if let Some(ack) = closing {
            finish(&mut conn, rx, shared, batch, ack);
            return;
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Prunes until nothing past the retention is left; returns how many rows went.
fn prune_all(conn: &mut Connection, shared: &Shared) -> u64 {
    match prune(conn, shared, u64::MAX) {
        Ok((n, _)) => n,
        Err((n, e)) => {
            tracing::error!("usage ledger: pruning raw records failed: {e}");
            n
        }
    }
}

/// One bounded round; returns whether rows past the retention may be left.
fn prune_logged(conn: &mut Connection, shared: &Shared, max_rows: u64) -> bool {
    match prune(conn, shared, max_rows) {
        Ok((n, more)) => {
            if n > 0 {
                tracing::info!(records = n, "usage ledger: pruned raw records past the retention");
            }
            more
        }
        Err((_, e)) => {
            tracing::error!("usage ledger: pruning raw records failed (retried at the next round): {e}");
            false
        }
    }
}

/// Deletes raw rows that started before now minus the retention, oldest id first, up to
/// `max_rows`, stopping at the first row that is newer (ids follow start times closely; a row
/// kept a little past its retention is harmless, a scan of the whole table per round is not)
/// or not exported yet. Returns how many went and whether the bound stopped it; on an error,
/// how many went before it.
fn prune(conn: &mut Connection, shared: &Shared, max_rows: u64) -> Result<(u64, bool), (u64, rusqlite::Error)> {
    let Some(retention) = shared.retention else { return Ok((0, false)) };
    let cutoff = int(now_ms().saturating_sub(retention.as_millis() as u64));
    let mut total = 0;
    loop {
        let mut step = || -> rusqlite::Result<(usize, bool)> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The exporter's cursor: rows past it are not sent yet. Unreadable counts as 0.
            let cap: i64 = tx
                .query_row("SELECT value FROM meta WHERE key = ?1", [crate::export::USAGE_CURSOR], |r| {
                    r.get::<_, Option<String>>(0)
                })
                .optional()?
                .map_or(i64::MAX, |v| v.and_then(|v| v.parse().ok()).unwrap_or(0));
            let rows: Vec<(i64, i64)> = tx
                .prepare_cached("SELECT id, start_ms FROM usage WHERE id <= ?1 ORDER BY id LIMIT ?2")?
                .query_map(params![cap, PRUNE_CHUNK as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let old = rows.iter().take_while(|(_, start)| *start < cutoff).count();
            if old > 0 {
                tx.prepare_cached("DELETE FROM usage WHERE id <= ?1")?.execute([rows[old - 1].0])?;
            }
            tx.commit()?;
            Ok((old, old == PRUNE_CHUNK))
        };
        match step() {
            Ok((n, full)) => {
                total += n as u64;
                if !full {
                    return Ok((total, false));
                }
                if total >= max_rows {
                    return Ok((total, true));
                }
            }
            Err(e) => return Err((total, e)),
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
            match msg {
                // Closing: nothing is pruned; the caller learns none went.
                Msg::Prune(ack) => drop(ack.send(0)),
                msg => acks.extend(batch.take(msg, shared)),
            }
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
                                request_bytes, response_bytes, status, trigger, event_id, runtime, namespace,
                                memory_bytes, cpu_us, outbound_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
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
                crate::namespace_of(&r.function),
                int(r.memory_bytes),
                int(r.cpu_us),
                int(r.outbound_bytes),
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

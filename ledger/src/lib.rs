//! The node's usage ledger: exactly one record per invocation (with the runtime that ran it,
//! WebAssembly or container), and one per replica lifetime for replicas billed for the time they
//! stay up, in its own SQLite file (`DATA_DIR/ledger.db`, WAL) with versioned migrations and
//! hourly rollups for billing.
//!
//! Invocations hand records to a bounded queue ([`Ledger::record`], and [`Ledger::record_replica`]
//! when a replica stops, never block; a full queue drops the record and counts it). One writer
//! thread commits them in batches, raw rows and their hourly rollups in the same transaction, and
//! retries a batch that fails instead of dropping it. With [`Durability::Batched`] (the default)
//! records are committed every batch window with `synchronous=NORMAL`: a crash of the process loses
//! nothing committed, a power loss can lose the last window. With [`Durability::Sync`] the caller
//! can wait until its record is committed with `synchronous=FULL`.
//!
//! Reports ([`Ledger::report`]) read the rollups for totals (by source and by runtime), sum the
//! replica lifetimes per function off an index, and read the raw table for the newest records,
//! on a blocking thread with a connection of their own.
//!
//! Bills ([`Ledger::bill`]) price a calendar month of the rollups with the node's [`Pricing`];
//! retention ([`LedgerConfig::retention`]) prunes raw rows only, so totals and bills never
//! change when it runs.
//!
//! Shutdown: stop ingress, drain in-flight invocations, then [`Ledger::close`].

mod export;
mod pricing;
mod record;
mod report;
mod schema;
mod time;
mod writer;

pub use export::{
    BATCH_CONTENT_TYPE, ExportConfig, ExportStats, Exporter, MAX_BATCH as MAX_EXPORT_BATCH, SIGNATURE_HEADER,
    disable as disable_export, signature as export_signature,
};
pub use pricing::{
    Bill, BillLine, CurrencyTotal, KIB_MS_PER_GB_S, Metered, NamespaceTotal, Plan, Price, Pricing, PricingError,
    ROUNDING, amount_micros, decimal, format_micros,
};
pub use record::{Origin, Outcome, ReplicaUsage, Runtime, Source, UsageRecord};
pub use report::{GroupBy, StoredUsage, UsageBucket, UsageQuery, UsageReport, UsageSummary};
pub use time::{HOUR_MS, Period, ceil_hour, floor_hour, format_time, parse_time};

/// The namespace of functions whose id has none (`name` rather than `namespace/name`).
pub const DEFAULT_NAMESPACE: &str = "default";

/// The namespace of a function id: `namespace/name`, or a bare `name` in the default namespace.
pub fn namespace_of(function: &str) -> &str {
    split_function(function).0
}

/// (namespace, name) of a function id: `namespace/name`, or a bare `name` in the default namespace.
pub(crate) fn split_function(function: &str) -> (&str, &str) {
    function.split_once('/').unwrap_or((DEFAULT_NAMESPACE, function))
}

use rusqlite::Connection;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OnceCell, oneshot};
use writer::Msg;

/// Why opening the ledger or reading a report failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// SQLite failed.
    #[error("ledger database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The schema could not be brought up to date (or was written by a newer release).
    #[error("ledger schema migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// An I/O error (starting the writer thread, an unusable path).
    #[error("ledger: {0}")]
    Io(#[from] std::io::Error),
    /// The blocking task running a report panicked or was cancelled.
    #[error("ledger report task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// When a record counts as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Group commit every batch window, `synchronous=NORMAL` in WAL mode: survives a crash of
    /// the process; a crash of the machine can lose the last window. [`Ledger::record`]'s
    /// future is ready at once.
    #[default]
    Batched,
    /// [`Ledger::record`]'s future resolves only once its batch is committed with
    /// `synchronous=FULL`. Batches are not held back for a window: records that arrive while
    /// one commits share the next.
    Sync,
}

/// Ledger knobs.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Records queued for the writer at most (at least 1); beyond, new ones are dropped and
    /// counted in [`LedgerStats::dropped_total`].
    pub queue_capacity: usize,
    /// Records arriving within this window share one transaction (batched durability).
    pub batch_window: Duration,
    /// When a record counts as written.
    pub durability: Durability,
    /// How long a write waits for a lock held by another connection before the batch fails
    /// (and is retried); also how long the legacy import waits for the registry's lock on
    /// `wisp.db`. Lowered by tests.
    pub busy_timeout: Duration,
    /// Raw records older than this are pruned (rollups are kept, so no total changes); `None`
    /// keeps them forever.
    pub retention: Option<Duration>,
    /// How often the writer prunes when it has nothing else to do.
    pub prune_interval: Duration,
    /// The price plans bills are computed with.
    pub pricing: Pricing,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            batch_window: Duration::from_millis(20),
            durability: Durability::Batched,
            busy_timeout: Duration::from_secs(10),
            // The library keeps everything unless told; `wisp up` defaults to DEFAULT_RETENTION.
            retention: None,
            prune_interval: Duration::from_secs(600),
            pricing: Pricing::default(),
        }
    }
}

/// How long `wisp up` keeps raw records by default: a month and a few days to settle its bill from
/// them, should anyone want to recompute it.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(35 * 24 * 3600);

/// Queue and write counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerStats {
    /// Records waiting for the writer now.
    pub queue_depth: usize,
    /// The queue's capacity.
    pub queue_capacity: usize,
    /// Records (invocations and replica lifetimes) committed since open.
    pub written_total: u64,
    /// Records dropped because the queue was full or the ledger closed (billing lost them).
    pub dropped_total: u64,
    /// Batch writes that failed (each was retried; none was dropped).
    pub write_errors_total: u64,
}

/// State shared by the senders and the writer thread.
pub(crate) struct Shared {
    durability: Durability,
    batch_window: Duration,
    /// Records queued or about to be (raised before the send, see [`Ledger::record`]).
    depth: AtomicUsize,
    /// Set by close(): record() drops from then on.
    closed: AtomicBool,
    written: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    /// Woken each time the writer takes messages off the queue, for a flush waiting for room.
    room: Notify,
    retention: Option<Duration>,
    prune_every: Duration,
}

struct Inner {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    capacity: usize,
    path: PathBuf,
    busy_timeout: Duration,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Idle report connections, reused so a report does not reopen the file.
    readers: Mutex<Vec<Connection>>,
    pricing: Pricing,
    /// close() runs once; concurrent and later calls wait for that run.
    closed: OnceCell<()>,
    opened: Instant,
    /// When a drop was last logged, in ms since `opened` plus one (0: never).
    drop_logged_ms: AtomicU64,
}

/// The node's usage ledger: the sending side, the writer thread's handle, and reports. Cheap to
/// clone (an `Arc` inside).
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

/// Resolves when a record is committed ([`Durability::Sync`]), or at once ([`Durability::Batched`],
/// or when the record was dropped). Dropping it does not cancel the record.
#[derive(Debug)]
pub struct Committed(Option<oneshot::Receiver<()>>);

impl Future for Committed {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            None => Poll::Ready(()),
            // An error means the writer is gone (it answers every record it took); nothing is
            // left to wait for.
            Some(rx) => Pin::new(rx).poll(cx).map(|_| ()),
        }
    }
}

/// Idle report connections kept at most.
const MAX_IDLE_READERS: usize = 2;

impl Ledger {
    /// Opens (creating, migrating) `DATA_DIR/ledger.db`, imports the usage rows an older release
    /// kept in `DATA_DIR/wisp.db`, and starts the writer thread.
    pub fn open(data_dir: &Path, config: LedgerConfig) -> Result<Ledger, LedgerError> {
        let path = data_dir.join("ledger.db");
        let synchronous = match config.durability {
            Durability::Batched => "NORMAL",
            Durability::Sync => "FULL",
        };
        let mut conn = schema::open_writer(&path, synchronous, config.busy_timeout)?;
        schema::migrate(&mut conn)?;
        // Before the writer starts, so imported rows keep the oldest ids.
        let imported = schema::import_legacy(&mut conn, &data_dir.join("wisp.db"), config.busy_timeout)?;
        if imported > 0 {
            tracing::info!(records = imported, "usage ledger: imported the usage table from wisp.db");
        }
        let capacity = config.queue_capacity.max(1);
        let shared = Arc::new(Shared {
            durability: config.durability,
            batch_window: config.batch_window,
            depth: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            room: Notify::new(),
            retention: config.retention,
            prune_every: config.prune_interval,
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("wisp-ledger".into())
            .spawn(move || writer::run(conn, rx, &writer_shared))?;
        Ok(Ledger {
            inner: Arc::new(Inner {
                tx,
                shared,
                capacity,
                path,
                busy_timeout: config.busy_timeout,
                writer: Mutex::new(Some(writer)),
                readers: Mutex::new(Vec::new()),
                pricing: config.pricing,
                closed: OnceCell::new(),
                opened: Instant::now(),
                drop_logged_ms: AtomicU64::new(0),
            }),
        })
    }

    /// Never blocks: queues the record. Returns a future that resolves when the record is
    /// committed ([`Durability::Sync`]) or at once ([`Durability::Batched`]; no allocation then).
    /// If the queue is full, or the ledger closed, the record is dropped and counted (and
    /// logged, at most once a second), and the future resolves at once.
    pub fn record(&self, record: UsageRecord) -> Committed {
        self.enqueue(record, Msg::Record)
    }

    /// Queues one replica's lifetime, once the replica has stopped: through the same queue and
    /// writer as [`Ledger::record`], with the same durability, and dropped and counted the same
    /// way when the queue is full or the ledger closed.
    pub fn record_replica(&self, usage: ReplicaUsage) -> Committed {
        self.enqueue(usage, Msg::Replica)
    }

    /// The body of [`Ledger::record`] and [`Ledger::record_replica`].
    fn enqueue<T>(&self, item: T, make: fn(T, Option<oneshot::Sender<()>>) -> Msg) -> Committed {
        let inner = &*self.inner;
        let shared = &*inner.shared;
        // Raised before the check of `closed`: the writer's last drain waits for `depth` to
        // reach zero, so a call racing with close() either is written or sees `closed`.
        shared.depth.fetch_add(1, Ordering::SeqCst);
        if shared.closed.load(Ordering::SeqCst) {
            shared.depth.fetch_sub(1, Ordering::SeqCst);
            self.count_drop("the ledger is closed");
            return Committed(None);
        }
        let (ack, committed) = match shared.durability {
            Durability::Batched => (None, Committed(None)),
            Durability::Sync => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Committed(Some(rx)))
            }
        };
        let why = match inner.tx.try_send(make(item, ack)) {
            Ok(()) => return committed,
            Err(TrySendError::Full(_)) => "the queue is full",
            Err(TrySendError::Disconnected(_)) => "the writer has stopped",
        };
        shared.depth.fetch_sub(1, Ordering::SeqCst);
        self.count_drop(why);
        Committed(None)
    }

    fn count_drop(&self, why: &str) {
        let inner = &*self.inner;
        let total = inner.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // A burst of drops would otherwise log once per invocation, on the request path.
        let now = inner.opened.elapsed().as_millis() as u64 + 1;
        let last = inner.drop_logged_ms.load(Ordering::Relaxed);
        if (last == 0 || now >= last + 1000)
            && inner.drop_logged_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::error!(
                dropped_total = total,
                capacity = inner.capacity,
                "usage ledger: dropping usage records: {why} (logged at most once a second)"
            );
        }
    }

    /// Queues `msg` behind everything queued so far, waiting (asynchronously) for room. False if
    /// the writer has stopped.
    async fn send(&self, mut msg: Msg) -> bool {
        loop {
            // Registered before trying, so a wake-up between the try and the wait is not lost.
            let mut room = std::pin::pin!(self.inner.shared.room.notified());
            room.as_mut().enable();
            match self.inner.tx.try_send(msg) {
                Ok(()) => return true,
                Err(TrySendError::Full(back)) => {
                    msg = back;
                    room.await;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
    }

    /// Queues `msg` like [`Ledger::send`], then waits for the writer's answer. Returns at once if
    /// the writer has stopped.
    async fn send_and_wait(&self, make: fn(oneshot::Sender<()>) -> Msg) {
        let (ack, done) = oneshot::channel();
        if self.send(make(ack)).await {
            let _ = done.await;
        }
    }

    /// Resolves when every record queued before the call is committed. Does not block a
    /// thread; while writes fail (and are retried) it waits for them.
    pub async fn flush(&self) {
        self.send_and_wait(Msg::Flush).await;
    }

    /// Commits everything queued, stops and joins the writer thread. Idempotent; concurrent
    /// calls all wait for the one close. Records sent afterwards are dropped and counted.
    pub async fn close(&self) {
        self.inner
            .closed
            .get_or_init(|| async {
                self.inner.shared.closed.store(true, Ordering::SeqCst);
                self.send_and_wait(Msg::Close).await;
                let writer = self.inner.writer.lock().unwrap().take();
                if let Some(writer) = writer {
                    // The writer has answered and is returning; joining takes no time, but is
                    // still a blocking call.
                    if let Ok(Err(_)) = tokio::task::spawn_blocking(move || writer.join()).await {
                        tracing::error!("usage ledger: the writer thread panicked");
                    }
                }
            })
            .await;
    }

    /// Totals per function (from the hourly rollups, and replica time summed off an index),
    /// usage grouped by hour, day or function if asked, and the newest records. Runs SQLite on a
    /// blocking thread with a read connection of its own, never on the async worker. Does not
    /// flush: call [`Ledger::flush`] first to include records still queued. Works after close.
    pub async fn report(&self, query: UsageQuery) -> Result<UsageReport, LedgerError> {
        self.read(move |conn| report::report(conn, &query)).await
    }

    /// The bill of a calendar month (UTC), for one namespace or all: priced from the rollups
    /// with the node's plans, so pruning raw records never changes it. Does not flush.
    pub async fn bill(&self, period: Period, namespace: Option<String>) -> Result<Bill, LedgerError> {
        let inner = self.inner.clone();
        self.read(move |conn| report::bill(conn, &inner.pricing, period, namespace.as_deref())).await
    }

    /// The price plans bills are computed with.
    pub fn pricing(&self) -> &Pricing {
        &self.inner.pricing
    }

    /// Commits everything queued, then deletes every raw record past the retention now
    /// (the writer also does this periodically). Returns how many were deleted: 0 without a
    /// retention, or once the ledger is closed.
    pub async fn prune(&self) -> u64 {
        let (ack, done) = oneshot::channel();
        if !self.send(Msg::Prune(ack)).await {
            return 0;
        }
        done.await.unwrap_or(0)
    }

    /// Runs `f` on a blocking thread with an idle read connection (or a new one).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let idle = inner.readers.lock().unwrap().pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => schema::open_reader(&inner.path, inner.busy_timeout)?,
            };
            let out = f(&mut conn)?;
            let mut readers = inner.readers.lock().unwrap();
            if readers.len() < MAX_IDLE_READERS {
                readers.push(conn);
            }
            Ok(out)
        })
        .await?
    }

    /// Queue and write counters.
    pub fn stats(&self) -> LedgerStats {
        let inner = &*self.inner;
        let shared = &*inner.shared;
        LedgerStats {
            // Calls in the middle of record() count too; never report more than fits.
            queue_depth: shared.depth.load(Ordering::Relaxed).min(inner.capacity),
            queue_capacity: inner.capacity,
            written_total: shared.written.load(Ordering::Relaxed),
            dropped_total: shared.dropped.load(Ordering::Relaxed),
            write_errors_total: shared.write_errors.load(Ordering::Relaxed),
        }
    }
}

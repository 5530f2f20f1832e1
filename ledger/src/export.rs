//! Usage export: the ledger's raw tables are the durable outbox. A thread of its own reads the
//! rows past a cursor kept in `meta`, POSTs them to a webhook as one batch of CloudEvents
//! (`application/cloudevents-batch+json`, the format OpenMeter ingests as is) signed with
//! HMAC-SHA256, and moves the cursor only after a 2xx. Delivery is at least once: a failed POST
//! is retried with capped exponential backoff, and a node killed between the POST and the
//! cursor's commit sends that batch again after its restart, with the same event ids, so the
//! receiver can deduplicate (OpenMeter dedupes on `source` + `id`).
//!
//! Event ids are `{ledger id}-{row id}` (`-r{row id}` for replica lifetimes): the ledger id is a
//! random UUID stored in `meta` when the ledger is first exported, so ids stay unique even if a
//! ledger file is replaced by a new one. Raw-row retention never deletes rows past the cursor
//! while `meta.usage_export_cursor` exists; it exists exactly while an export is configured.

use crate::{LedgerError, schema, split_function};
use hmac::{Hmac, Mac};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use sha2::Sha256;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `meta` key of the highest invocation row exported (read by retention, see module docs).
pub const USAGE_CURSOR: &str = "usage_export_cursor";
/// The `meta` key of the highest replica-lifetime row exported.
const REPLICA_CURSOR: &str = "replica_export_cursor";
const LEDGER_ID: &str = "ledger_id";
/// The signature header: `sha256=<hex of HMAC-SHA256(key, body)>`, GitHub's and OpenFaaS's shape.
pub const SIGNATURE_HEADER: &str = "X-Wisp-Signature-256";
/// CloudEvents' batched JSON content type.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";
/// Largest batch: Lago's cap, and small enough for any receiver's body limit.
pub const MAX_BATCH: usize = 1000;

/// Where and how usage is exported.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// The webhook (http or https) that receives the batches.
    pub url: String,
    /// Signs each body with HMAC-SHA256 in [`SIGNATURE_HEADER`] when set.
    pub signing_key: Option<Vec<u8>>,
    /// Sent as `Authorization: Bearer` when set (OpenMeter Cloud, Lago and Stripe want one).
    pub bearer_token: Option<String>,
    /// The CloudEvents `source` of every event, e.g. `wisp://HOST`.
    pub source: String,
    /// Events per POST at most (1 to [`MAX_BATCH`]).
    pub batch_size: usize,
    /// How often the outbox is polled when it was empty.
    pub poll_interval: Duration,
    /// One POST's time limit (connect, send, answer).
    pub request_timeout: Duration,
    /// First wait after a failed POST; it doubles per failure up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl ExportConfig {
    /// Defaults for everything but the webhook.
    pub fn new(url: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            signing_key: None,
            bearer_token: None,
            source: source.into(),
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Counters of one exporter, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Events the webhook accepted (a batch re-sent after a crash counts again).
    pub exported_total: u64,
    /// POSTs that failed (transport error or a non-2xx answer); each was retried.
    pub failures_total: u64,
    /// Rows in the outbox not exported yet, as of the last poll.
    pub pending: u64,
}

#[derive(Debug, Default)]
struct Counters {
    exported: AtomicU64,
    failures: AtomicU64,
    pending: AtomicU64,
}

/// The running exporter: a thread that owns its own connection to `ledger.db`.
#[derive(Debug)]
pub struct Exporter {
    stop: Arc<(Mutex<bool>, Condvar)>,
    counters: Arc<Counters>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Stops exporting: no row is held for export, so retention may prune everything it covers.
/// Called at start when no export is configured.
pub fn disable(data_dir: &Path) -> Result<(), LedgerError> {
    let conn = open(&data_dir.join("ledger.db"))?;
    conn.execute("DELETE FROM meta WHERE key IN (?1, ?2)", params![USAGE_CURSOR, REPLICA_CURSOR])?;
    Ok(())
}

/// A connection of the exporter's own (the ledger is open, and migrated, before it starts).
fn open(path: &Path) -> Result<Connection, LedgerError> {
    schema::open_writer(path, "NORMAL", Duration::from_secs(10))
}

impl Exporter {
    /// Starts exporting the ledger in `data_dir` (open it with [`crate::Ledger::open`] first).
    /// Sets the cursors if they are not set, so retention holds every row from now on.
    pub fn start(data_dir: &Path, config: ExportConfig) -> Result<Exporter, LedgerError> {
        let conn = open(&data_dir.join("ledger.db"))?;
        for key in [USAGE_CURSOR, REPLICA_CURSOR] {
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, '0')", [key])?;
        }
        let fresh = uuid::Uuid::new_v4().to_string();
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)", params![LEDGER_ID, fresh])?;
        let ledger_id: String = conn.query_row("SELECT value FROM meta WHERE key = ?1", [LEDGER_ID], |r| r.get(0))?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let counters = Arc::new(Counters::default());
        let agent = ureq::AgentBuilder::new()
            .timeout(config.request_timeout)
            .redirects(0)
            .user_agent(concat!("wisp-usage-export/", env!("CARGO_PKG_VERSION")))
            .build();
        let mut worker = Worker { conn, config, ledger_id, agent, stop: stop.clone(), counters: counters.clone() };
        let thread = std::thread::Builder::new().name("wisp-export".into()).spawn(move || worker.run())?;
        Ok(Exporter { stop, counters, thread: Mutex::new(Some(thread)) })
    }

    pub fn stats(&self) -> ExportStats {
        let c = &self.counters;
        ExportStats {
            exported_total: c.exported.load(Ordering::Relaxed),
            failures_total: c.failures.load(Ordering::Relaxed),
            pending: c.pending.load(Ordering::Relaxed),
        }
    }

    /// Stops the thread after the POST in flight, if any (bounded by the request timeout).
    /// What is not exported yet stays in the outbox for the next start. Blocks: call it on a
    /// blocking thread.
    pub fn stop(&self) {
        self.signal_stop();
        let thread = self.thread.lock().unwrap().take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    fn signal_stop(&self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap() = true;
        wake.notify_all();
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// One kind of exported row: its table, cursor and event type.
#[derive(Clone, Copy)]
enum Kind {
    Invocation,
    Replica,
}

impl Kind {
    fn cursor(self) -> &'static str {
        match self {
            Kind::Invocation => USAGE_CURSOR,
            Kind::Replica => REPLICA_CURSOR,
        }
    }

    fn table(self) -> &'static str {
        match self {
            Kind::Invocation => "usage",
            Kind::Replica => "replica_usage",
        }
    }
}

struct Worker {
    conn: Connection,
    config: ExportConfig,
    ledger_id: String,
    agent: ureq::Agent,
    stop: Arc<(Mutex<bool>, Condvar)>,
    counters: Arc<Counters>,
}

impl Worker {
    fn run(&mut self) {
        let mut backoff = self.config.min_backoff;
        loop {
            let wait = match self.export_once() {
                Ok(true) => {
                    backoff = self.config.min_backoff;
                    Duration::ZERO
                }
                Ok(false) => {
                    backoff = self.config.min_backoff;
                    self.config.poll_interval
                }
                Err(e) => {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = %self.config.url, retry_in = ?backoff, "usage export: {e}");
                    let wait = jitter(backoff);
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    wait
                }
            };
            let (stopped, wake) = &*self.stop;
            let guard = stopped.lock().unwrap();
            let (guard, _) = wake.wait_timeout_while(guard, wait, |stopped| !*stopped).unwrap();
            if *guard {
                return;
            }
        }
    }

    /// Sends one batch if there is one. `Ok(true)`: a batch went out (look again at once).
    fn export_once(&mut self) -> Result<bool, ExportError> {
        // Before the POST too: while the webhook fails, the backlog still shows.
        self.update_pending()?;
        for kind in [Kind::Invocation, Kind::Replica] {
            let (events, last) = self.read_batch(kind)?;
            if events.is_empty() {
                continue;
            }
            let n = events.len() as u64;
            self.post(&Value::Array(events))?;
            self.conn.execute("UPDATE meta SET value = ?2 WHERE key = ?1", params![kind.cursor(), last.to_string()])?;
            self.counters.exported.fetch_add(n, Ordering::Relaxed);
            return Ok(true);
        }
        Ok(false)
    }

    fn cursor(&self, kind: Kind) -> Result<i64, ExportError> {
        let value: Option<String> =
            self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [kind.cursor()], |r| r.get(0)).optional()?;
        Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    fn update_pending(&self) -> Result<(), ExportError> {
        let mut pending = 0i64;
        for kind in [Kind::Invocation, Kind::Replica] {
            let cursor = self.cursor(kind)?;
            // Row ids grow by one per insert, so the gap to the newest id is the backlog
            // (an index lookup, not a count).
            let newest: i64 =
                self.conn.query_row(&format!("SELECT COALESCE(MAX(id), 0) FROM {}", kind.table()), [], |r| r.get(0))?;
            pending += (newest - cursor).max(0);
        }
        self.counters.pending.store(pending as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The next batch past the cursor, as CloudEvents, and the last row id in it.
    fn read_batch(&self, kind: Kind) -> Result<(Vec<Value>, i64), ExportError> {
        let cursor = self.cursor(kind)?;
        let limit = self.config.batch_size.clamp(1, MAX_BATCH) as i64;
        let (source, ledger) = (&self.config.source, &self.ledger_id);
        let mut events = Vec::new();
        let mut last = cursor;
        match kind {
            Kind::Invocation => {
                let mut stmt = self.conn.prepare_cached(
                    "SELECT id, function, revision, source, start_ms, wall_us, cold, peak_memory_bytes, outcome,
                            request_bytes, response_bytes, status, trigger, event_id, runtime, memory_bytes,
                            cpu_us, outbound_bytes
                     FROM usage WHERE id > ?1 ORDER BY id LIMIT ?2",
                )?;
                let mut rows = stmt.query(params![cursor, limit])?;
                while let Some(r) = rows.next()? {
                    let id: i64 = r.get(0)?;
                    let function: String = r.get(1)?;
                    let (namespace, name) = split_function(&function);
                    let wall_us: i64 = r.get(5)?;
                    let memory_bytes: i64 = r.get(15)?;
                    let mut data = json!({
                        "namespace": namespace,
                        "function": name,
                        "revision": r.get::<_, i64>(2)?,
                        "source": r.get::<_, String>(3)?,
                        "runtime": r.get::<_, String>(14)?,
                        "outcome": r.get::<_, String>(8)?,
                        "status": r.get::<_, i64>(11)?,
                        "cold_start": r.get::<_, i64>(6)? != 0,
                        "duration_us": wall_us,
                        // Lambda's rounding: every started millisecond.
                        "billed_ms": (wall_us + 999) / 1000,
                        "memory_mb": memory_bytes >> 20,
                        "cpu_us": r.get::<_, i64>(16)?,
                        "peak_memory_bytes": r.get::<_, i64>(7)?,
                        "bytes_in": r.get::<_, i64>(9)?,
                        "bytes_out": r.get::<_, i64>(10)?,
                        "outbound_bytes": r.get::<_, i64>(17)?,
                    });
                    if let Some(trigger) = r.get::<_, Option<String>>(12)? {
                        data["trigger"] = trigger.into();
                    }
                    if let Some(event) = r.get::<_, Option<String>>(13)? {
                        data["event_id"] = event.into();
                    }
                    let time = rfc3339(r.get::<_, i64>(4)?);
                    events.push(event("dev.wisp.invocation", source, format!("{ledger}-{id}"), namespace, time, data));
                    last = id;
                }
            }
            Kind::Replica => {
                let mut stmt = self.conn.prepare_cached(
                    "SELECT id, function, revision, replica, start_ms, end_ms, cpu_ms
                     FROM replica_usage WHERE id > ?1 ORDER BY id LIMIT ?2",
                )?;
                let mut rows = stmt.query(params![cursor, limit])?;
                while let Some(r) = rows.next()? {
                    let id: i64 = r.get(0)?;
                    let function: String = r.get(1)?;
                    let (namespace, name) = split_function(&function);
                    let (start_ms, end_ms): (i64, i64) = (r.get(4)?, r.get(5)?);
                    let data = json!({
                        "namespace": namespace,
                        "function": name,
                        "revision": r.get::<_, i64>(2)?,
                        "replica": r.get::<_, String>(3)?,
                        "start_ms": start_ms,
                        "end_ms": end_ms,
                        "duration_ms": (end_ms - start_ms).max(0),
                        "cpu_ms": r.get::<_, i64>(6)?,
                    });
                    let time = rfc3339(end_ms);
                    events.push(event("dev.wisp.replica", source, format!("{ledger}-r{id}"), namespace, time, data));
                    last = id;
                }
            }
        }
        Ok((events, last))
    }

    fn post(&self, batch: &Value) -> Result<(), ExportError> {
        let body = serde_json::to_vec(batch).expect("serializing JSON");
        let mut req = self.agent.post(&self.config.url).set("Content-Type", BATCH_CONTENT_TYPE);
        if let Some(key) = &self.config.signing_key {
            req = req.set(SIGNATURE_HEADER, &signature(key, &body));
        }
        if let Some(token) = &self.config.bearer_token {
            req = req.set("Authorization", &format!("Bearer {token}"));
        }
        match req.send_bytes(&body) {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(status, resp)) => {
                let mut text = resp.into_string().unwrap_or_default();
                text.truncate(200);
                Err(ExportError::Rejected { status, body: text })
            }
            Err(e) => Err(ExportError::Transport(e.to_string())),
        }
    }
}

/// `sha256=<hex>` of HMAC-SHA256(`key`, `body`): what [`SIGNATURE_HEADER`] carries.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn event(kind: &str, source: &str, id: String, subject: &str, time: String, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "type": kind,
        "source": source,
        "id": id,
        "subject": subject,
        "time": time,
        "datacontenttype": "application/json",
        "data": data,
    })
}

fn rfc3339(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

/// Up to a quarter more, so nodes that failed together do not retry together.
fn jitter(wait: Duration) -> Duration {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    wait + wait.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("the webhook answered {status}: {body}")]
    Rejected { status: u16, body: String },
    #[error("posting to the webhook: {0}")]
    Transport(String),
    #[error("reading the outbox: {0}")]
    Db(#[from] rusqlite::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let sig = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn functions_split_into_namespace_and_name() {
        assert_eq!(split_function("hello"), ("default", "hello"));
        assert_eq!(split_function("team/api"), ("team", "api"));
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}

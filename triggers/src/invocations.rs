//! Async invocations (OpenFaaS's `/async-function`): a request is stored durably in
//! `DATA_DIR/invocations.db` before its 202 is answered, then run at-least-once through the
//! scheduler's invoke path with a retry policy, its result kept for `GET /v1/invocations/{id}`,
//! and the function's response POSTed to an optional callback URL by the node. Everything not
//! finished (run or callback) is resumed at the next start, so a 202 survives a kill -9.
//!
//! Writes go through one thread that commits whatever is queued in one transaction (group
//! commit): each 202 waits for its own fsync, but concurrent submits share one.

use crate::delivery::{DeliverySpec, retryable};
use crate::dispatch::{Dispatcher, Failure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use rusqlite_migration::{M, Migrations};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wisp_ledger::Source;
use wisp_scheduler::Scheduler;

const MIGRATIONS: &[M<'static>] = &[M::up(
    "CREATE TABLE invocations (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        function TEXT NOT NULL,
        method TEXT NOT NULL,
        uri TEXT NOT NULL,
        headers TEXT NOT NULL,
        body BLOB NOT NULL,
        callback_url TEXT,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at_ms INTEGER NOT NULL,
        finished_at_ms INTEGER,
        status INTEGER,
        response_headers TEXT,
        response_body BLOB,
        error TEXT,
        callback_state TEXT,
        callback_status INTEGER,
        callback_attempts INTEGER NOT NULL DEFAULT 0
     );
     -- What a start resumes, in submission order.
     CREATE INDEX invocations_unfinished ON invocations (seq)
        WHERE state IN ('queued', 'running', 'retrying') OR callback_state = 'pending';
     CREATE INDEX invocations_finished ON invocations (finished_at_ms) WHERE finished_at_ms IS NOT NULL;",
)];

/// Submits committed in one transaction at most.
const MAX_BATCH: usize = 1024;
/// How often finished invocations past their retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Async invocation knobs; each has a `wisp up` flag.
#[derive(Debug, Clone)]
pub struct InvocationsConfig {
    /// Async invocations running at once, node-wide.
    pub concurrency: usize,
    /// Retries, backoff and per-attempt timeout (also used for callbacks).
    pub delivery: DeliverySpec,
    /// How long a finished invocation's result is kept.
    pub retention: Duration,
    /// How long shutdown waits for running invocations before leaving them to the next start.
    pub drain: Duration,
}

impl Default for InvocationsConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            delivery: DeliverySpec { timeout_ms: 300_000, ..DeliverySpec::default() },
            retention: Duration::from_secs(24 * 3600),
            drain: Duration::from_secs(10),
        }
    }
}

/// Why an async invocation could not be accepted or read.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// `X-Callback-Url` is not an `http://` URL.
    #[error("invalid X-Callback-Url {0:?}: must be an absolute http:// URL")]
    Callback(String),
    /// No such invocation (or it was pruned).
    #[error("invocation {0:?} not found")]
    NotFound(String),
    /// The store failed.
    #[error("invocation store: {0}")]
    Store(String),
}

impl From<rusqlite::Error> for InvocationError {
    fn from(e: rusqlite::Error) -> Self {
        InvocationError::Store(e.to_string())
    }
}

/// Where an invocation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvocationState {
    /// Stored, waiting for a slot.
    Queued,
    /// An attempt is running.
    Running,
    /// An attempt failed; waiting for the next.
    Retrying,
    /// The function answered 2xx.
    Succeeded,
    /// The last attempt failed, or the function's answer was final and not 2xx.
    Failed,
}

impl InvocationState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "retrying" => Self::Retrying,
            "succeeded" => Self::Succeeded,
            _ => Self::Failed,
        }
    }
}

/// An invocation as `GET /v1/invocations/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationView {
    /// Its id (a UUIDv7, so ids sort by submission time).
    pub id: String,
    /// The function.
    pub function: String,
    /// See [`InvocationState`].
    pub state: InvocationState,
    /// Attempts made so far.
    pub attempts: u32,
    /// Submitted, Unix ms.
    pub created_at_ms: u64,
    /// Finished (succeeded or failed), Unix ms.
    pub finished_at_ms: Option<u64>,
    /// The function's last status (0: it produced no response).
    pub status: Option<u16>,
    /// The function's last response headers.
    pub response_headers: Option<Vec<(String, String)>>,
    /// The last response body, when it is UTF-8.
    pub response_body: Option<String>,
    /// The last response body, base64, when it is not UTF-8.
    pub response_body_base64: Option<String>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// The callback, when one was asked for.
    pub callback: Option<CallbackView>,
}

/// The callback's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackView {
    /// Where the response is sent.
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// The callback receiver's last status.
    pub status: Option<u16>,
    /// Attempts made.
    pub attempts: u32,
}

/// One write for the writer thread.
enum Write {
    Insert(Box<NewInvocation>),
    Attempt {
        id: String,
        attempts: u32,
        state: InvocationState,
        error: Option<String>,
    },
    Finish(Box<Finished>),
    Callback {
        id: String,
        state: &'static str,
        status: Option<u16>,
        attempts: u32,
    },
    Prune {
        before_ms: u64,
    },
    /// Nothing: answered once everything queued before it is committed.
    Flush,
}

struct NewInvocation {
    id: String,
    function: String,
    method: String,
    uri: String,
    headers: String,
    body: Bytes,
    callback_url: Option<String>,
    created_at_ms: u64,
}

struct Finished {
    id: String,
    state: InvocationState,
    attempts: u32,
    status: u16,
    headers: String,
    body: Bytes,
    error: Option<String>,
    callback_pending: bool,
}

type Ack = oneshot::Sender<Result<(), String>>;

/// The node's async invocations. Cheap to clone.
#[derive(Clone)]
pub struct Invocations {
    inner: Arc<Inner>,
}

struct Inner {
    scheduler: Scheduler,
    config: InvocationsConfig,
    writer: std::sync::mpsc::Sender<(Write, Option<Ack>)>,
    reader: Mutex<Connection>,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
    tasks: TaskTracker,
    client: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn open(path: &Path) -> Result<Connection, InvocationError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // A 202 promises the request survives a power cut.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Migrations::from_slice(MIGRATIONS).to_latest(&mut conn).map_err(|e| InvocationError::Store(e.to_string()))?;
    Ok(conn)
}

impl Invocations {
    /// Opens (creating) `invocations.db` in `data_dir` and resumes every unfinished invocation
    /// and callback. Needs a tokio runtime.
    pub fn open(data_dir: &Path, scheduler: Scheduler, config: InvocationsConfig) -> Result<Self, InvocationError> {
        let path: PathBuf = data_dir.join("invocations.db");
        let conn = open(&path)?;
        let reader = open(&path)?;
        let (writer, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("wisp-invocations".into())
            .spawn(move || write_loop(conn, rx))
            .map_err(|e| InvocationError::Store(format!("starting the writer: {e}")))?;
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        let invocations = Self {
            inner: Arc::new(Inner {
                scheduler,
                slots: Arc::new(Semaphore::new(config.concurrency.max(1))),
                config,
                writer,
                reader: Mutex::new(reader),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
                client,
            }),
        };
        let unfinished: Vec<(String, bool)> = {
            let conn = invocations.inner.reader.lock().unwrap();
            let mut stmt = conn.prepare(
                "SELECT id, state IN ('queued', 'running', 'retrying') FROM invocations
                 WHERE state IN ('queued', 'running', 'retrying') OR callback_state = 'pending' ORDER BY seq",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
        };
        if !unfinished.is_empty() {
            tracing::info!(count = unfinished.len(), "resuming async invocations");
        }
        for (id, run) in unfinished {
            invocations.spawn(id, run);
        }
        invocations.spawn_pruner();
        Ok(invocations)
    }

    async fn write(&self, write: Write) -> Result<(), InvocationError> {
        let (ack, done) = oneshot::channel();
        self.inner.writer.send((write, Some(ack))).map_err(|_| InvocationError::Store("writer stopped".into()))?;
        done.await.map_err(|_| InvocationError::Store("writer stopped".into()))?.map_err(InvocationError::Store)
    }

    /// Stores a request for `function` durably and schedules it; the returned id is valid for
    /// `GET /v1/invocations/{id}` once this returns. The caller checked that the function exists
    /// and read the body within its limit.
    pub async fn submit(
        &self,
        function: &str,
        parts: &http::request::Parts,
        body: Bytes,
        callback_url: Option<String>,
    ) -> Result<String, InvocationError> {
        if let Some(url) = &callback_url {
            check_callback(url)?;
        }
        let id = uuid::Uuid::now_v7().to_string();
        let headers: Vec<(&str, String)> = parts
            .headers
            .iter()
            .filter(|(name, _)| !is_hop_by_hop(name.as_str()))
            .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        let row = NewInvocation {
            id: id.clone(),
            function: function.to_string(),
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: serde_json::to_string(&headers).expect("headers serialize"),
            body,
            callback_url,
            created_at_ms: now_ms(),
        };
        self.write(Write::Insert(Box::new(row))).await?;
        self.spawn(id.clone(), true);
        Ok(id)
    }

    /// One invocation's state and result.
    pub async fn get(&self, id: &str) -> Result<InvocationView, InvocationError> {
        let inner = self.inner.clone();
        let owned = id.to_string();
        tokio::task::spawn_blocking(move || read_view(&inner.reader.lock().unwrap(), &owned))
            .await
            .map_err(|e| InvocationError::Store(e.to_string()))?
    }

    /// Stops taking work; running invocations get `drain` to finish, the rest resume at the next
    /// start. Returns when the writer has committed everything.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(self.inner.config.drain, self.inner.tasks.wait()).await.is_err() {
            tracing::warn!("shutdown: async invocations still running; they resume at the next start");
        }
        let _ = self.write(Write::Flush).await;
    }

    fn spawn(&self, id: String, run: bool) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let stop = this.inner.stop.clone();
            let Ok(_slot) = (tokio::select! {
                slot = this.inner.slots.clone().acquire_owned() => slot,
                _ = stop.cancelled() => return,
            }) else {
                return;
            };
            if let Err(e) = this.process(&id, run).await {
                tracing::warn!(invocation = %id, "async invocation: {e}");
            }
        });
    }

    fn spawn_pruner(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let before_ms = now_ms().saturating_sub(this.inner.config.retention.as_millis() as u64);
                let _ = this.write(Write::Prune { before_ms }).await;
                tokio::select! {
                    _ = this.inner.stop.cancelled() => return,
                    _ = tokio::time::sleep(PRUNE_EVERY) => {}
                }
            }
        });
    }

    /// Runs (if `run`) and then calls back: the at-least-once unit of one invocation.
    async fn process(&self, id: &str, run: bool) -> Result<(), InvocationError> {
        let stored = self.stored(id).await?;
        let finished = if run { self.run(&stored).await? } else { stored.result.clone() };
        let (Some(url), Some(result)) = (&stored.callback_url, finished) else { return Ok(()) };
        self.call_back(id, &stored.function, url, &result, stored.callback_attempts).await
    }

    async fn stored(&self, id: &str) -> Result<Stored, InvocationError> {
        let inner = self.inner.clone();
        let owned = id.to_string();
        tokio::task::spawn_blocking(move || read_stored(&inner.reader.lock().unwrap(), &owned))
            .await
            .map_err(|e| InvocationError::Store(e.to_string()))?
    }

    /// Attempts the invocation until it succeeds, fails for good, or the node stops (then it
    /// stays unfinished and resumes at the next start). Every attempt is persisted.
    async fn run(&self, stored: &Stored) -> Result<Option<Outcome>, InvocationError> {
        let delivery = self.inner.config.delivery;
        let dispatcher = Dispatcher::new(self.inner.scheduler.clone(), &stored.function, Source::Async, delivery, None);
        let mut attempts = stored.attempts;
        loop {
            attempts += 1;
            self.write(Write::Attempt {
                id: stored.id.clone(),
                attempts,
                state: InvocationState::Running,
                error: None,
            })
            .await?;
            let request = stored.request()?;
            let failure = tokio::select! {
                result = dispatcher.attempt(&stored.id, request) => match result {
                    Ok(response) => {
                        return self.finish(stored, InvocationState::Succeeded, attempts, response.status().as_u16(), Some(response), None).await;
                    }
                    Err(failure) => failure,
                },
                // Past the drain: leave it `running`; the next start runs it again.
                _ = cancelled_after(&self.inner.stop, self.inner.config.drain) => return Ok(None),
            };
            let Failure { status, data, response, .. } = failure;
            if !retryable(status) || attempts > delivery.retries {
                return self.finish(stored, InvocationState::Failed, attempts, status, response, Some(data)).await;
            }
            self.write(Write::Attempt {
                id: stored.id.clone(),
                attempts,
                state: InvocationState::Retrying,
                error: Some(data),
            })
            .await?;
            tokio::select! {
                _ = self.inner.stop.cancelled() => return Ok(None),
                _ = tokio::time::sleep(delivery.backoff(attempts - stored.attempts)) => {}
            }
        }
    }

    async fn finish(
        &self,
        stored: &Stored,
        state: InvocationState,
        attempts: u32,
        status: u16,
        response: Option<http::Response<Bytes>>,
        error: Option<String>,
    ) -> Result<Option<Outcome>, InvocationError> {
        let (headers, body) = match response {
            Some(r) => {
                let (parts, body) = r.into_parts();
                (header_pairs(&parts.headers), body)
            }
            None => (Vec::new(), Bytes::new()),
        };
        let finished = Finished {
            id: stored.id.clone(),
            state,
            attempts,
            status,
            headers: serde_json::to_string(&headers).expect("headers serialize"),
            body: body.clone(),
            error,
            callback_pending: stored.callback_url.is_some(),
        };
        self.write(Write::Finish(Box::new(finished))).await?;
        Ok(Some(Outcome { status, headers, body }))
    }

    /// POSTs the function's response to the callback URL (the node sends it, not the guest),
    /// retrying like an invocation; the outcome is persisted either way.
    async fn call_back(
        &self,
        id: &str,
        function: &str,
        url: &str,
        result: &Outcome,
        mut attempts: u32,
    ) -> Result<(), InvocationError> {
        let delivery = self.inner.config.delivery;
        let first = attempts;
        loop {
            attempts += 1;
            let request = callback_request(id, function, url, result)?;
            let sent = tokio::time::timeout(delivery.timeout(), self.inner.client.request(request)).await;
            let status = match sent {
                Ok(Ok(response)) => {
                    let status = response.status().as_u16();
                    // Read the answer so the connection can be reused.
                    let _ = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect()).await;
                    status
                }
                _ => 0,
            };
            let done = (200..300).contains(&status);
            if done || !retryable(status) || attempts - first > delivery.retries {
                let state = if done { "delivered" } else { "failed" };
                let status = (status != 0).then_some(status);
                return self.write(Write::Callback { id: id.to_string(), state, status, attempts }).await;
            }
            self.write(Write::Callback { id: id.to_string(), state: "pending", status: None, attempts }).await?;
            tokio::select! {
                _ = self.inner.stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(delivery.backoff(attempts - first)) => {}
            }
        }
    }
}

/// Completes `drain` after `stop` is cancelled (never, until then).
async fn cancelled_after(stop: &CancellationToken, drain: Duration) {
    stop.cancelled().await;
    tokio::time::sleep(drain).await;
}

/// The function's final answer, as the callback carries it.
#[derive(Clone)]
struct Outcome {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
}

fn callback_request(
    id: &str,
    function: &str,
    url: &str,
    result: &Outcome,
) -> Result<http::Request<Full<Bytes>>, InvocationError> {
    let mut builder = http::Request::post(url)
        .header("x-wisp-invocation-id", id)
        .header("x-wisp-function", function)
        .header("x-wisp-function-status", result.status.to_string())
        // OpenFaaS's names, so receivers written for its async callbacks work unchanged.
        .header("x-call-id", id)
        .header("x-function-name", function)
        .header("x-function-status", result.status.to_string());
    if let Some((_, ct)) = result.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
        builder = builder.header(http::header::CONTENT_TYPE, ct.as_str());
    }
    builder.body(Full::new(result.body.clone())).map_err(|e| InvocationError::Callback(format!("{url}: {e}")))
}

fn check_callback(url: &str) -> Result<(), InvocationError> {
    let uri: http::Uri = url.parse().map_err(|_| InvocationError::Callback(url.to_string()))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(InvocationError::Callback(url.to_string()));
    }
    Ok(())
}

/// Connection-level headers are not part of the stored request.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "upgrade"
            | "proxy-connection"
            | "prefer"
            | "x-callback-url"
    )
}

fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers.iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}

/// What a worker needs of a stored invocation.
struct Stored {
    id: String,
    function: String,
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    callback_url: Option<String>,
    attempts: u32,
    callback_attempts: u32,
    result: Option<Outcome>,
}

impl Stored {
    fn request(&self) -> Result<http::Request<Full<Bytes>>, InvocationError> {
        let mut builder = http::Request::builder().method(self.method.as_str()).uri(self.uri.as_str());
        for (k, v) in &self.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        builder.body(Full::new(self.body.clone())).map_err(|e| InvocationError::Store(format!("stored request: {e}")))
    }
}

fn read_stored(conn: &Connection, id: &str) -> Result<Stored, InvocationError> {
    conn.query_row(
        "SELECT id, function, method, uri, headers, body, callback_url, attempts, callback_attempts,
                state, status, response_headers, response_body
         FROM invocations WHERE id = ?1",
        [id],
        |r| {
            let headers: String = r.get(4)?;
            let state = InvocationState::parse(&r.get::<_, String>(9)?);
            let finished = matches!(state, InvocationState::Succeeded | InvocationState::Failed);
            let result = if finished {
                let headers: Option<String> = r.get(11)?;
                Some(Outcome {
                    status: r.get::<_, Option<u16>>(10)?.unwrap_or(0),
                    headers: headers.and_then(|h| serde_json::from_str(&h).ok()).unwrap_or_default(),
                    body: Bytes::from(r.get::<_, Option<Vec<u8>>>(12)?.unwrap_or_default()),
                })
            } else {
                None
            };
            Ok(Stored {
                id: r.get(0)?,
                function: r.get(1)?,
                method: r.get(2)?,
                uri: r.get(3)?,
                headers: serde_json::from_str(&headers).unwrap_or_default(),
                body: Bytes::from(r.get::<_, Vec<u8>>(5)?),
                callback_url: r.get(6)?,
                attempts: r.get(7)?,
                callback_attempts: r.get(8)?,
                result,
            })
        },
    )
    .optional()?
    .ok_or_else(|| InvocationError::NotFound(id.to_string()))
}

fn read_view(conn: &Connection, id: &str) -> Result<InvocationView, InvocationError> {
    use base64::Engine;
    conn.query_row(
        "SELECT id, function, state, attempts, created_at_ms, finished_at_ms, status, response_headers, response_body,
                error, callback_url, callback_state, callback_status, callback_attempts
         FROM invocations WHERE id = ?1",
        [id],
        |r| {
            let body: Option<Vec<u8>> = r.get(8)?;
            let (text, base64) = match body {
                None => (None, None),
                Some(b) => match String::from_utf8(b) {
                    Ok(s) => (Some(s), None),
                    Err(e) => (None, Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes()))),
                },
            };
            let headers: Option<String> = r.get(7)?;
            let callback = r.get::<_, Option<String>>(10)?.map(|url| CallbackView {
                url,
                state: r.get::<_, Option<String>>(11).ok().flatten().unwrap_or_else(|| "pending".into()),
                status: r.get(12).ok().flatten(),
                attempts: r.get(13).unwrap_or(0),
            });
            Ok(InvocationView {
                id: r.get(0)?,
                function: r.get(1)?,
                state: InvocationState::parse(&r.get::<_, String>(2)?),
                attempts: r.get(3)?,
                created_at_ms: r.get(4)?,
                finished_at_ms: r.get(5)?,
                status: r.get(6)?,
                response_headers: headers.and_then(|h| serde_json::from_str(&h).ok()),
                response_body: text,
                response_body_base64: base64,
                error: r.get(9)?,
                callback,
            })
        },
    )
    .optional()?
    .ok_or_else(|| InvocationError::NotFound(id.to_string()))
}

/// The writer thread: every write queued while the last transaction committed goes into the
/// next one; each waiter is answered after its transaction is durable.
fn write_loop(mut conn: Connection, rx: std::sync::mpsc::Receiver<(Write, Option<Ack>)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let result = commit(&mut conn, batch.iter().map(|(w, _)| w)).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!("invocation store: {e}");
        }
        tracing::trace!(writes = batch.len(), elapsed = ?started.elapsed(), "invocations committed");
        for (_, ack) in batch {
            if let Some(ack) = ack {
                let _ = ack.send(result.clone());
            }
        }
    }
}

fn commit<'a>(conn: &mut Connection, writes: impl Iterator<Item = &'a Write>) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for write in writes {
        match write {
            Write::Insert(n) => {
                tx.prepare_cached(
                    "INSERT INTO invocations (id, function, method, uri, headers, body, callback_url, state, created_at_ms,
                                              callback_state)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, NULL)",
                )?
                .execute(params![n.id, n.function, n.method, n.uri, n.headers, &n.body[..], n.callback_url, n.created_at_ms])?;
            }
            Write::Attempt { id, attempts, state, error } => {
                tx.prepare_cached(
                    "UPDATE invocations SET attempts = ?2, state = ?3, error = COALESCE(?4, error) WHERE id = ?1",
                )?
                .execute(params![id, attempts, state.as_str(), error])?;
            }
            Write::Finish(f) => {
                tx.prepare_cached(
                    "UPDATE invocations SET state = ?2, attempts = ?3, status = ?4, response_headers = ?5,
                            response_body = ?6, error = ?7, finished_at_ms = ?8,
                            callback_state = CASE WHEN ?9 THEN 'pending' ELSE NULL END
                     WHERE id = ?1",
                )?
                .execute(params![
                    f.id,
                    f.state.as_str(),
                    f.attempts,
                    f.status,
                    f.headers,
                    &f.body[..],
                    f.error,
                    now_ms(),
                    f.callback_pending
                ])?;
            }
            Write::Callback { id, state, status, attempts } => {
                tx.prepare_cached(
                    "UPDATE invocations SET callback_state = ?2, callback_status = COALESCE(?3, callback_status),
                            callback_attempts = ?4 WHERE id = ?1",
                )?
                .execute(params![id, state, status, attempts])?;
            }
            Write::Prune { before_ms } => {
                tx.prepare_cached(
                    "DELETE FROM invocations WHERE finished_at_ms IS NOT NULL AND finished_at_ms < ?1
                       AND (callback_state IS NULL OR callback_state != 'pending')",
                )?
                .execute([before_ms])?;
            }
            Write::Flush => {}
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_must_be_http_urls() {
        assert!(check_callback("http://127.0.0.1:8080/done").is_ok());
        for bad in ["https://example.com/x", "/relative", "ftp://x/", "not a url"] {
            assert!(check_callback(bad).is_err(), "{bad}");
        }
    }
}

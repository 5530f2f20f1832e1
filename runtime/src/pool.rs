//! A revision's pool of pre-instantiated instances. The request path pops a ready instance
//! (or instantiates on demand when none is left: a cold start); a background task refills the
//! pool up to its target. One instance serves one request and is then dropped.

use crate::engine::{Compiled, Shared};
use crate::host::{DenyOutbound, Host, MemoryMeter};
use crate::logs::LogStream;
use crate::{DeployError, Limits, LogBuffer};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RevisionId {
    pub function: Arc<str>,
    pub revision: u64,
}

/// A running revision: its limits, logs and instance pool. Cheap to clone.
#[derive(Clone)]
pub struct Revision {
    pub(crate) inner: Arc<PoolInner>,
}

/// A snapshot of a pool for scaling decisions and metrics.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub ready: usize,
    pub target: usize,
    pub in_flight: usize,
    pub invocations: u64,
    pub cold_starts: u64,
    /// Time since the last request started (or since the pool started, if none has).
    pub idle_for: Duration,
}

pub(crate) struct PoolInner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: RevisionId,
    pre: ProxyPre<Host>,
    pub(crate) limits: Limits,
    logs: Arc<LogBuffer>,
    ready: Mutex<Vec<Ready>>,
    /// Finished stores, dropped by the refill task: returning a slot to the pool (and resetting
    /// its memory) happens off the response path, right before the slot is reused.
    finished: Mutex<Vec<Store<Host>>>,
    target: AtomicUsize,
    refill: Arc<Notify>,
    pub(crate) in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    pub(crate) invocations: AtomicU64,
    pub(crate) cold_starts: AtomicU64,
    started: Instant,
    /// Milliseconds after `started` when the last request arrived.
    last_request_ms: AtomicU64,
}

/// An instance created ahead of its request.
pub(crate) struct Ready {
    pub(crate) store: Store<Host>,
    pub(crate) proxy: Proxy,
}

impl Revision {
    pub(crate) fn start(
        shared: Arc<Shared>,
        id: RevisionId,
        compiled: Compiled,
        limits: Limits,
        logs: Arc<LogBuffer>,
    ) -> Self {
        let refill = Arc::new(Notify::new());
        let inner = Arc::new(PoolInner {
            shared,
            id,
            pre: compiled.pre,
            limits,
            logs,
            ready: Mutex::new(Vec::new()),
            finished: Mutex::new(Vec::new()),
            target: AtomicUsize::new(0),
            refill: refill.clone(),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            invocations: AtomicU64::new(0),
            cold_starts: AtomicU64::new(0),
            started: Instant::now(),
            last_request_ms: AtomicU64::new(0),
        });
        tokio::spawn(refill_loop(Arc::downgrade(&inner), refill));
        Self { inner }
    }

    /// Sets how many ready instances the pool keeps; extra ones are dropped at once.
    pub fn set_target(&self, target: usize) {
        let inner = &self.inner;
        if inner.target.swap(target, Ordering::Relaxed) == target {
            return;
        }
        let surplus: Vec<Ready> = {
            let mut ready = inner.ready.lock().unwrap();
            let keep = ready.len().min(target);
            ready.drain(keep..).collect()
        };
        for r in surplus {
            inner.reap(r.store);
        }
        inner.refill.notify_one();
    }

    pub fn stats(&self) -> PoolStats {
        let inner = &self.inner;
        let last = Duration::from_millis(inner.last_request_ms.load(Ordering::Relaxed));
        PoolStats {
            ready: inner.ready.lock().unwrap().len(),
            target: inner.target.load(Ordering::Relaxed),
            in_flight: inner.in_flight.load(Ordering::Relaxed),
            invocations: inner.invocations.load(Ordering::Relaxed),
            cold_starts: inner.cold_starts.load(Ordering::Relaxed),
            idle_for: inner.started.elapsed().saturating_sub(last),
        }
    }

    /// Takes one instance as a request would (from the pool, or instantiated on demand when
    /// the pool is empty: `cold`) and releases it unused: proves the revision can instantiate
    /// (deploys check this) and times the take (benchmarks).
    pub async fn probe_take(&self) -> Result<(Duration, bool), DeployError> {
        let started = Instant::now();
        let (ready, cold) = self.inner.take().await.map_err(|e| match e {
            InstantiateError::Capacity(m) => DeployError::Capacity(m),
            InstantiateError::Component(m) => DeployError::Instantiate(m),
        })?;
        let elapsed = started.elapsed();
        self.inner.reap(ready.store);
        Ok((elapsed, cold))
    }

    /// Highest concurrency seen since the last call (at least the current one); the scaler
    /// samples it once per tick.
    pub fn take_peak_in_flight(&self) -> usize {
        let now = self.inner.in_flight.load(Ordering::Relaxed);
        self.inner.peak_in_flight.swap(now, Ordering::Relaxed).max(now)
    }
}

impl PoolInner {
    /// Marks a request's arrival; the returned guard marks its end.
    pub(crate) fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        self.invocations.fetch_add(1, Ordering::Relaxed);
        self.last_request_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        InFlight(self)
    }

    /// A ready instance, or a fresh one when the pool is empty (`cold` = true).
    pub(crate) async fn take(&self) -> Result<(Ready, bool), InstantiateError> {
        let (popped, left) = {
            let mut ready = self.ready.lock().unwrap();
            let popped = ready.pop();
            (popped, ready.len())
        };
        // Refill in batches: wake the refill task once the pool is half empty, not per request.
        if left <= self.target.load(Ordering::Relaxed) / 2 {
            self.refill.notify_one();
        }
        match popped {
            Some(ready) => Ok((ready, false)),
            None => {
                self.cold_starts.fetch_add(1, Ordering::Relaxed);
                match self.instantiate().await {
                    Ok(ready) => Ok((ready, true)),
                    // Slots of finished stores may not be back yet: return them and retry once.
                    Err(_) if !self.finished.lock().unwrap().is_empty() => {
                        self.drop_finished();
                        Ok((self.instantiate().await?, true))
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn instantiate(&self) -> Result<Ready, InstantiateError> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(LogStream(self.logs.clone())).stderr(LogStream(self.logs.clone())).arg(&*self.id.function);
        let host = Host {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: DenyOutbound,
            memory: MemoryMeter { limit: self.limits.memory_bytes, peak: 0, refused: false },
            deadline: Instant::now() + self.limits.timeout,
        };
        let mut store = Store::new(&self.shared.engine, host);
        store.limiter(|host| &mut host.memory);
        // Each epoch tick, a running guest yields to the executor (so a busy loop cannot starve
        // other requests on this worker) until its deadline, when it is interrupted.
        store.epoch_deadline_callback(|ctx| {
            Ok(if Instant::now() >= ctx.data().deadline { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        store.set_epoch_deadline(1);
        let proxy = self.pre.instantiate_async(&mut store).await.map_err(InstantiateError::from)?;
        Ok(Ready { store, proxy })
    }

    /// Hands a finished store to the refill task, which drops it (freeing its pool slot).
    pub(crate) fn reap(&self, store: Store<Host>) {
        let first = {
            let mut finished = self.finished.lock().unwrap();
            finished.push(store);
            finished.len() == 1
        };
        // One wake per batch: the refill task drops everything finished since it last ran.
        if first {
            self.refill.notify_one();
        }
    }

    fn drop_finished(&self) {
        let finished = std::mem::take(&mut *self.finished.lock().unwrap());
        drop(finished);
    }

    fn push_if_wanted(&self, ready: Ready) {
        let surplus = {
            let mut pool = self.ready.lock().unwrap();
            if pool.len() < self.target.load(Ordering::Relaxed) {
                pool.push(ready);
                return;
            }
            ready
        };
        self.reap(surplus.store);
    }

    fn wants_more(&self) -> bool {
        self.ready.lock().unwrap().len() < self.target.load(Ordering::Relaxed)
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // Wake the refill task so it sees the pool is gone and exits.
        self.refill.notify_one();
    }
}

pub(crate) struct InFlight<'a>(&'a PoolInner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why an instance could not be created: the node ran out of something, or the component
/// itself failed (a start function trapped, its memory is above its limit...).
#[derive(Debug)]
pub(crate) enum InstantiateError {
    Capacity(String),
    Component(String),
}

impl From<wasmtime::Error> for InstantiateError {
    fn from(e: wasmtime::Error) -> Self {
        let out_of_memory = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>().is_some_and(|io| io.raw_os_error() == Some(12 /* ENOMEM */))
        });
        if out_of_memory || e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
            InstantiateError::Capacity(format!("{e:#}"))
        } else {
            InstantiateError::Component(format!("{e:#}"))
        }
    }
}

impl std::fmt::Display for InstantiateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstantiateError::Capacity(m) | InstantiateError::Component(m) => f.write_str(m),
        }
    }
}

async fn refill_loop(pool: Weak<PoolInner>, refill: Arc<Notify>) {
    loop {
        let notified = refill.notified();
        {
            let Some(pool) = pool.upgrade() else { return };
            pool.drop_finished();
            while pool.wants_more() {
                match pool.instantiate().await {
                    Ok(ready) => pool.push_if_wanted(ready),
                    Err(e) => {
                        // Out of pool slots, most likely; retry when the next request wakes us.
                        tracing::warn!(function = %pool.id.function, "pre-instantiation failed: {e}");
                        break;
                    }
                }
            }
        }
        notified.await;
    }
}

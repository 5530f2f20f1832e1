//! A revision's pool of pre-instantiated instances. The request path pops a ready instance
//! (or instantiates on demand when none is left: a cold start); a background task refills the
//! pool up to its target. One instance serves one request and is then dropped.

use super::engine::{Compiled, Shared};
use super::host::{Host, LogStream, MemoryMeter};
use super::outbound::{Grants, Origin, Outbound};
use crate::{InvokeError, Limits, LogBuffer, WorkloadStats};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Instant;
use tokio::sync::Notify;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};

/// Which revision a pool serves (for logs and guest argv).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolId {
    /// The function's name.
    pub function: Arc<str>,
    /// The revision number.
    pub revision: u64,
}

/// A running revision's instance pool: its limits, logs and pre-instantiated instances. Cheap
/// to clone; the pool (and its refill task) ends when the last clone is dropped.
#[derive(Clone)]
pub struct InstancePool {
    pub(crate) inner: Arc<PoolInner>,
}

pub(crate) struct PoolInner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: PoolId,
    pre: Arc<ProxyPre<Host>>,
    pub(crate) limits: Limits,
    logs: Arc<LogBuffer>,
    /// What new instances are granted; replaced when a secret they read changes.
    grants: RwLock<Arc<Granted>>,
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
}

/// An instance created ahead of its request.
pub(crate) struct Ready {
    pub(crate) store: Store<Host>,
    pub(crate) proxy: Proxy,
}

impl InstancePool {
    pub(crate) fn start(
        shared: Arc<Shared>,
        id: PoolId,
        compiled: Compiled,
        limits: Limits,
        logs: Arc<LogBuffer>,
        grants: Grants,
    ) -> Self {
        let refill = Arc::new(Notify::new());
        let inner = Arc::new(PoolInner {
            shared,
            id,
            pre: compiled.pre,
            limits,
            logs,
            grants: RwLock::new(Arc::new(Granted::from(grants))),
            ready: Mutex::new(Vec::new()),
            finished: Mutex::new(Vec::new()),
            target: AtomicUsize::new(0),
            refill: refill.clone(),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            invocations: AtomicU64::new(0),
            cold_starts: AtomicU64::new(0),
        });
        tokio::spawn(refill_loop(Arc::downgrade(&inner), refill));
        Self { inner }
    }

    /// Replaces what instances are granted (a secret changed): instances made ahead with the
    /// old grants are dropped, so every invocation that starts from now on sees the new ones.
    pub fn set_grants(&self, grants: Grants) {
        *self.inner.grants.write().unwrap() = Arc::new(Granted::from(grants));
        let stale = std::mem::take(&mut *self.inner.ready.lock().unwrap());
        for r in stale {
            self.inner.reap(r.store);
        }
        self.inner.refill.notify_one();
    }
}

/// A pool's grants in the shape instantiation uses.
pub(crate) struct Granted {
    env: Vec<(String, String)>,
    allow: Arc<[Origin]>,
}

impl From<Grants> for Granted {
    fn from(g: Grants) -> Self {
        Self { env: g.env, allow: g.allow_outbound.into() }
    }
}

impl PoolInner {
    /// A snapshot for the scheduler.
    pub(crate) fn stats(&self) -> WorkloadStats {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        WorkloadStats {
            ready: self.ready.lock().unwrap().len(),
            target: self.target.load(Ordering::Relaxed),
            in_flight,
            peak_in_flight: self.peak_in_flight.load(Ordering::Relaxed).max(in_flight),
            invocations: self.invocations.load(Ordering::Relaxed),
            cold_starts: self.cold_starts.load(Ordering::Relaxed),
        }
    }

    /// Sets how many ready instances the pool keeps (extra ones are dropped at once) and
    /// starts a new peak-concurrency window.
    pub(crate) fn set_target(&self, target: usize) {
        self.peak_in_flight.store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        if self.target.swap(target, Ordering::Relaxed) == target {
            return;
        }
        let surplus: Vec<Ready> = {
            let mut ready = self.ready.lock().unwrap();
            let keep = ready.len().min(target);
            ready.drain(keep..).collect()
        };
        for r in surplus {
            self.reap(r.store);
        }
        self.refill.notify_one();
    }

    /// Marks a request's arrival; the returned guard marks its end.
    pub(crate) fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        self.invocations.fetch_add(1, Ordering::Relaxed);
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
        self.instantiate_granted().await.map(|(ready, _)| ready)
    }

    /// An instance, and the grants it was made with.
    async fn instantiate_granted(&self) -> Result<(Ready, Arc<Granted>), InstantiateError> {
        let grants = self.grants.read().unwrap().clone();
        let ready = instantiate(&self.shared, &self.pre, &self.limits, &self.logs, &self.id.function, &grants).await?;
        Ok((ready, grants))
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

    /// The error of an invocation refused by the node's memory budget.
    pub(crate) fn budget_spent(&self) -> InvokeError {
        InvokeError::MemoryBudget { limit: self.shared.budget.limit() }
    }

    /// Wakes the refill task, e.g. after a store was dropped without `reap`.
    pub(crate) fn wake_refill(&self) {
        self.refill.notify_one();
    }

    fn drop_finished(&self) {
        let finished = std::mem::take(&mut *self.finished.lock().unwrap());
        drop(finished);
    }

    /// Keeps an instance made ahead with `made_with`, unless the pool is full or its grants
    /// changed meanwhile (checked under the lock `set_grants` drains under, so none slips by).
    fn push_if_wanted(&self, ready: Ready, made_with: &Arc<Granted>) {
        let surplus = {
            let mut pool = self.ready.lock().unwrap();
            let current = Arc::ptr_eq(made_with, &self.grants.read().unwrap());
            if current && pool.len() < self.target.load(Ordering::Relaxed) {
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
#[derive(Debug, thiserror::Error)]
pub(crate) enum InstantiateError {
    #[error("{0}")]
    Capacity(String),
    #[error("{0}")]
    Component(String),
    #[error("the node's memory budget of {0} bytes is spent (--memory-budget)")]
    Budget(u64),
}

/// Builds a store with the function's limits (memory, host resources, deadline) and
/// instantiates the component in it. The one place stores are made.
pub(crate) async fn instantiate(
    shared: &Shared,
    pre: &ProxyPre<Host>,
    limits: &Limits,
    logs: &Arc<LogBuffer>,
    function: &str,
    grants: &Granted,
) -> Result<Ready, InstantiateError> {
    let config = &shared.config;
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(LogStream(logs.clone())).stderr(LogStream(logs.clone())).arg(function).envs(&grants.env);
    let mut table = ResourceTable::new();
    table.set_max_capacity(config.max_resources);
    let mut http = WasiHttpCtx::new();
    http.set_field_size_limit(config.max_field_size);
    let host = Host {
        wasi: wasi.build(),
        http,
        table,
        hooks: Outbound { allow: grants.allow.clone(), limits: shared.outbound.clone(), bytes: Default::default() },
        memory: MemoryMeter {
            limit: limits.memory_bytes,
            peak: 0,
            refused: false,
            budget_refused: false,
            max_table_elements: config.max_table_elements,
            budget: shared.budget.clone(),
            charged: 0,
        },
        deadline: Instant::now() + limits.timeout,
    };
    let mut store = Store::new(&shared.engine, host);
    store.limiter(|host| &mut host.memory);
    // Each epoch tick, a running guest yields to the executor (so a busy loop cannot starve
    // other requests on this worker) until its deadline, when it is interrupted.
    store.epoch_deadline_callback(|ctx| {
        Ok(if Instant::now() >= ctx.data().deadline { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
    });
    store.set_epoch_deadline(1);
    match pre.instantiate_async(&mut store).await {
        Ok(proxy) => Ok(Ready { store, proxy }),
        Err(_) if store.data().memory.budget_refused => Err(InstantiateError::Budget(shared.budget.limit())),
        Err(e) => {
            // The host ran out of memory or maps (vm.max_map_count): wasmtime reports ENOMEM
            // as a std or a rustix error depending on which call failed.
            let out_of_memory = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::OutOfMemory)
                    || c.downcast_ref::<rustix::io::Errno>() == Some(&rustix::io::Errno::NOMEM)
            });
            if out_of_memory || e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
                Err(InstantiateError::Capacity(format!("{e:#}")))
            } else {
                Err(InstantiateError::Component(format!("{e:#}")))
            }
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
                match pool.instantiate_granted().await {
                    Ok((ready, made_with)) => pool.push_if_wanted(ready, &made_with),
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

//! A revision's pool of pre-instantiated instances. The request path pops a ready instance
//! (or instantiates on demand when none is left: a cold start); the refill threads
//! ([`super::refill`]) keep the pool at its goal, in batches on as many cores as it needs, and
//! reset finished stores. One instance serves one request and is then dropped.

use super::engine::{Compiled, Shared};
use super::host::{Host, LogStream, MemoryMeter};
use super::outbound::{Grants, Origin, Outbound};
use super::refill::{Job, Lead};
use crate::{InvokeError, Limits, LogBuffer, WorkloadStats};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Instant;
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
/// to clone; the pool ends when the last clone is dropped (queued refill jobs do not hold it).
#[derive(Clone)]
pub struct InstancePool {
    pub(crate) inner: Arc<PoolInner>,
}

pub(crate) struct PoolInner {
    pub(crate) shared: Arc<Shared>,
    /// This pool, for the jobs it queues (they must not keep it alive).
    me: Weak<PoolInner>,
    pub(crate) id: PoolId,
    pre: Arc<ProxyPre<Host>>,
    pub(crate) limits: Limits,
    logs: Arc<LogBuffer>,
    /// What new instances are granted; replaced when a secret they read changes.
    grants: RwLock<Arc<Granted>>,
    ready: Mutex<Vec<Ready>>,
    /// Finished stores, dropped by a refill thread: returning a slot to the pool (and resetting
    /// its memory) happens off the response path and off the async workers.
    finished: Mutex<Vec<Store<Host>>>,
    target: AtomicUsize,
    /// Refill jobs queued or running for this pool, at most one per refill thread.
    workers: AtomicUsize,
    /// How many spare instances keep the pool ahead of its requests.
    lead: Lead,
    /// Set once a reused instance answered nothing (see `stop_reuse`).
    reuse_stopped: AtomicBool,
    pub(crate) in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    pub(crate) invocations: AtomicU64,
    pub(crate) cold_starts: AtomicU64,
}

/// An instance created ahead of its request, or one that served requests cleanly and may
/// serve more (`Limits::max_instance_reuse`).
pub(crate) struct Ready {
    pub(crate) store: Store<Host>,
    pub(crate) proxy: Proxy,
    /// What it was granted: an instance made with grants since replaced is never kept.
    grants: Arc<Granted>,
    /// Requests it has served.
    pub(crate) uses: u32,
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
        let inner = Arc::new_cyclic(|me| PoolInner {
            shared,
            me: me.clone(),
            id,
            pre: compiled.pre,
            limits,
            logs,
            grants: RwLock::new(Arc::new(Granted::from(grants))),
            ready: Mutex::new(Vec::new()),
            finished: Mutex::new(Vec::new()),
            target: AtomicUsize::new(0),
            workers: AtomicUsize::new(0),
            lead: Lead::new(),
            reuse_stopped: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            invocations: AtomicU64::new(0),
            cold_starts: AtomicU64::new(0),
        });
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
        self.inner.refill();
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
            instantiation: self.lead.instantiation(),
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
            let keep = ready.len().min(self.goal());
            ready.drain(keep..).collect()
        };
        for r in surplus {
            self.reap(r.store);
        }
        self.refill();
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
        self.lead.taken();
        let (popped, left) = {
            let mut ready = self.ready.lock().unwrap();
            let popped = ready.pop();
            (popped, ready.len())
        };
        // Refill in batches, once the pool is down to half its goal: a thread wake per request
        // costs more than instantiating a small component. The spares keep it ahead meanwhile.
        // An instance that will come back (`recycle`) needs no replacement: making one would
        // crowd the reused instance out of the pool.
        let returns = popped.as_ref().is_some_and(|r| self.may_reuse(r.uses + 1));
        if !returns && left <= self.goal() / 2 {
            self.refill();
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

    /// A fresh instance with the current grants.
    async fn instantiate(&self) -> Result<Ready, InstantiateError> {
        let grants = self.grants.read().unwrap().clone();
        let start = Instant::now();
        let ready = instantiate(&self.shared, &self.pre, &self.limits, &self.logs, &self.id.function, &grants).await?;
        self.lead.made(start.elapsed());
        Ok(ready)
    }

    /// Ready instances to keep: the scheduler's target plus the spares that keep the pool
    /// ahead of its requests.
    fn goal(&self) -> usize {
        let target = self.target.load(Ordering::Relaxed);
        target + self.lead.spare(target)
    }

    /// Hands a finished store to a refill thread, which drops it (freeing its pool slot).
    pub(crate) fn reap(&self, store: Store<Host>) {
        // The refill threads are behind (a saturated node): reset it here, or finished stores
        // would hold the node's instance slots while new requests are refused for want of one.
        if !self.shared.refiller.defer_reset() {
            return drop(store);
        }
        let first = {
            let mut finished = self.finished.lock().unwrap();
            finished.push(store);
            finished.len() == 1
        };
        // One job per batch of finished stores; a pool short of its goal is topped up too, so a
        // pool at rest has its goal, while refills under load come in batches (see `take`).
        if first {
            if self.wants_more() {
                self.refill();
            }
            // Always one reset job: a refill job running now may have dropped what finished
            // already, and this batch would otherwise wait for the next one.
            self.shared.refiller.send(Job::Reset(self.me.clone()));
        }
    }

    /// Queues refill jobs: one more while the pool lacks more instances than jobs are making,
    /// up to one per refill thread, so a large deficit is made on every core.
    pub(crate) fn refill(&self) {
        let lacking = self.goal().saturating_sub(self.ready.lock().unwrap().len());
        let most = lacking.min(self.shared.refiller.threads());
        let mut workers = self.workers.load(Ordering::Relaxed);
        while workers < most {
            match self.workers.compare_exchange(workers, workers + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.shared.refiller.send(Job::Fill(self.me.clone()));
                    workers += 1;
                }
                Err(now) => workers = now,
            }
        }
    }

    /// A refill job: return finished slots and make instances until the pool has its goal.
    pub(crate) async fn fill(&self) {
        let failed = loop {
            self.drop_finished();
            if !self.wants_more() {
                break false;
            }
            match self.instantiate().await {
                Ok(ready) => self.push_if_wanted(ready),
                Err(e) => {
                    // Out of pool slots or memory, most likely: the next request tries again.
                    tracing::warn!(function = %self.id.function, "pre-instantiation failed: {e}");
                    break true;
                }
            }
        };
        self.workers.fetch_sub(1, Ordering::Relaxed);
        // A request that took an instance after the last check saw this job running and
        // queued none: look again.
        if !failed && self.wants_more() {
            self.refill();
        }
    }

    /// The error of an invocation refused by the node's memory budget.
    pub(crate) fn budget_spent(&self) -> InvokeError {
        InvokeError::MemoryBudget { limit: self.shared.budget.limit() }
    }

    pub(crate) fn drop_finished(&self) {
        let finished = std::mem::take(&mut *self.finished.lock().unwrap());
        for store in finished {
            drop(store);
            self.shared.refiller.reset_done();
        }
    }

    /// Takes back an instance that served a request cleanly (the handler returned and the
    /// response is complete: no trap, timeout or refused memory). It serves again while it has
    /// uses left (`max_instance_reuse`); otherwise, as always by default, it is dropped.
    pub(crate) fn recycle(&self, mut ready: Ready) {
        ready.uses += 1;
        if !self.may_reuse(ready.uses) {
            return self.reap(ready.store);
        }
        // Per-invocation host state starts over; guest memory is kept, by design.
        ready.store.data().hooks.bytes.store(0, Ordering::Relaxed);
        self.push_if_wanted(ready);
    }

    /// Whether an instance that has served `uses` requests may serve another.
    fn may_reuse(&self, uses: u32) -> bool {
        uses < self.limits.max_instance_reuse && !self.reuse_stopped.load(Ordering::Relaxed)
    }

    /// Turns reuse off for good, after a reused instance answered nothing: the guest cannot
    /// serve twice. Used instances waiting in the pool are dropped.
    pub(crate) fn stop_reuse(&self) {
        if self.reuse_stopped.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::warn!(
            function = %self.id.function,
            revision = self.id.revision,
            "a reused instance returned without a response: this guest cannot serve twice, so instance reuse is off for this revision"
        );
        let used: Vec<Ready> = {
            let mut ready = self.ready.lock().unwrap();
            let (used, fresh) = std::mem::take(&mut *ready).into_iter().partition(|r| r.uses > 0);
            *ready = fresh;
            used
        };
        for r in used {
            self.reap(r.store);
        }
    }

    /// Keeps an instance, unless the pool is full or its grants changed since it was made
    /// (checked under the lock `set_grants` drains under, so none slips by).
    fn push_if_wanted(&self, ready: Ready) {
        let surplus = {
            let mut pool = self.ready.lock().unwrap();
            let current = Arc::ptr_eq(&ready.grants, &self.grants.read().unwrap());
            if current && pool.len() < self.goal() {
                pool.push(ready);
                return;
            }
            ready
        };
        self.reap(surplus.store);
    }

    fn wants_more(&self) -> bool {
        self.ready.lock().unwrap().len() < self.goal()
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
    grants: &Arc<Granted>,
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
        Ok(proxy) => Ok(Ready { store, proxy, grants: grants.clone(), uses: 0 }),
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

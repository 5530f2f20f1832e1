//! The node's one wasmtime engine: configuration, the linker every revision shares, the epoch
//! ticker, and turning uploaded bytes into a ready-to-instantiate `ProxyPre`.

use super::cache::{CacheStats, CompileCache};
use super::compiler::Compiler;
use super::host::Host;
use super::outbound::{Grants, OutboundLimits};
use super::pool::{self, InstancePool, PoolId};
use super::refill::Refiller;
use super::validate::{check_bytes, is_incoming_handler};
use super::{DeployError, RuntimeError, WasmConfig};
use crate::{Limits, LogBuffer, MemoryBudget};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// Shared by every pool on the node.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) config: WasmConfig,
    pub(crate) budget: Arc<MemoryBudget>,
    pub(crate) outbound: OutboundLimits,
    /// The refill threads every pool queues instantiations and resets on.
    pub(crate) refiller: Refiller,
}

/// The Wasm runtime of a node: one engine, its linker and compile cache. Cheap to clone.
#[derive(Clone)]
pub struct WasmRuntime {
    shared: Arc<Shared>,
    linker: Arc<Linker<Host>>,
    cache: Arc<CompileCache>,
    /// Compiled components by content hash while any pool uses them: functions deploying the
    /// same bytes share one compile, and code is unmapped once its last pool is gone.
    loaded: Arc<Mutex<HashMap<String, Weak<ProxyPre<Host>>>>>,
}

/// How full the node's instance pool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Component instances allocated now: ready, running, and finished but not yet reset.
    pub component_instances: u64,
    /// `--pool-instances`.
    pub component_instances_limit: u32,
    /// Memory kept resident in free slots by keep-resident resets.
    pub unused_memory_bytes_resident: usize,
}

/// A validated, compiled component with its imports resolved: instantiation is all that is left.
#[derive(Clone)]
pub struct Compiled {
    pub(crate) pre: Arc<ProxyPre<Host>>,
}

impl WasmRuntime {
    /// Builds the engine and starts its epoch ticker thread. `cache_dir` holds compiled
    /// components; `budget` is the node's memory budget, charged by guest memory.
    pub fn new(config: WasmConfig, cache_dir: &Path, budget: Arc<MemoryBudget>) -> Result<Self, RuntimeError> {
        let engine = Engine::new(&engine_config(&config)).map_err(RuntimeError::Engine)?;
        let mut linker = Linker::new(&engine);
        // All of WASIp2 is linked (Rust std imports wasi:cli and friends); the WasiCtx of each
        // store decides what is actually granted, which is nothing by default.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(RuntimeError::Engine)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(RuntimeError::Engine)?;
        let compiler = config.compiler.clone().map(|exe| Compiler::new(exe, &config));
        let cache = CompileCache::open(cache_dir, &engine, compiler)?;
        spawn_epoch_ticker(&engine, config.epoch_tick)?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        // At most an eighth of the node's instance slots wait for a reset at any time.
        let max_resets = config.pool_instances as usize / 8;
        let refiller = Refiller::start(threads, max_resets).map_err(RuntimeError::Refill)?;
        Ok(Self {
            shared: Arc::new(Shared { engine, outbound: outbound_limits(&config), config, budget, refiller }),
            linker: Arc::new(linker),
            cache: Arc::new(cache),
            loaded: Arc::default(),
        })
    }

    /// The knobs this runtime was built with.
    pub fn config(&self) -> &WasmConfig {
        &self.shared.config
    }

    /// The node's memory budget this runtime charges.
    pub fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.shared.budget
    }

    /// Compile cache hits and misses since start.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Pool slots in use against the limit (`--pool-instances`), for capacity metrics.
    pub fn pool_usage(&self) -> PoolUsage {
        let metrics = self.shared.engine.pooling_allocator_metrics();
        PoolUsage {
            component_instances: metrics.as_ref().map_or(0, |m| m.component_instances()),
            component_instances_limit: self.shared.config.pool_instances,
            unused_memory_bytes_resident: metrics.as_ref().map_or(0, |m| m.unused_memory_bytes_resident()),
        }
    }

    /// Compiled components held in memory now (by any pool).
    pub fn loaded_components(&self) -> usize {
        let mut loaded = self.loaded.lock().unwrap();
        loaded.retain(|_, pre| pre.strong_count() > 0);
        loaded.len()
    }

    /// Validates and compiles (or loads from the cache, or shares with a live pool) a
    /// component. `content_hash` is the hex sha256 of `bytes`. Blocking and CPU-heavy: call it
    /// off the async request path.
    pub fn compile(&self, content_hash: &str, bytes: &[u8]) -> Result<Compiled, DeployError> {
        if let Some(compiled) = self.loaded(content_hash) {
            return Ok(compiled);
        }
        check_bytes(bytes)?;
        let component = self.cache.load(&self.shared.engine, content_hash, bytes)?;
        check_exports(&self.shared.engine, &component)?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| DeployError::Link(format!("{e:#}")))?;
        let pre = Arc::new(ProxyPre::new(instance_pre).map_err(|e| DeployError::MissingExport(format!("{e:#}")))?);
        let mut loaded = self.loaded.lock().unwrap();
        loaded.retain(|_, pre| pre.strong_count() > 0);
        loaded.insert(content_hash.to_string(), Arc::downgrade(&pre));
        Ok(Compiled { pre })
    }

    /// The component with this content hash, if a live pool already holds it compiled: callers
    /// can skip reading its bytes.
    pub fn loaded(&self, content_hash: &str) -> Option<Compiled> {
        let pre = self.loaded.lock().unwrap().get(content_hash).and_then(Weak::upgrade)?;
        Some(Compiled { pre })
    }

    /// Deletes the cached compiled form of a component that no revision refers to any more.
    pub fn forget(&self, content_hash: &str) {
        self.cache.remove(content_hash);
    }

    /// Checks limits against what this node can grant.
    pub fn check_limits(&self, limits: &Limits) -> Result<(), DeployError> {
        let max = self.shared.config.max_memory_bytes;
        if limits.memory_bytes > max {
            return Err(DeployError::MemoryTooLarge { requested: limits.memory_bytes, max });
        }
        Ok(())
    }

    /// Instantiates `compiled` once with `limits` and throws the instance away: a component
    /// that cannot start (say, its initial memory is above its limit) is refused at deploy.
    pub async fn check_instantiates(&self, compiled: &Compiled, limits: Limits) -> Result<(), DeployError> {
        let logs = Arc::new(LogBuffer::new(0));
        let grants = Arc::new(pool::Granted::from(Grants::default()));
        pool::instantiate(&self.shared, &compiled.pre, &limits, &logs, "deploy-check", &grants).await.map(drop).map_err(
            |e| match e {
                pool::InstantiateError::Capacity(m) => DeployError::Capacity(m),
                pool::InstantiateError::Component(m) => DeployError::Instantiate(m),
                budget @ pool::InstantiateError::Budget(_) => DeployError::Capacity(budget.to_string()),
            },
        )
    }

    /// Starts a revision's instance pool (empty until its target is raised), its instances
    /// granted `grants`. Needs a tokio runtime.
    pub fn pool(
        &self,
        id: PoolId,
        compiled: Compiled,
        limits: Limits,
        logs: Arc<LogBuffer>,
        grants: Grants,
    ) -> InstancePool {
        InstancePool::start(self.shared.clone(), id, compiled, limits, logs, grants)
    }
}

fn outbound_limits(config: &WasmConfig) -> OutboundLimits {
    OutboundLimits {
        timeout: config.outbound_timeout,
        permits: Arc::new(tokio::sync::Semaphore::new(config.max_outbound_concurrency)),
    }
}

/// The engine configuration; the compiler child builds the same one.
pub(crate) fn engine_config(config: &WasmConfig) -> Config {
    let n = config.pool_instances;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        // A Rust wasm32-wasip2 component is a handful of core instances (main module, shims)
        // with one memory and two tables. Memories are sized exactly: each slot reserves 4 GiB
        // of address space, and the density target (10k+ instances) needs that to fit.
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n)
        .total_tables(n.saturating_mul(3))
        .total_stacks(n)
        .max_memory_size(config.max_memory_bytes as usize)
        // Resetting a slot with memset beats madvise+refault for the small memories of
        // typical functions: it dominated the cost per request when measured.
        .linear_memory_keep_resident(config.memory_keep_resident)
        .table_keep_resident(config.table_keep_resident)
        .async_stack_keep_resident(config.stack_keep_resident)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut cfg = Config::new();
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .memory_init_cow(true)
        .parallel_compilation(true);
    cfg
}

/// One thread per engine advances the epoch; stores turn ticks into timeouts and yields.
fn spawn_epoch_ticker(engine: &Engine, tick: Duration) -> Result<(), RuntimeError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wisp-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })
        .map(drop)
        .map_err(RuntimeError::Ticker)
}

fn check_exports(engine: &Engine, component: &Component) -> Result<(), DeployError> {
    let ty = component.component_type();
    let names: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
    if names.iter().any(|n| is_incoming_handler(n)) {
        return Ok(());
    }
    let listed = if names.is_empty() { "none".to_string() } else { names.join(", ") };
    Err(DeployError::MissingExport(listed))
}

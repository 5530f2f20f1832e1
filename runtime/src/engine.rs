//! The node's one wasmtime engine: configuration, the linker every revision shares, the epoch
//! ticker, and turning uploaded bytes into a ready-to-instantiate `ProxyPre`.

use crate::cache::{CacheStats, CompileCache};
use crate::host::Host;
use crate::pool::{Revision, RevisionId};
use crate::validate::{check_bytes, is_incoming_handler};
use crate::{DeployError, Limits, LogBuffer, RuntimeConfig, RuntimeError, UsageSink};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// Shared by every revision on the node.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) config: RuntimeConfig,
    pub(crate) usage: Arc<dyn UsageSink>,
}

#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
    linker: Arc<Linker<Host>>,
    cache: Arc<CompileCache>,
}

/// How full the node's instance pool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Component instances allocated now: ready, running, and finished but not yet reset.
    pub component_instances: u64,
    pub component_instances_limit: u32,
    /// Memory kept resident in free slots by keep-resident resets.
    pub unused_memory_bytes_resident: usize,
}

/// A validated, compiled component with its imports resolved: instantiation is all that is left.
#[derive(Clone)]
pub struct Compiled {
    pub(crate) pre: ProxyPre<Host>,
}

impl Runtime {
    /// Builds the engine and starts its epoch ticker thread. `cache_dir` holds
    /// compiled components.
    pub fn new(config: RuntimeConfig, cache_dir: &Path, usage: Arc<dyn UsageSink>) -> Result<Self, RuntimeError> {
        let engine = Engine::new(&engine_config(&config)).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        // All of WASIp2 is linked (Rust std imports wasi:cli and friends); the WasiCtx of each
        // store decides what is actually granted, which is nothing by default.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let cache = CompileCache::open(cache_dir, &engine)?;
        spawn_epoch_ticker(&engine, config.epoch_tick);
        Ok(Self {
            shared: Arc::new(Shared { engine, config, usage }),
            linker: Arc::new(linker),
            cache: Arc::new(cache),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.shared.config
    }

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

    /// Validates and compiles (or loads from the cache) a component. `content_hash` is the
    /// hex sha256 of `bytes`. Blocking and CPU-heavy: call it off the async request path.
    pub fn compile(&self, content_hash: &str, bytes: &[u8]) -> Result<Compiled, DeployError> {
        check_bytes(bytes)?;
        let component = self.cache.load(&self.shared.engine, content_hash, bytes)?;
        check_exports(&self.shared.engine, &component)?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| DeployError::Link(format!("{e:#}")))?;
        let pre = ProxyPre::new(instance_pre).map_err(|e| DeployError::MissingExport(format!("{e:#}")))?;
        Ok(Compiled { pre })
    }

    /// Checks limits against what this node can grant.
    pub fn check_limits(&self, limits: &Limits) -> Result<(), DeployError> {
        let max = self.shared.config.max_memory_bytes;
        if limits.memory_bytes > max {
            return Err(DeployError::MemoryTooLarge { requested: limits.memory_bytes, max });
        }
        Ok(())
    }

    /// Starts a revision's instance pool (empty until its target is raised). Needs a tokio runtime.
    pub fn revision(&self, id: RevisionId, compiled: Compiled, limits: Limits, logs: Arc<LogBuffer>) -> Revision {
        Revision::start(self.shared.clone(), id, compiled, limits, logs)
    }
}

fn engine_config(config: &RuntimeConfig) -> Config {
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
fn spawn_epoch_ticker(engine: &Engine, tick: Duration) {
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
        .expect("spawning the epoch ticker thread");
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

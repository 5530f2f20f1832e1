//! `wisp up`: one process running gateway + scheduler + runtime on an embedded store.

use anyhow::Context;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use wisp_gateway::GatewayConfig;
use wisp_scheduler::{NodeConfig, Scheduler, parse_duration, parse_size};

/// Run a Wisp node in the foreground (gateway + scheduler + runtime)
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Where the node keeps its store, components and compile cache
    #[arg(long, default_value = "./.wisp", value_name = "DIR")]
    data_dir: PathBuf,
    /// Address for function invocations and the admin API (port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,
    /// Deploy every `NAME.wasm` in DIR at start-up (skipped when already deployed unchanged)
    #[arg(long, value_name = "DIR")]
    deploy_dir: Option<PathBuf>,
    /// Component instances the pooling allocator holds at once, ready and running
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pool_instances: u32,
    /// Largest linear memory a function may be granted
    #[arg(long, default_value = "1Gi", value_name = "SIZE")]
    max_memory: String,
    /// Bytes of each linear memory kept resident (reset with memset) when a pool slot is reused
    #[arg(long, default_value = "2Mi", value_name = "SIZE")]
    memory_keep_resident: String,
    /// Ready instances kept per revision at most
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_ready: usize,
    /// How often the scaler re-evaluates pool targets
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    scale_interval: String,
    /// Requests handled at once before new ones get 429
    #[arg(long, default_value_t = 1024, value_name = "N")]
    max_concurrency: usize,
    /// Largest component upload accepted
    #[arg(long, default_value = "64Mi", value_name = "SIZE")]
    max_component_size: String,
    /// Worker threads for request handling (default: one per core)
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,wasmtime=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config = NodeConfig::new(&args.data_dir);
    config.runtime.pool_instances = args.pool_instances;
    config.runtime.max_memory_bytes = size_flag("--max-memory", &args.max_memory)?;
    config.runtime.memory_keep_resident = size_flag("--memory-keep-resident", &args.memory_keep_resident)? as usize;
    config.max_ready = args.max_ready;
    config.scale_interval = parse_duration(&args.scale_interval).map_err(|e| anyhow::anyhow!("--scale-interval: {e}"))?;
    let gateway = GatewayConfig {
        max_concurrency: args.max_concurrency,
        max_component_bytes: size_flag("--max-component-size", &args.max_component_size)?,
        ..GatewayConfig::default()
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        runtime.worker_threads(n);
    }
    runtime.enable_all().build()?.block_on(serve(args, config, gateway))
}

fn size_flag(flag: &str, value: &str) -> anyhow::Result<u64> {
    parse_size(value).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

async fn serve(args: UpArgs, config: NodeConfig, gateway: GatewayConfig) -> anyhow::Result<()> {
    let scheduler = Scheduler::open(config).await.with_context(|| format!("opening {}", args.data_dir.display()))?;
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Scripts and tests read this line to find the node.
    println!("wisp: listening on http://{addr}");
    if let Some(dir) = &args.deploy_dir {
        deploy_dir(&scheduler, dir, addr).await?;
        println!("wisp: manage with   wisp --node http://{addr} ls | describe NAME | logs NAME | usage");
    }
    std::io::stdout().flush()?;
    let restored = scheduler.list().len();
    let cache = scheduler.cache_stats();
    tracing::info!(%addr, functions = restored, cache_hits = cache.hits, cache_misses = cache.misses, "node up");

    wisp_gateway::serve(listener, scheduler.clone(), gateway, shutdown_signal()).await?;
    scheduler.shutdown().await;
    tracing::info!("node stopped; usage ledger flushed");
    Ok(())
}

async fn deploy_dir(scheduler: &Scheduler, dir: &Path, addr: SocketAddr) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("--deploy-dir {}", dir.display()))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    entries.sort();
    for path in entries {
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else { continue };
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let hash = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let unchanged = scheduler.describe(name).is_ok_and(|f| f.component_hash == hash);
        if !unchanged {
            match scheduler.deploy(name, &[], bytes.into()).await {
                Ok(f) => tracing::info!(function = name, revision = f.revision, "deployed from {}", path.display()),
                Err(e) => {
                    tracing::warn!("skipping {}: {e}", path.display());
                    continue;
                }
            }
        }
        println!("wisp: function {name:<12} curl http://{addr}/fn/{name}");
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: draining in-flight requests");
}

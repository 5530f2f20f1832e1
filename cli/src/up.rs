//! `wisp up`: the composition root. Builds the ledger, the Wasm runtime, the scheduler, the
//! triggers and async invocations, and the gateway, owns the one cancellation token, and shuts
//! down in order: stop ingress (HTTP, then triggers and async work, which commit what they
//! finished), drain in-flight work, flush the ledger.

use anyhow::Context;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wisp_gateway::{Gateway, GatewayConfig};
use wisp_ledger::{Durability, Ledger, LedgerConfig, Pricing};
use wisp_runtime::MemoryBudget;
use wisp_runtime::container::{ContainerConfig, ContainerRuntime};
use wisp_runtime::wasm::{WasmConfig, WasmRuntime};
use wisp_scheduler::{Scheduler, SchedulerConfig, parse_duration, parse_size};
use wisp_triggers::{BackoffPolicy, DeliverySpec, Invocations, InvocationsConfig, Triggers, TriggersConfig};

/// Run a Wisp node in the foreground (gateway + scheduler + runtime)
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Where the node keeps its registry, ledger, components and compile cache
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
    /// Node-wide budget for guest memory and buffered request bodies [default: 3/4 of RAM]
    #[arg(long, value_name = "SIZE")]
    memory_budget: Option<String>,
    /// Bytes of each linear memory kept resident (reset with memset) when a pool slot is reused
    #[arg(long, default_value = "2Mi", value_name = "SIZE")]
    memory_keep_resident: String,
    /// Host resources (streams, headers, bodies...) one instance may hold at once
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_resources: usize,
    /// Largest total size of one set of HTTP headers a function creates
    #[arg(long, default_value = "128Ki", value_name = "SIZE")]
    max_field_size: String,
    /// Bounds each outbound HTTP request a function is granted: connecting, the first response
    /// byte, each pause between body bytes, and waiting for a slot under --max-outbound-concurrency
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    outbound_timeout: String,
    /// Outbound HTTP requests in flight on the node at once (more wait, up to --outbound-timeout)
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_outbound_concurrency: usize,
    /// Ready Wasm instances, or container replicas, kept per revision at most
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_ready: usize,
    /// How often the KPA autoscaler decides for every revision (also its metric bucket)
    #[arg(long, default_value = "100ms", value_name = "DURATION")]
    scale_interval: String,
    /// Requests one revision's activator holds while it is at capacity (more get 503)
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    activator_queue: usize,
    /// How long the last replica stays after the autoscaler decided to scale to zero
    #[arg(long, default_value = "0s", value_name = "DURATION")]
    scale_to_zero_grace: String,
    /// Largest growth of a revision's replicas per decision, as a multiple of the ready count
    #[arg(long, default_value_t = 1000.0, value_name = "RATE")]
    max_scale_up_rate: f64,
    /// Largest shrink of a revision's replicas per decision: ready / RATE
    #[arg(long, default_value_t = 2.0, value_name = "RATE")]
    max_scale_down_rate: f64,
    /// Unrouted revisions kept per service; older ones are deleted
    #[arg(long, default_value_t = 20, value_name = "N")]
    revision_retention: usize,
    /// Domain of service hosts: {name}.{namespace}.DOMAIN and {tag}-{name}.{namespace}.DOMAIN
    #[arg(long, default_value = "localhost", value_name = "DOMAIN")]
    domain: String,
    /// Function requests handled at once by the node before new ones get 429
    #[arg(long, default_value_t = 1024, value_name = "N")]
    max_concurrency: usize,
    /// Invocations one function may run at once unless it sets max_concurrency (then 429)
    /// [default: a quarter of --pool-instances]
    #[arg(long, value_name = "N")]
    function_concurrency: Option<u32>,
    /// Client connections served at once; more wait until one closes
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_connections: usize,
    /// Time a client has to send request headers; also how long an idle keep-alive connection stays open
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    header_read_timeout: String,
    /// Longest pause allowed between two chunks of a request body
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    body_read_timeout: String,
    /// Time a component upload may take in all
    #[arg(long, default_value = "2m", value_name = "DURATION")]
    upload_timeout: String,
    /// Largest component upload accepted
    #[arg(long, default_value = "64Mi", value_name = "SIZE")]
    max_component_size: String,
    /// Largest OCI image upload accepted (`wisp image import`)
    #[arg(long, default_value = "2Gi", value_name = "SIZE")]
    max_image_size: String,
    /// How long shutdown waits for in-flight requests and events
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    drain_timeout: String,
    /// Usage records queued for the ledger writer at most (beyond, they are dropped and counted)
    #[arg(long, default_value_t = 65_536, value_name = "N")]
    ledger_queue: usize,
    /// Commit each invocation's usage record (fsync) before answering it, instead of in
    /// batches every 20ms (which a crash of the machine can lose)
    #[arg(long)]
    ledger_sync: bool,
    /// Async invocations run at once, node-wide
    #[arg(long, default_value_t = 64, value_name = "N")]
    async_concurrency: usize,
    /// Retries of a failed async invocation (5xx, 404, 408, 409, 429, timeouts) and of its callback
    #[arg(long, default_value_t = 3, value_name = "N")]
    async_retries: u32,
    /// Backoff unit between async retries (200ms, PT0.2S...)
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    async_backoff: String,
    /// How an async retry's delay grows: exponential (2d, 4d, 8d...) or linear (d, 2d, 3d...)
    #[arg(long, default_value = "exponential", value_name = "POLICY")]
    async_backoff_policy: String,
    /// How long one async attempt may take
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    async_timeout: String,
    /// How long a finished async invocation's result is kept
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    async_retention: String,
    /// Worker threads for request handling (default: one per core)
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Price plans for `wisp bill` (YAML or JSON: `default:` and `namespaces:`, prices as
    /// quoted decimals; see docs/admin-api.md). Default: AWS Lambda's public x86 prices in USD
    #[arg(long, value_name = "FILE")]
    pricing: Option<PathBuf>,
    /// How long raw usage records are kept (30d, 12h...; `forever` keeps them). Pruning keeps
    /// the hourly rollups, so totals and bills never change
    #[arg(long, default_value = "35d", value_name = "DURATION")]
    usage_retention: String,
    /// Record no usage (nothing can be billed or exported): only to measure what metering costs
    #[arg(long, hide = true)]
    no_usage_metering: bool,
    #[command(flatten)]
    export: crate::export::ExportArgs,
    /// The OCI runtime that runs container functions
    #[arg(long, default_value = "crun", value_name = "PATH")]
    crun: PathBuf,
    /// How long a starting container replica may take to listen on $PORT
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    container_ready_timeout: String,
    /// Time between SIGTERM and SIGKILL when a container replica is stopped
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    container_stop_grace: String,
    /// Processes one container replica may run (enforced where the host has cgroups)
    #[arg(long, default_value_t = 1024, value_name = "N")]
    container_pids_limit: u32,
    /// How often a running container replica's time is metered (also when it stops)
    #[arg(long, default_value = "1m", value_name = "DURATION")]
    replica_usage_interval: String,
}

/// Every setting of the node, validated before anything starts.
struct NodeConfig {
    wasm: WasmConfig,
    containers: ContainerConfig,
    memory_budget: u64,
    scheduler: SchedulerConfig,
    gateway: GatewayConfig,
    ledger: LedgerConfig,
    triggers: TriggersConfig,
    invocations: InvocationsConfig,
}

fn size_flag(flag: &str, value: &str) -> anyhow::Result<u64> {
    parse_size(value).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

fn duration_flag(flag: &str, value: &str) -> anyhow::Result<Duration> {
    parse_duration(value).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

/// Raises the soft open-files limit to the hard one and returns it: every connection, component
/// file and pool slot's memfd needs a descriptor.
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Three quarters of physical memory, or 4 GiB if the machine will not say.
fn default_memory_budget() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    if pages > 0 && page > 0 { (pages as u64).saturating_mul(page as u64) / 4 * 3 } else { 4 << 30 }
}

impl NodeConfig {
    /// Rejects bad flags before binding anything, so they are not discovered on first use.
    fn from_args(args: &UpArgs) -> anyhow::Result<Self> {
        anyhow::ensure!(args.pool_instances > 0, "--pool-instances must be above 0");
        anyhow::ensure!(args.max_connections > 0, "--max-connections must be above 0");
        anyhow::ensure!(args.max_concurrency > 0, "--max-concurrency must be above 0");
        anyhow::ensure!(args.ledger_queue > 0, "--ledger-queue must be above 0");
        let wasm = WasmConfig {
            pool_instances: args.pool_instances,
            max_memory_bytes: size_flag("--max-memory", &args.max_memory)?,
            memory_keep_resident: size_flag("--memory-keep-resident", &args.memory_keep_resident)? as usize,
            max_resources: args.max_resources,
            max_field_size: size_flag("--max-field-size", &args.max_field_size)? as usize,
            outbound_timeout: duration_flag("--outbound-timeout", &args.outbound_timeout)?,
            max_outbound_concurrency: args.max_outbound_concurrency,
            // Components compile in a child process: its memory goes when it exits.
            compiler: Some(std::env::current_exe().context("finding the wisp executable (the compiler)")?),
            ..WasmConfig::default()
        };
        anyhow::ensure!(!wasm.outbound_timeout.is_zero(), "--outbound-timeout must be above 0");
        anyhow::ensure!(wasm.max_outbound_concurrency > 0, "--max-outbound-concurrency must be above 0");
        let memory_budget = match &args.memory_budget {
            Some(v) => size_flag("--memory-budget", v)?,
            None => default_memory_budget(),
        };
        let containers = container_config(args)?;
        let mut scheduler = SchedulerConfig::new(&args.data_dir);
        scheduler.metering = !args.no_usage_metering;
        scheduler.max_ready = args.max_ready;
        scheduler.scale_interval = duration_flag("--scale-interval", &args.scale_interval)?;
        anyhow::ensure!(!scheduler.scale_interval.is_zero(), "--scale-interval must be above 0");
        scheduler.decider.tick = scheduler.scale_interval;
        scheduler.decider.scale_to_zero_grace = duration_flag("--scale-to-zero-grace", &args.scale_to_zero_grace)?;
        anyhow::ensure!(args.max_scale_up_rate > 1.0, "--max-scale-up-rate must be above 1");
        anyhow::ensure!(args.max_scale_down_rate > 1.0, "--max-scale-down-rate must be above 1");
        scheduler.decider.max_scale_up_rate = args.max_scale_up_rate;
        scheduler.decider.max_scale_down_rate = args.max_scale_down_rate;
        anyhow::ensure!(args.activator_queue > 0, "--activator-queue must be above 0");
        scheduler.activator_queue = args.activator_queue;
        scheduler.revision_retention = args.revision_retention;
        scheduler.domain = args.domain.trim_matches('.').to_string();

        scheduler.function_concurrency = args.function_concurrency.unwrap_or((args.pool_instances / 4).max(1));
        anyhow::ensure!(scheduler.function_concurrency > 0, "--function-concurrency must be above 0");
        // Connections must never exhaust descriptors: keep a reserve for files, the store and
        // the pool.
        let open_files = raise_open_files_limit();
        let max_connections = args.max_connections.min(open_files.saturating_sub(512).max(64) as usize);
        if max_connections < args.max_connections {
            tracing::warn!(
                "--max-connections {} lowered to {max_connections}: the open-files limit is {open_files}",
                args.max_connections
            );
        }
        let gateway = GatewayConfig {
            max_concurrency: args.max_concurrency,
            max_connections,
            max_component_bytes: size_flag("--max-component-size", &args.max_component_size)?,
            max_image_bytes: size_flag("--max-image-size", &args.max_image_size)?,
            upload_dir: Some(args.data_dir.join("images").join("tmp")),
            header_read_timeout: duration_flag("--header-read-timeout", &args.header_read_timeout)?,
            body_read_timeout: duration_flag("--body-read-timeout", &args.body_read_timeout)?,
            upload_timeout: duration_flag("--upload-timeout", &args.upload_timeout)?,
            drain_timeout: duration_flag("--drain-timeout", &args.drain_timeout)?,
        };
        let ledger = LedgerConfig {
            retention: match args.usage_retention.as_str() {
                "forever" => None,
                text => Some(
                    humantime::parse_duration(text).map_err(|e| anyhow::anyhow!("--usage-retention: {text:?}: {e}"))?,
                ),
            },
            pricing: match &args.pricing {
                None => Pricing::default(),
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("--pricing: reading {}", path.display()))?;
                    Pricing::parse(&text).with_context(|| format!("--pricing {}", path.display()))?
                }
            },
            queue_capacity: args.ledger_queue,
            durability: if args.ledger_sync { Durability::Sync } else { Durability::Batched },
            ..LedgerConfig::default()
        };
        anyhow::ensure!(args.async_concurrency > 0, "--async-concurrency must be above 0");
        let delivery = DeliverySpec {
            retries: args.async_retries,
            backoff_ms: duration_flag("--async-backoff", &args.async_backoff)?.as_millis() as u64,
            backoff_policy: BackoffPolicy::parse(&args.async_backoff_policy)
                .map_err(|e| anyhow::anyhow!("--async-backoff-policy: {e}"))?,
            timeout_ms: duration_flag("--async-timeout", &args.async_timeout)?.as_millis() as u64,
        };
        delivery.validate().map_err(|(field, e)| anyhow::anyhow!("--async-{field}: {e}"))?;
        // Stopping triggers and async work shares the drain budget with HTTP requests.
        let drain = gateway.drain_timeout;
        let invocations = InvocationsConfig {
            concurrency: args.async_concurrency,
            delivery,
            retention: duration_flag("--async-retention", &args.async_retention)?,
            drain,
        };
        let triggers = TriggersConfig { drain };
        Ok(Self { wasm, containers, memory_budget, scheduler, gateway, ledger, triggers, invocations })
    }
}

/// Container settings. crun's state (on tmpfs) and the cgroups are named for the data dir, so
/// nodes on one host never see each other's containers.
fn container_config(args: &UpArgs) -> anyhow::Result<ContainerConfig> {
    let dir = std::path::absolute(&args.data_dir).unwrap_or_else(|_| args.data_dir.clone());
    let node = hex::encode(&Sha256::digest(dir.as_os_str().as_encoded_bytes())[..6]);
    let ready_timeout = duration_flag("--container-ready-timeout", &args.container_ready_timeout)?;
    anyhow::ensure!(!ready_timeout.is_zero(), "--container-ready-timeout must be above 0");
    anyhow::ensure!(args.container_pids_limit > 0, "--container-pids-limit must be above 0");
    let usage_interval = duration_flag("--replica-usage-interval", &args.replica_usage_interval)?;
    anyhow::ensure!(usage_interval >= Duration::from_secs(1), "--replica-usage-interval must be at least 1s");
    Ok(ContainerConfig {
        crun: args.crun.clone(),
        bundles: args.data_dir.join("containers"),
        state: PathBuf::from("/run/wisp").join(&node),
        cgroup_parent: format!("/wisp/{node}"),
        ready_timeout,
        stop_grace: duration_flag("--container-stop-grace", &args.container_stop_grace)?,
        pids_limit: args.container_pids_limit,
        max_parallel_starts: 16,
        usage_interval,
    })
}

/// Says which container limits this host enforces: `wisp up`'s output and `/metrics`.
fn report_containers(containers: &Result<ContainerRuntime, String>, registry: &mut Registry) {
    use prometheus_client::metrics::{family::Family, gauge::Gauge};
    let enforced = Family::<Vec<(String, String)>, Gauge>::default();
    registry.register(
        "wisp_container_limit_enforced",
        "Whether this host enforces a container limit (1) or not (0), by limit",
        enforced.clone(),
    );
    match containers {
        Ok(c) => {
            let e = c.enforcement();
            let word = |on: bool| if on { "enforced" } else { "NOT enforced (no usable cgroups)" };
            for (limit, on) in
                [("memory", e.memory), ("pids", e.pids), ("timeout", e.timeout), ("memory_metering", e.memory_metering)]
            {
                enforced.get_or_create(&vec![("limit".to_string(), limit.to_string())]).set(on as i64);
            }
            println!(
                "wisp: containers: crun, {}: memory limit {}, pids limit {}, request timeout enforced",
                e.cgroups.describe(),
                word(e.memory),
                word(e.pids)
            );
        }
        Err(why) => println!("wisp: containers: unavailable ({why}); Wasm functions only"),
    }
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,wasmtime=warn".into()),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let config = NodeConfig::from_args(&args)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        runtime.worker_threads(n);
    }
    runtime.enable_all().build()?.block_on(serve(args, config))
}

async fn serve(args: UpArgs, mut config: NodeConfig) -> anyhow::Result<()> {
    let data_dir = &args.data_dir;
    // Bound first so service URLs carry the real port (`--listen 127.0.0.1:0` included);
    // connections wait in the backlog until the gateway serves.
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    config.scheduler.url_port = addr.port();
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let shutdown = CancellationToken::new();
    let mut registry = Registry::default();

    let ledger = Ledger::open(data_dir, config.ledger)
        .with_context(|| format!("opening the ledger in {}", data_dir.display()))?;
    let exporter = crate::export::start(args.export.config()?, data_dir, &mut registry)?;
    let budget = MemoryBudget::new(config.memory_budget);
    let wasm = WasmRuntime::new(config.wasm, &data_dir.join("cache"), budget).context("starting the Wasm runtime")?;
    let containers = ContainerRuntime::new(config.containers).await.map_err(|e| e.to_string());
    let scheduler = Scheduler::new(config.scheduler, wasm, containers.clone(), ledger.clone(), &mut registry)
        .await
        .with_context(|| format!("opening {}", data_dir.display()))?;
    let autoscaler = scheduler.spawn_autoscaler(shutdown.child_token());
    let drain_timeout = config.gateway.drain_timeout;
    let triggers =
        Triggers::start(scheduler.clone(), config.triggers, &mut registry).await.context("starting the triggers")?;
    let invocations = Invocations::open(data_dir, scheduler.clone(), config.invocations)
        .with_context(|| format!("opening the async invocation store in {}", data_dir.display()))?;
    let access = open_access(data_dir)?;
    let gateway =
        Gateway::new(scheduler.clone(), access, triggers.clone(), invocations.clone(), config.gateway, &mut registry);

    // Scripts and tests read this line to find the node.
    // Signal handlers are installed before anyone can learn the address: a SIGTERM right
    // after the line below must shut down cleanly, not kill the process.
    let signals = Signals::install()?;
    println!("wisp: listening on http://{addr}");
    report_containers(&containers, &mut registry);
    if let Some(dir) = &args.deploy_dir {
        deploy_dir(&scheduler, dir, addr).await?;
        println!("wisp: manage with   wisp --node http://{addr} ls | describe NAME | logs NAME | usage");
    }
    std::io::stdout().flush()?;
    tracing::info!(%addr, functions = scheduler.list().len(), "node up");

    tokio::spawn(signals.shutdown_on_signal(shutdown.clone()));
    // 1. ingress: the gateway stops accepting and drains its connections (a 202 answered is
    // stored already); triggers stop consuming, finish or abandon in-flight events, commit and
    // leave their brokers; async invocations still running resume at the next start.
    gateway.serve(listener, registry, shutdown.clone()).await;
    tokio::join!(triggers.shutdown(), invocations.shutdown());
    // 2. work admitted from any source finishes.
    if !scheduler.drain(drain_timeout).await {
        tracing::warn!("shutdown: invocations still running after {drain_timeout:?}");
    }
    let _ = autoscaler.await;
    // Containers must not outlive the node (they are its children only while it runs).
    if let Ok(containers) = &containers {
        containers.shutdown().await;
    }
    // 3. the ledger writes everything it was given.
    ledger.close().await;
    tracing::info!("node stopped; usage ledger flushed");
    // What is not exported yet stays in the ledger for the next start.
    if let Some(exporter) = exporter {
        let _ = tokio::task::spawn_blocking(move || exporter.stop()).await;
    }
    Ok(())
}

/// The node's tokens; on first start, an admin token written to `DATA_DIR/admin-token` (before
/// the listening line, which tells scripts the file is there).
fn open_access(data_dir: &Path) -> anyhow::Result<wisp_access::Access> {
    let access = wisp_access::Access::open(data_dir)
        .with_context(|| format!("opening the token store in {}", data_dir.display()))?;
    let file = data_dir.join(wisp_access::ADMIN_TOKEN_FILE);
    match access.ensure_admin_token(&file).context("creating the first admin token")? {
        Some(file) => eprintln!(
            "wisp: created an admin token in {} (mode 0600): pass it with --token, WISP_TOKEN or a \
             context (wisp context set); the CLI reads ./.wisp/admin-token by itself",
            file.display()
        ),
        None if file.exists() => eprintln!("wisp: admin token in {}", file.display()),
        None => eprintln!("wisp: {} is gone; the admin tokens made before still work (wisp token ls)", file.display()),
    }
    Ok(access)
}

/// Deploys every `*.wasm` in `dir` (named by file stem) that is new or changed, all at once:
/// their compilations run in parallel.
async fn deploy_dir(scheduler: &Scheduler, dir: &Path, addr: SocketAddr) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("--deploy-dir {}", dir.display()))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    entries.sort();
    let deploys = entries.iter().map(|path| async move {
        let name = path.file_stem().and_then(|s| s.to_str())?;
        let bytes = match tokio::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!("skipping {}: {e}", path.display());
                return None;
            }
        };
        let hash = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let unchanged = scheduler.describe(name).await.is_ok_and(|f| f.component_hash == hash);
        if !unchanged {
            match scheduler.deploy(name, &[], bytes.into()).await {
                Ok(f) => tracing::info!(function = name, revision = f.revision, "deployed from {}", path.display()),
                Err(e) => {
                    tracing::warn!("skipping {}: {e}", path.display());
                    return None;
                }
            }
        }
        Some(name)
    });
    for name in futures::future::join_all(deploys).await.into_iter().flatten() {
        println!("wisp: function {name:<12} curl http://{addr}/fn/{name}");
    }
    Ok(())
}

/// SIGTERM and SIGINT, registered with the kernel as soon as this exists.
struct Signals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("handling SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("handling SIGINT")?,
        })
    }

    async fn shutdown_on_signal(mut self, shutdown: CancellationToken) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        tracing::info!("shutting down: draining in-flight requests");
        shutdown.cancel();
    }
}

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::api::Function;
use crate::client::{self, Client};
use crate::human;
use crate::output::{self, Output};

/// Deploy a component as the new revision of a function (traffic switches to it)
///
/// Settings not given keep the function's previous revision's values (the node's defaults
/// for a new function). Sizes take plain bytes or Ki/Mi/Gi (K/M/G)
/// suffixes; durations take ms, s, m or h suffixes.
#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// Function name
    pub name: String,
    /// The component to deploy (a .wasm file)
    #[arg(value_name = "FILE.wasm")]
    pub file: PathBuf,
    /// Namespace of the function
    #[arg(short = 'n', long, default_value = wisp_scheduler::DEFAULT_NAMESPACE, value_name = "NS")]
    pub namespace: String,
    /// Instances kept instantiated and ready (0 scales to zero)
    #[arg(long, value_name = "N")]
    pub min_warm: Option<u64>,
    /// Memory limit of one instance, e.g. 64Mi
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Wall-clock limit of one invocation, e.g. 10s
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Scale to zero (--min-warm included) after this long without requests, e.g. 60s
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Largest request body accepted, e.g. 1Mi
    #[arg(long, value_name = "SIZE")]
    pub max_request_body: Option<String>,
    /// Largest response body the function may return, e.g. 8Mi
    #[arg(long, value_name = "SIZE")]
    pub max_response_body: Option<String>,
    /// Invocations run at once before more get 429 (0: the node's --function-concurrency)
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<u32>,
}

/// Uploading and compiling a big component takes a while.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);

pub fn run(client: &Client, output: Output, args: DeployArgs) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let settings = [
        ("min_warm", args.min_warm.map(|n| n.to_string())),
        ("memory", args.memory),
        ("timeout", args.timeout),
        ("idle_timeout", args.idle_timeout),
        ("max_request_body", args.max_request_body),
        ("max_response_body", args.max_response_body),
        ("max_concurrency", args.max_concurrency.map(|n| n.to_string())),
    ];
    let req = client
        .admin("POST", &format!("/v1/functions/{}", client::segment(&args.name)))
        .timeout(DEPLOY_TIMEOUT)
        .set("Content-Type", "application/wasm");
    let mut req = super::with_namespace(req, &args.namespace);
    for (key, value) in &settings {
        if let Some(value) = value {
            req = req.query(key, value);
        }
    }
    let body = client.text(req, Some(&wasm))?;
    if output == Output::Json {
        return Ok(output::print(&body)?);
    }
    let f: Function = client::parse(&body)?;
    output::print(&format!(
        "deployed {} revision {} ({}, {})",
        f.name,
        f.revision,
        human::short_hash(&f.component_hash),
        human::size(f.component_bytes)
    ))?;
    Ok(())
}

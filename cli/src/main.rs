//! `wisp`: the command line of a Wisp node. Every command but `up` is a thin client of the
//! node's admin API (docs/admin-api.md); the node validates names and settings.

mod api;
mod client;
mod cmd;
mod config;
mod export;
mod human;
mod output;
mod table;
mod up;

use std::process::ExitCode;

// The node allocates per request across worker threads; glibc's arenas contended under load.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

use crate::client::Client;
use crate::cmd::Format;

/// Wisp: serverless WebAssembly functions
#[derive(Parser, Debug)]
#[command(name = "wisp", version, propagate_version = true)]
struct Cli {
    /// Base URL of the Wisp node [default: the context's node, else http://127.0.0.1:8080]
    #[arg(long, global = true, env = "WISP_NODE", value_name = "URL", help_heading = "Global options")]
    node: Option<String>,
    /// Bearer token sent with every request [default: the context's token, else
    /// ./.wisp/admin-token for a node on this machine]
    #[arg(
        long,
        global = true,
        env = "WISP_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "Global options"
    )]
    token: Option<String>,
    /// Named context (node and token) from the config file [default: its current_context]
    #[arg(long, global = true, env = "WISP_CONTEXT", value_name = "NAME", help_heading = "Global options")]
    context: Option<String>,
    /// Output format: aligned text, the node's JSON unchanged, or YAML (`get`, `describe`,
    /// `revisions`, `apply`, `push`, `image`); `wisp get` prints Knative objects in both JSON and YAML
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table, help_heading = "Global options")]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Up(Box<up::UpArgs>),
    Apply(cmd::apply::ApplyArgs),
    Push(cmd::push::PushArgs),
    Image(cmd::image::ImageArgs),
    Get(cmd::get::GetArgs),
    Revisions(cmd::revisions::RevisionsArgs),
    Deploy(cmd::deploy::DeployArgs),
    Invoke(cmd::invoke::InvokeArgs),
    #[command(visible_alias = "list")]
    Ls(cmd::ls::LsArgs),
    Describe(cmd::describe::DescribeArgs),
    Logs(cmd::logs::LogsArgs),
    #[command(visible_alias = "delete")]
    Rm(cmd::rm::RmArgs),
    Usage(cmd::usage::UsageArgs),
    Bill(cmd::bill::BillArgs),
    Trigger(cmd::trigger::TriggerArgs),
    Invocation(cmd::invocation::InvocationArgs),
    Token(cmd::token::TokenArgs),
    Secret(cmd::secret::SecretArgs),
    Context(cmd::context::ContextArgs),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let out = cli.output;
    // `up` and `context` talk to no node.
    let command = match cli.command {
        Command::Up(args) => return up::run(*args),
        Command::Context(args) => return cmd::context::run(out.plain("context")?, args, cli.node, cli.token),
        command => command,
    };
    let target = config::resolve(cli.node, cli.token, cli.context)?;
    let source = target.source.clone();
    let client = || Client::new(&target.node).with_token(target.token.clone());
    let ran = match command {
        Command::Up(_) | Command::Context(_) => unreachable!("handled above"),
        Command::Apply(args) => cmd::apply::run(&client(), out, args),
        Command::Push(args) => cmd::push::run(&client(), out, args),
        Command::Image(args) => cmd::image::run(&client(), out, args),
        Command::Get(args) => cmd::get::run(&client(), out, args),
        Command::Revisions(args) => cmd::revisions::run(&client(), out, args),
        Command::Describe(args) => cmd::describe::run(&client(), out, args),
        Command::Deploy(args) => cmd::deploy::run(&client(), out.plain("deploy")?, args),
        Command::Invoke(args) => cmd::invoke::run(&client(), out.plain("invoke")?, args),
        Command::Ls(args) => cmd::ls::run(&client(), out.plain("ls")?, args),
        Command::Logs(args) => cmd::logs::run(&client(), out.plain("logs")?, args),
        Command::Rm(args) => cmd::rm::run(&client(), out.plain("rm")?, args),
        Command::Usage(args) => cmd::usage::run(&client(), out.plain("usage")?, args),
        Command::Bill(args) => cmd::bill::run(&client(), out.plain("bill")?, args),
        Command::Trigger(args) => cmd::trigger::run(&client(), out.plain("trigger")?, args),
        Command::Invocation(args) => cmd::invocation::run(&client(), out.plain("invocation")?, args),
        Command::Token(args) => cmd::token::run(&client(), out.plain("token")?, args),
        Command::Secret(args) => cmd::secret::run(&client(), out.plain("secret")?, args),
    };
    ran.map_err(|e| with_token_hint(e, &source))
}

/// A 401 or 403 says which token was sent and how to send another.
fn with_token_hint(err: anyhow::Error, source: &config::TokenSource) -> anyhow::Error {
    let status = err.downcast_ref::<client::ApiError>().map(|e| e.status);
    let hint = match status {
        Some(401) => {
            "pass a valid token with --token or WISP_TOKEN, or use a context (wisp context set NAME \
                      --node URL --token-file FILE); a node's first admin token is in its DATA_DIR/admin-token"
        }
        Some(403) => "its role or namespace does not allow this; use a token that does (wisp token ls)",
        _ => return err,
    };
    anyhow::anyhow!("{err:#}\n  sent {}: {hint}", source.describe())
}

fn main() -> ExitCode {
    // The node runs itself as its compiler (wisp_runtime's child process): not a user command.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 4 && args[1] == wisp_runtime::wasm::COMPILE_SUBCOMMAND {
        let key = args[3].to_string_lossy();
        return match wisp_runtime::wasm::compile_child(std::path::Path::new(&args[2]), &key) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(e.exit_code() as u8)
            }
        };
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => output::report(err),
    }
}

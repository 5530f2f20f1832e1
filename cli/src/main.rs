//! `wisp`: the command line of a Wisp node. Every command but `up` is a thin client of the
//! node's admin API (docs/admin-api.md); the node validates names and settings.

mod api;
mod client;
mod cmd;
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
    /// Base URL of the Wisp node
    #[arg(
        long,
        global = true,
        env = "WISP_NODE",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL",
        help_heading = "Global options"
    )]
    node: String,
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
    Trigger(cmd::trigger::TriggerArgs),
    Invocation(cmd::invocation::InvocationArgs),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let client = || Client::new(&cli.node);
    let out = cli.output;
    match cli.command {
        Command::Up(args) => up::run(*args),
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
        Command::Trigger(args) => cmd::trigger::run(&client(), out.plain("trigger")?, args),
        Command::Invocation(args) => cmd::invocation::run(&client(), out.plain("invocation")?, args),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => output::report(err),
    }
}

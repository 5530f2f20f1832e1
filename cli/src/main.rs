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
use crate::output::Output;

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
    /// Output format: aligned text, or the node's JSON unchanged
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table, help_heading = "Global options")]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Up(Box<up::UpArgs>),
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
        Command::Deploy(args) => cmd::deploy::run(&client(), out, args),
        Command::Invoke(args) => cmd::invoke::run(&client(), out, args),
        Command::Ls(args) => cmd::ls::run(&client(), out, args),
        Command::Describe(args) => cmd::describe::run(&client(), out, args),
        Command::Logs(args) => cmd::logs::run(&client(), out, args),
        Command::Rm(args) => cmd::rm::run(&client(), out, args),
        Command::Usage(args) => cmd::usage::run(&client(), out, args),
        Command::Trigger(args) => cmd::trigger::run(&client(), out, args),
        Command::Invocation(args) => cmd::invocation::run(&client(), out, args),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => output::report(err),
    }
}

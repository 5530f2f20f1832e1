//! One module per subcommand: a clap args struct (its `///` comments are the help) and `run`.

pub mod apply;
pub mod bill;
pub mod context;
pub mod deploy;
pub mod describe;
pub mod get;
pub mod image;
pub mod invocation;
pub mod invoke;
pub mod logs;
pub mod ls;
pub mod push;
pub mod revisions;
pub mod rm;
pub mod secret;
pub mod token;
pub mod trigger;
pub mod usage;

use crate::output::{self, Output};

/// The global `-o` flag: [`Output`] plus YAML, which the Knative-facing commands (`get`,
/// `describe`, `revisions`, `apply`, `push`, `image`) print; the others refuse it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned, human-readable text.
    Table,
    /// The node's JSON answer, unchanged (`wisp get`: the Knative object).
    Json,
    /// The same as YAML (`wisp get`, `describe`, `revisions`, `apply`, `push`, `image` only).
    Yaml,
}

impl Format {
    /// The format of a command that prints text or JSON only.
    pub fn plain(self, command: &str) -> anyhow::Result<Output> {
        match self {
            Format::Table => Ok(Output::Table),
            Format::Json => Ok(Output::Json),
            Format::Yaml => anyhow::bail!(
                "`wisp {command}` prints text or JSON (-o json); -o yaml is for get, describe, revisions, apply, push and image"
            ),
        }
    }
}

/// Prints `value` as JSON (pretty) or YAML; `false` for the text format (the caller prints).
pub fn print_data(format: Format, value: &serde_json::Value) -> anyhow::Result<bool> {
    match format {
        Format::Table => Ok(false),
        Format::Json => {
            output::print(&serde_json::to_string_pretty(value)?)?;
            Ok(true)
        }
        Format::Yaml => {
            output::print(&wisp_manifest::to_yaml(value))?;
            Ok(true)
        }
    }
}

/// Prints a node's JSON answer unchanged (`-o json`) or as YAML; `false` for text.
pub fn print_body(format: Format, body: &str) -> anyhow::Result<bool> {
    match format {
        Format::Table => Ok(false),
        Format::Json => {
            output::print(body)?;
            Ok(true)
        }
        Format::Yaml => print_data(format, &crate::client::parse(body)?),
    }
}

/// `?namespace=NS` for the functions API, left off for the default namespace (so older nodes,
/// which refuse unknown parameters on deploy, keep working).
pub fn with_namespace(req: ureq::Request, namespace: &str) -> ureq::Request {
    if namespace == wisp_scheduler::DEFAULT_NAMESPACE { req } else { req.query("namespace", namespace) }
}

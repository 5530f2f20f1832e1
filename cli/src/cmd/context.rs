use std::path::PathBuf;

use crate::config::{self, Config, Context};
use crate::output::{self, Output};
use crate::table::Table;

/// Named contexts: a node and its token, kept in the config file (like kubectl's)
///
/// The file is $WISP_CONFIG, else ~/.config/wisp/config.yaml (mode 0600). `--context NAME` (or
/// WISP_CONTEXT) picks a context for one command; `wisp context use` sets the current one.
/// --node/--token (and WISP_NODE/WISP_TOKEN) override a context's values.
#[derive(clap::Args, Debug)]
pub struct ContextArgs {
    #[command(subcommand)]
    pub command: ContextCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ContextCommand {
    /// Add or replace a context (the first one becomes current): `wisp context set NAME --node
    /// URL [--token TOKEN | --token-file FILE]`
    Set {
        name: String,
        /// A file holding the token, read at each use (keeps it out of the config file);
        /// `--token` stores the token itself
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// Make a context the current one
    Use { name: String },
    /// List contexts: CURRENT NAME NODE TOKEN (tokens masked)
    #[command(visible_alias = "list")]
    Ls,
    /// Remove a context
    #[command(visible_alias = "delete")]
    Rm { name: String },
}

/// `node` and `token` are the global `--node` and `--token` (what `set` stores).
pub fn run(output: Output, args: ContextArgs, node: Option<String>, token: Option<String>) -> anyhow::Result<()> {
    let path = Config::path()?;
    let mut config = Config::load(&path)?;
    let missing = |name: &str| anyhow::anyhow!("no context named {name:?} in {} (wisp context ls)", path.display());
    match args.command {
        ContextCommand::Set { name, token_file } => {
            anyhow::ensure!(!name.trim().is_empty(), "context name: empty");
            let node = node.ok_or_else(|| anyhow::anyhow!("give the context's node: --node URL"))?;
            anyhow::ensure!(token.is_none() || token_file.is_none(), "give --token or --token-file, not both");
            // Relative to where it was given, not where `wisp` runs later.
            let token_file = token_file.map(|f| std::path::absolute(&f).unwrap_or(f));
            let context = Context { name: name.clone(), node, token, token_file };
            match config.contexts.iter_mut().find(|c| c.name == name) {
                Some(existing) => *existing = context,
                None => config.contexts.push(context),
            }
            if config.current_context.is_none() {
                config.current_context = Some(name.clone());
            }
            config.save(&path)?;
            output::print(&format!("context {name} set in {}", path.display()))?;
        }
        ContextCommand::Use { name } => {
            config.context(&name).ok_or_else(|| missing(&name))?;
            config.current_context = Some(name.clone());
            config.save(&path)?;
            output::print(&format!("current context: {name}"))?;
        }
        ContextCommand::Rm { name } => {
            let before = config.contexts.len();
            config.contexts.retain(|c| c.name != name);
            anyhow::ensure!(config.contexts.len() < before, missing(&name));
            if config.current_context.as_deref() == Some(&name) {
                config.current_context = None;
            }
            config.save(&path)?;
            output::print(&format!("removed context {name}"))?;
        }
        ContextCommand::Ls => {
            let token = |c: &Context| match (&c.token, &c.token_file) {
                (Some(t), _) => config::mask(t),
                (None, Some(file)) => format!("file {}", file.display()),
                (None, None) => "-".into(),
            };
            if output == Output::Json {
                let contexts: Vec<_> = config
                    .contexts
                    .iter()
                    .map(|c| serde_json::json!({ "name": c.name, "node": c.node, "token": token(c) }))
                    .collect();
                let value = serde_json::json!({ "current_context": config.current_context, "contexts": contexts });
                return Ok(output::print(&serde_json::to_string_pretty(&value)?)?);
            }
            let mut table = Table::new(&["CURRENT", "NAME", "NODE", "TOKEN"]);
            for c in &config.contexts {
                let current = if config.current_context.as_deref() == Some(c.name.as_str()) { "*" } else { "" };
                table.row(vec![current.into(), c.name.clone(), c.node.clone(), token(c)]);
            }
            output::print(&table.render(""))?;
        }
    }
    Ok(())
}

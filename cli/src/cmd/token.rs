use serde::Deserialize;

use crate::client::{self, Client};
use crate::human;
use crate::output::{self, Output};
use crate::table::Table;

/// Create, list and revoke the node's bearer tokens (admin only)
///
/// A token has a role and a namespace scope. admin: everything, tokens included (always all
/// namespaces); deployer: deploy, apply, delete, logs, images, triggers and secrets, and
/// invoke private functions; viewer: read only (lists, describe, logs, usage, bills); invoker:
/// only invoke private functions. The node stores only a hash: a token is shown once, when it
/// is created.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token and print it (the only time it is shown)
    Create {
        /// A name to tell it by (letters, digits, '-', '_', '.'), unique on the node
        name: String,
        /// admin, deployer, viewer or invoker
        #[arg(long, value_name = "ROLE")]
        role: String,
        /// The one namespace it acts in
        #[arg(short = 'n', long, value_name = "NS", conflicts_with = "all_namespaces")]
        namespace: Option<String>,
        /// Act in every namespace (admin tokens always do)
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// List tokens: ID NAME ROLE NAMESPACE CREATED (never their secrets)
    #[command(visible_alias = "list")]
    Ls,
    /// Revoke a token (by id or name): refused from the next request on
    #[command(visible_alias = "rm")]
    Revoke {
        #[arg(value_name = "ID|NAME")]
        id: String,
    },
}

#[derive(Deserialize)]
struct Token {
    id: String,
    name: String,
    role: String,
    namespace: String,
    created_at_ms: u64,
}

pub fn run(client: &Client, output: Output, args: TokenArgs) -> anyhow::Result<()> {
    match args.command {
        TokenCommand::Create { name, role, namespace, all_namespaces } => {
            let namespace = match (namespace, all_namespaces) {
                (Some(ns), _) => Some(ns),
                (None, true) => Some("*".to_string()),
                (None, false) if role == "admin" => None,
                (None, false) => anyhow::bail!("give the token's namespace: --namespace NS, or --all-namespaces"),
            };
            let body = serde_json::json!({ "name": name, "role": role, "namespace": namespace });
            let req = client.admin("POST", "/v1/tokens").set("Content-Type", "application/json");
            let answer = client.text(req, Some(body.to_string().as_bytes()))?;
            if output == Output::Json {
                return Ok(output::print(&answer)?);
            }
            #[derive(Deserialize)]
            struct Created {
                token: String,
                #[serde(flatten)]
                info: Token,
            }
            let created: Created = client::parse(&answer)?;
            let info = created.info;
            eprintln!(
                "created token {} ({}: {} in namespace {}); it is shown only now:",
                info.id, info.name, info.role, info.namespace
            );
            Ok(output::print(&created.token)?)
        }
        TokenCommand::Ls => {
            let answer = client.get("/v1/tokens")?;
            if output == Output::Json {
                return Ok(output::print(&answer)?);
            }
            #[derive(Deserialize)]
            struct List {
                tokens: Vec<Token>,
            }
            let list: List = client::parse(&answer)?;
            let now = human::now_ms();
            let mut table = Table::new(&["ID", "NAME", "ROLE", "NAMESPACE", "CREATED"]);
            for t in list.tokens {
                table.row(vec![t.id, t.name, t.role, t.namespace, human::age(t.created_at_ms, now)]);
            }
            Ok(output::print(&table.render(""))?)
        }
        TokenCommand::Revoke { id } => {
            let answer = client.text(client.admin("DELETE", &format!("/v1/tokens/{}", client::segment(&id))), None)?;
            if output == Output::Json {
                return Ok(output::print(&answer)?);
            }
            #[derive(Deserialize)]
            struct Revoked {
                revoked: Token,
            }
            let t = client::parse::<Revoked>(&answer)?.revoked;
            Ok(output::print(&format!("revoked token {} ({})", t.id, t.name))?)
        }
    }
}

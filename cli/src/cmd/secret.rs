use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::Deserialize;

use crate::client::{self, Client};
use crate::human;
use crate::output::{self, Output};
use crate::table::Table;

/// Create, list and delete secrets: named KEY=VALUE sets in a namespace
///
/// Functions read them as environment variables: `wisp deploy --secret NAME` (every key), or a
/// Knative manifest's `env[].valueFrom.secretKeyRef` / `envFrom[].secretRef`. Values are stored
/// on the node only, apart from settings, and never shown again: `ls`, `describe` and `get`
/// show key names only. A changed secret reaches a Wasm function's next instances at once and a
/// container's with its next revision.
#[derive(clap::Args, Debug)]
pub struct SecretArgs {
    #[command(subcommand)]
    pub command: SecretCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum SecretCommand {
    /// Create a secret, or replace all of its keys
    #[command(visible_alias = "set")]
    Create {
        /// The secret's name (a DNS label)
        name: String,
        /// A key and its value (repeatable)
        #[arg(long = "from-literal", value_name = "KEY=VALUE")]
        literals: Vec<String>,
        /// A key and the file holding its value (repeatable)
        #[arg(long = "from-file", value_name = "KEY=PATH")]
        files: Vec<String>,
        /// Namespace of the secret
        #[arg(short = 'n', long, default_value = wisp_scheduler::DEFAULT_NAMESPACE, value_name = "NS")]
        namespace: String,
    },
    /// List secrets: NAMESPACE NAME KEYS UPDATED (never their values)
    #[command(visible_alias = "list")]
    Ls {
        /// Only this namespace
        #[arg(short = 'n', long, value_name = "NS")]
        namespace: Option<String>,
    },
    /// Delete a secret (refused while a function reads it)
    #[command(visible_alias = "delete")]
    Rm {
        name: String,
        /// Namespace of the secret
        #[arg(short = 'n', long, default_value = wisp_scheduler::DEFAULT_NAMESPACE, value_name = "NS")]
        namespace: String,
    },
}

#[derive(Deserialize)]
struct Secret {
    namespace: String,
    name: String,
    keys: Vec<String>,
    updated_at_ms: u64,
}

pub fn run(client: &Client, output: Output, args: SecretArgs) -> anyhow::Result<()> {
    match args.command {
        SecretCommand::Create { name, literals, files, namespace } => {
            let data = data(&literals, &files)?;
            let body = serde_json::json!({ "data": data }).to_string();
            let path = format!("/v1/secrets/{}", client::segment(&name));
            let req = client.admin("PUT", &path).query("namespace", &namespace).set("Content-Type", "application/json");
            let answer = client.text(req, Some(body.as_bytes()))?;
            if output == Output::Json {
                return Ok(output::print(&answer)?);
            }
            let s: Secret = client::parse(&answer)?;
            Ok(output::print(&format!("secret {}/{} stored (keys: {})", s.namespace, s.name, s.keys.join(", ")))?)
        }
        SecretCommand::Ls { namespace } => {
            let mut req = client.admin("GET", "/v1/secrets");
            if let Some(ns) = &namespace {
                req = req.query("namespace", ns);
            }
            let answer = client.text(req, None)?;
            if output == Output::Json {
                return Ok(output::print(&answer)?);
            }
            #[derive(Deserialize)]
            struct List {
                secrets: Vec<Secret>,
            }
            let list: List = client::parse(&answer)?;
            let now = human::now_ms();
            let mut table = Table::new(&["NAMESPACE", "NAME", "KEYS", "UPDATED"]);
            for s in list.secrets {
                table.row(vec![s.namespace, s.name, s.keys.join(","), human::age(s.updated_at_ms, now)]);
            }
            Ok(output::print(&table.render("no secrets"))?)
        }
        SecretCommand::Rm { name, namespace } => {
            let path = format!("/v1/secrets/{}", client::segment(&name));
            let answer = client.text(client.admin("DELETE", &path).query("namespace", &namespace), None)?;
            if output == Output::Json {
                return Ok(output::print(&answer)?);
            }
            Ok(output::print(&format!("deleted secret {namespace}/{name}"))?)
        }
    }
}

/// The secret's data from `--from-literal K=V` and `--from-file K=PATH`; a key given twice is
/// an error (as in kubectl).
fn data(literals: &[String], files: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut data = BTreeMap::new();
    let mut put = |key: &str, value: String, flag: &str| {
        anyhow::ensure!(!key.is_empty(), "{flag}: the key is empty (give KEY=...)");
        anyhow::ensure!(data.insert(key.to_string(), value).is_none(), "{flag}: key {key:?} is given twice");
        Ok(())
    };
    for literal in literals {
        let (key, value) = literal.split_once('=').context("--from-literal takes KEY=VALUE")?;
        put(key, value.to_string(), "--from-literal")?;
    }
    for file in files {
        let (key, path) = file.split_once('=').context("--from-file takes KEY=PATH")?;
        let path = PathBuf::from(path);
        let value = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        put(key, value, "--from-file")?;
    }
    anyhow::ensure!(!data.is_empty(), "give the secret's keys: --from-literal KEY=VALUE or --from-file KEY=PATH");
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_files_make_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret=x\n").unwrap();
        let d = data(&["A=1=2".into(), "B=".into()], &[format!("PW={}", file.display())]).unwrap();
        assert_eq!(d["A"], "1=2");
        assert_eq!(d["B"], "");
        assert_eq!(d["PW"], "s3cret=x\n");
        let twice = data(&["A=1".into(), "A=2".into()], &[]).unwrap_err().to_string();
        assert!(twice.contains("\"A\" is given twice"), "{twice}");
        assert!(data(&["novalue".into()], &[]).unwrap_err().to_string().contains("KEY=VALUE"));
        assert!(data(&[], &[]).is_err());
    }
}

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::api::Function;
use crate::client::{self, Client};
use crate::human;
use crate::output::{self, Output};

/// Deploy a component or an image as the new revision of a function (traffic switches to it)
///
/// Give either FILE.wasm (a component, uploaded) or --image REF: a local oci-archive or OCI
/// layout directory (imported first as NAME:latest), or an image already on the node
/// (NAME[:TAG] from `wisp image ls`, or sha256:<hex>). Settings not given keep the function's
/// previous revision's values (the node's defaults for a new function). Sizes take plain bytes
/// or Ki/Mi/Gi (K/M/G) suffixes; durations take ms, s, m or h suffixes.
#[derive(clap::Args, Debug)]
#[command(
    group = clap::ArgGroup::new("source").required(true).args(["file", "image"]),
    override_usage = "wisp deploy [OPTIONS] <NAME> <FILE.wasm>\n       wisp deploy [OPTIONS] <NAME> --image <REF|PATH>"
)]
pub struct DeployArgs {
    /// Function name
    pub name: String,
    /// The component to deploy (a .wasm file)
    #[arg(value_name = "FILE.wasm")]
    pub file: Option<PathBuf>,
    /// The image to deploy: a local oci-archive or OCI layout directory (imported first), or
    /// an image on the node, NAME[:TAG] or sha256:<hex>
    #[arg(long, value_name = "REF|PATH")]
    pub image: Option<String>,
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
    /// Make the function private: callers need a token that may invoke in its namespace
    /// (Knative's `networking.knative.dev/visibility: cluster-local`); kept on redeploys
    #[arg(long, conflicts_with = "public")]
    pub private: bool,
    /// Make a private function public again
    #[arg(long)]
    pub public: bool,
    /// An environment variable the function sees (repeatable; replaces the previous
    /// revision's list; --env '' clears it)
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// A secret (`wisp secret create`) whose every key becomes an environment variable
    /// (repeatable; replaces the previous list; --secret '' clears it)
    #[arg(long, value_name = "NAME")]
    pub secret: Vec<String>,
    /// An origin the function may send HTTP requests to, e.g. https://api.example.com
    /// (repeatable; replaces the previous list; --allow-outbound '' clears it). Wasm only
    #[arg(long, value_name = "URL")]
    pub allow_outbound: Vec<String>,
    /// Requests one Wasm instance may serve one after another (default 1: a fresh instance per
    /// request). Above 1, guest state (globals, heap, secrets read into memory) persists
    /// between those requests of this function; never across functions, and an instance that
    /// trapped, timed out or failed its response is dropped
    #[arg(long, value_name = "N")]
    pub max_instance_reuse_count: Option<u32>,
}

/// Uploading and compiling a big component takes a while.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);

pub fn run(client: &Client, output: Output, args: DeployArgs) -> anyhow::Result<()> {
    let settings = [
        ("min_warm", args.min_warm.map(|n| n.to_string())),
        ("memory", args.memory),
        ("timeout", args.timeout),
        ("idle_timeout", args.idle_timeout),
        ("max_request_body", args.max_request_body),
        ("max_response_body", args.max_response_body),
        ("max_concurrency", args.max_concurrency.map(|n| n.to_string())),
        ("max_instance_reuse_count", args.max_instance_reuse_count.map(|n| n.to_string())),
        ("private", (args.private || args.public).then(|| args.private.to_string())),
    ];
    let req = client.admin("POST", &format!("/v1/functions/{}", client::segment(&args.name))).timeout(DEPLOY_TIMEOUT);
    let mut req = super::with_namespace(req, &args.namespace);
    for (key, value) in &settings {
        if let Some(value) = value {
            req = req.query(key, value);
        }
    }
    for (key, values) in [("env", &args.env), ("secret", &args.secret), ("allow_outbound", &args.allow_outbound)] {
        for value in values {
            req = req.query(key, value);
        }
    }
    let body = match (&args.file, &args.image) {
        (Some(file), _) => {
            let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            client.text(req.set("Content-Type", "application/wasm"), Some(&wasm))?
        }
        (None, Some(image)) => {
            let image = match local_image(image) {
                Some(path) => {
                    let (_, imported) = super::image::import_path(client, path, Some(&args.name), Some("latest"))?;
                    if output == Output::Table {
                        output::print(&format!("imported {}", super::image::describe(&imported)))?;
                    }
                    imported.artifact.digest()
                }
                None => image.clone(),
            };
            client.text(req.query("image", &image), None)?
        }
        (None, None) => anyhow::bail!("give the component (FILE.wasm) or --image"),
    };
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

/// The local file or directory `--image` names, if it names one; otherwise it is a reference
/// to an image on the node.
fn local_image(image: &str) -> Option<&Path> {
    let path = Path::new(image);
    path.exists().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: DeployArgs,
    }

    fn parse(args: &[&str]) -> Result<DeployArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("deploy").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn a_file_or_an_image() {
        let a = parse(&["hello", "hello.wasm", "--memory", "64Mi"]).unwrap();
        assert_eq!(a.file.as_deref(), Some(Path::new("hello.wasm")));
        assert_eq!((a.image, a.memory.as_deref()), (None, Some("64Mi")));
        let a = parse(&["web", "--image", "httpd:2.4", "--min-warm", "1"]).unwrap();
        assert_eq!((a.file, a.image.as_deref(), a.min_warm), (None, Some("httpd:2.4"), Some(1)));
        let both = parse(&["web", "app.wasm", "--image", "httpd"]).unwrap_err();
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
        let a = parse(&[
            "web",
            "w.wasm",
            "--env",
            "A=1",
            "--env",
            "B=2",
            "--secret",
            "db",
            "--allow-outbound",
            "https://x",
        ])
        .unwrap();
        assert_eq!(
            (a.env, a.secret, a.allow_outbound),
            (vec!["A=1".into(), "B=2".into()], vec!["db".into()], vec!["https://x".into()])
        );
        let neither = parse(&["web"]).unwrap_err();
        assert_eq!(neither.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(neither.to_string().contains("--image"), "{neither}");
    }

    #[test]
    fn local_paths_are_imported() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("httpd.tar");
        std::fs::write(&archive, b"").unwrap();
        assert_eq!(local_image(archive.to_str().unwrap()), Some(archive.as_path()));
        assert!(local_image(dir.path().to_str().unwrap()).is_some());
        assert_eq!(local_image("httpd:2.4"), None);
        assert_eq!(local_image("sha256:90d2ff1c"), None);
    }
}

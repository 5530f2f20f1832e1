//! Where the CLI finds its node and token: flags (`--node`, `--token`, `--context`), their
//! environment variables, then named contexts in a config file (like kubectl's), then the
//! admin token of a local `wisp up` started in this directory.
//!
//! `$WISP_CONFIG`, else `$XDG_CONFIG_HOME/wisp/config.yaml`, else `~/.config/wisp/config.yaml`:
//!
//! ```yaml
//! current_context: prod
//! contexts:
//!   - name: prod
//!     node: https://wisp.example.com
//!     token_file: /run/secrets/wisp-token   # or token: wisp_...
//! ```

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The node `wisp` talks to when nothing names one.
pub const DEFAULT_NODE: &str = "http://127.0.0.1:8080";
/// The admin token of `wisp up` started here with the default `--data-dir`.
const LOCAL_ADMIN_TOKEN: &str = ".wisp/admin-token";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: Vec<Context>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub name: String,
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl Config {
    /// The config file's path.
    pub fn path() -> anyhow::Result<PathBuf> {
        if let Some(p) = std::env::var_os("WISP_CONFIG").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => {
                let home = std::env::var_os("HOME").filter(|p| !p.is_empty());
                PathBuf::from(home.context("no HOME to find ~/.config/wisp/config.yaml (set WISP_CONFIG)")?)
                    .join(".config")
            }
        };
        Ok(base.join("wisp").join("config.yaml"))
    }

    /// The config at `path`; empty if there is no file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_norway::from_str(&text).with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the config (it holds tokens: mode 0600), replacing the file atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let text = serde_norway::to_string(self)?;
        let tmp = dir.join(format!(".config.yaml.{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all())?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }

    pub fn context(&self, name: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name == name)
    }
}

/// Where the token came from: named in 401/403 errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token` or `WISP_TOKEN`.
    Flag,
    Context(String),
    /// `./.wisp/admin-token`.
    LocalAdmin,
    None,
}

impl TokenSource {
    pub fn describe(&self) -> String {
        match self {
            TokenSource::Flag => "the token from --token / WISP_TOKEN".into(),
            TokenSource::Context(name) => format!("the token of context {name:?}"),
            TokenSource::LocalAdmin => format!("the local admin token ./{LOCAL_ADMIN_TOKEN}"),
            TokenSource::None => "no token".into(),
        }
    }
}

/// The node and token a command uses.
#[derive(Debug)]
pub struct Target {
    pub node: String,
    pub token: Option<String>,
    pub source: TokenSource,
}

/// Resolves the node and token: flags and their environment variables first (`node`, `token`,
/// `context` as clap gave them), then the context (`--context`, else the current one), then
/// the default node with `./.wisp/admin-token` if it is readable.
pub fn resolve(node: Option<String>, token: Option<String>, context: Option<String>) -> anyhow::Result<Target> {
    // Without a HOME (and WISP_CONFIG), there are no contexts, unless one is asked for.
    let (path, config) = match Config::path() {
        Ok(path) => {
            let config = Config::load(&path)?;
            (path, config)
        }
        Err(e) if context.is_some() => return Err(e),
        Err(_) => (PathBuf::new(), Config::default()),
    };
    let chosen = match &context {
        Some(name) => Some(config.context(name).with_context(|| {
            format!(
                "no context named {name:?} in {} (wisp context ls; wisp context set NAME --node URL)",
                path.display()
            )
        })?),
        None => config.current_context.as_deref().and_then(|name| config.context(name)),
    };
    let node = node.or_else(|| chosen.map(|c| c.node.clone())).unwrap_or_else(|| DEFAULT_NODE.to_string());
    if let Some(token) = token.filter(|t| !t.trim().is_empty()) {
        return Ok(Target { node, token: Some(token.trim().to_string()), source: TokenSource::Flag });
    }
    if let Some(c) = chosen {
        let token = match (&c.token, &c.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(file)) => Some(read_token(file).with_context(|| format!("context {:?}", c.name))?),
            (None, None) => None,
        };
        if token.is_some() {
            return Ok(Target { node, token, source: TokenSource::Context(c.name.clone()) });
        }
    }
    // Never send the local admin token anywhere but to a node on this machine.
    if is_loopback(&node)
        && let Ok(token) = read_token(Path::new(LOCAL_ADMIN_TOKEN))
    {
        return Ok(Target { node, token: Some(token), source: TokenSource::LocalAdmin });
    }
    Ok(Target { node, token: None, source: TokenSource::None })
}

pub fn read_token(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading the token file {}", file.display()))?;
    let token = text.trim();
    anyhow::ensure!(!token.is_empty(), "the token file {} is empty", file.display());
    Ok(token.to_string())
}

/// Whether `node` (a URL or `host:port`) is on this machine.
fn is_loopback(node: &str) -> bool {
    let rest = node.split_once("://").map_or(node, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `wisp_0123…cdef` style: enough to tell tokens apart, never enough to use one.
pub fn mask(token: &str) -> String {
    match token.strip_prefix("wisp_").and_then(|rest| rest.split_once('_')) {
        Some((id, _)) => format!("wisp_{id}_…"),
        None => "…".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_nodes() {
        for local in ["http://127.0.0.1:8080", "localhost:9000", "http://[::1]:8080/", "http://LOCALHOST", "127.0.0.2"]
        {
            assert!(is_loopback(local), "{local}");
        }
        for remote in ["https://wisp.example.com", "http://10.0.0.1:8080", "http://localhost.evil.com:80"] {
            assert!(!is_loopback(remote), "{remote}");
        }
    }

    #[test]
    fn masks() {
        assert_eq!(mask("wisp_0123456789ab_ffff"), "wisp_0123456789ab_…");
        assert_eq!(mask("secret"), "…");
    }

    #[test]
    fn config_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.yaml");
        assert!(Config::load(&path).unwrap().contexts.is_empty());
        let config = Config {
            current_context: Some("a".into()),
            contexts: vec![Context {
                name: "a".into(),
                node: "http://x".into(),
                token: Some("t".into()),
                token_file: None,
            }],
        };
        config.save(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let back = Config::load(&path).unwrap();
        assert_eq!(back.context("a").unwrap().token.as_deref(), Some("t"));
        std::fs::write(&path, "contexts: []\nextra: 1\n").unwrap();
        assert!(format!("{:#}", Config::load(&path).unwrap_err()).contains("extra"));
    }
}

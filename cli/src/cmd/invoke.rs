use std::io::{self, Read, Write};
use std::path::PathBuf;

use anyhow::Context as _;

use crate::client::{self, ApiError, Client};
use crate::output::Output;

/// Call a function over HTTP and print its response body
///
/// Sends the request to /fn/NAME[PATH] on the node (/fn/NS/NAME[PATH] with -n NS). The method defaults to POST when a body is
/// given, GET otherwise. Exits with status 1 when the answer is not 2xx.
#[derive(clap::Args, Debug)]
pub struct InvokeArgs {
    /// Function name
    pub name: String,
    /// Namespace of the function (outside `default` it answers at /fn/NS/NAME)
    #[arg(short = 'n', long, default_value = wisp_scheduler::DEFAULT_NAMESPACE, value_name = "NS")]
    pub namespace: String,
    /// Path (and query) after /fn/NAME, e.g. /items?id=3
    #[arg(long)]
    pub path: Option<String>,
    /// HTTP method [default: POST with a body, else GET]
    #[arg(short = 'X', long)]
    pub method: Option<String>,
    /// Request body
    #[arg(short = 'd', long, conflicts_with = "data_file")]
    pub data: Option<String>,
    /// Read the request body from a file (- for stdin)
    #[arg(long, value_name = "FILE")]
    pub data_file: Option<PathBuf>,
    /// Request header, repeatable
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Print the status line and response headers before the body
    #[arg(short = 'i', long)]
    pub include: bool,
    /// Run asynchronously: the node stores the request, answers 202 with an invocation id at
    /// once, and runs it with retries (see `wisp invocation ID`)
    #[arg(long = "async")]
    pub asynchronous: bool,
    /// With --async: URL that receives the function's response (POSTed by the node)
    #[arg(long, value_name = "URL", requires = "asynchronous")]
    pub callback_url: Option<String>,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once(':').ok_or_else(|| format!("expected `NAME: VALUE`, got `{text}`"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("expected `NAME: VALUE`, got `{text}`"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

fn target(namespace: &str, name: &str, path: &str) -> String {
    let name = match namespace {
        wisp_scheduler::DEFAULT_NAMESPACE => client::segment(name),
        ns => format!("{}/{}", client::segment(ns), client::segment(name)),
    };
    match path {
        "" => format!("/fn/{name}"),
        p if p.starts_with('/') => format!("/fn/{name}{p}"),
        p => format!("/fn/{name}/{p}"),
    }
}

pub fn run(client: &Client, _output: Output, args: InvokeArgs) -> anyhow::Result<()> {
    let body = match (args.data, &args.data_file) {
        (Some(data), _) => Some(data.into_bytes()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            io::stdin().read_to_end(&mut bytes).context("reading the request body from stdin")?;
            Some(bytes)
        }
        (None, Some(path)) => Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?),
        (None, None) => None,
    };
    let method = args
        .method
        .map(|m| m.to_ascii_uppercase())
        .unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.to_owned());
    let mut req = client.request(&method, &target(&args.namespace, &args.name, args.path.as_deref().unwrap_or("")));
    for (name, value) in &args.headers {
        req = req.set(name, value);
    }
    if args.asynchronous {
        req = req.set("prefer", "respond-async");
        if let Some(url) = &args.callback_url {
            req = req.set("x-callback-url", url);
        }
    }
    let resp = client.send(req, body.as_deref())?;
    let status = resp.status();
    let success = (200..300).contains(&status);
    let reason = match resp.status_text() {
        "" => "request failed".to_owned(),
        text => text.to_owned(),
    };

    let mut out = io::stdout().lock();
    if args.include {
        writeln!(out, "{} {} {}", resp.http_version(), status, resp.status_text())?;
        let mut seen = std::collections::HashMap::<String, usize>::new();
        for name in resp.headers_names() {
            let index = seen.entry(name.clone()).or_default();
            if let Some(value) = resp.all(&name).get(*index) {
                writeln!(out, "{name}: {value}")?;
            }
            *index += 1;
        }
        writeln!(out)?;
    }
    if success {
        io::copy(&mut resp.into_reader(), &mut out).context("reading the function's response")?;
        out.flush()?;
        return Ok(());
    }
    let mut bytes = Vec::new();
    resp.into_reader().read_to_end(&mut bytes).context("reading the function's response")?;
    let message = client::error_message(&String::from_utf8_lossy(&bytes));
    let message = match message {
        // A JSON error (the node's or the function's) goes to stderr via main's `error: ...`.
        Some(message) => message,
        None => {
            out.write_all(&bytes)?;
            out.flush()?;
            reason
        }
    };
    Err(ApiError { status, message }.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(parse_header("Content-Type: text/plain"), Ok(("Content-Type".into(), "text/plain".into())));
        assert_eq!(parse_header("x-a:b:c"), Ok(("x-a".into(), "b:c".into())));
        assert_eq!(parse_header("x-empty:"), Ok(("x-empty".into(), "".into())));
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header(": v").is_err());
    }

    #[test]
    fn targets() {
        assert_eq!(target("default", "hello", ""), "/fn/hello");
        assert_eq!(target("default", "hello", "/x/y?q=1"), "/fn/hello/x/y?q=1");
        assert_eq!(target("default", "hello", "x"), "/fn/hello/x");
        assert_eq!(target("team", "api", "/x"), "/fn/team/api/x");
    }
}

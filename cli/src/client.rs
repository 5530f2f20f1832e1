//! The one HTTP client of the CLI: builds requests against the node and turns transport failures
//! and `{"error": msg}` answers into errors that read well after `error: `.

use std::fmt;
use std::io::Read;
use std::time::Duration;

use anyhow::Context as _;
use serde::de::DeserializeOwned;

/// Connecting to a local node is instant; anything slower means it is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Backstop against a stalled socket; the node enforces the functions' own timeouts.
const IO_TIMEOUT: Duration = Duration::from_secs(300);
/// Whole-request limit for the admin calls (deploys pass a longer one).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Error bodies are short; don't buffer an arbitrary amount of one.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// The node answered with a non-2xx status.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (HTTP {})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

/// No connection to the node could be made.
#[derive(Debug)]
pub struct Unreachable {
    pub node: String,
    pub detail: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot reach the Wisp node at {}: {} (is `wisp up` running?)", self.node, self.detail)
    }
}

impl std::error::Error for Unreachable {}

pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// Sent as `Authorization: Bearer` with every request.
    token: Option<String>,
}

impl Client {
    /// `node` is the base URL (`http://127.0.0.1:8080`); a bare `host:port` means http.
    pub fn new(node: &str) -> Self {
        let node = node.trim().trim_end_matches('/');
        let base = if node.contains("://") { node.to_owned() } else { format!("http://{node}") };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(IO_TIMEOUT)
            .timeout_write(IO_TIMEOUT)
            // HTTP(S)_PROXY must not reroute calls to a node that is usually on localhost.
            .try_proxy_from_env(false)
            // Show a function's redirect rather than following it.
            .redirects(0)
            .user_agent(concat!("wisp-cli/", env!("CARGO_PKG_VERSION")))
            .build();
        Self { base, agent, token: None }
    }

    /// This client, sending `token` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// A request to `path` (which starts with `/`), without an overall time limit.
    pub fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.token {
            Some(token) => req.set("Authorization", &format!("Bearer {token}")),
            None => req,
        }
    }

    /// A request for the admin API, limited to [`ADMIN_TIMEOUT`] overall.
    pub fn admin(&self, method: &str, path: &str) -> ureq::Request {
        self.request(method, path).timeout(ADMIN_TIMEOUT)
    }

    /// Sends `req` and returns the response whatever its status; only transport failures are
    /// errors.
    pub fn send(&self, req: ureq::Request, body: Option<&[u8]>) -> anyhow::Result<ureq::Response> {
        let result = match body {
            Some(bytes) => req.send_bytes(bytes),
            None => req.call(),
        };
        match result {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => Ok(resp),
            Err(ureq::Error::Transport(t)) => Err(self.transport_error(&t)),
        }
    }

    /// Sends `req` and returns the body of a 2xx answer as text; a non-2xx becomes [`ApiError`].
    pub fn text(&self, req: ureq::Request, body: Option<&[u8]>) -> anyhow::Result<String> {
        let resp = self.send(req, body)?;
        answer_text(resp)
    }

    /// Like [`Client::text`], with a body streamed from `reader` as it is sent (never read
    /// into memory); `length`, when known, is sent as `Content-Length` so the node can refuse
    /// an oversized body before it arrives.
    pub fn text_streamed(&self, req: ureq::Request, reader: impl Read, length: Option<u64>) -> anyhow::Result<String> {
        let req = match length {
            Some(n) => req.set("Content-Length", &n.to_string()),
            None => req,
        };
        let resp = match req.send(reader) {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => resp,
            Err(ureq::Error::Transport(t)) => return Err(self.transport_error(&t)),
        };
        answer_text(resp)
    }

    /// `GET path` on the admin API, 2xx body as text.
    pub fn get(&self, path: &str) -> anyhow::Result<String> {
        self.text(self.admin("GET", path), None)
    }

    fn transport_error(&self, t: &ureq::Transport) -> anyhow::Error {
        let mut detail = t.message().map_or_else(|| t.kind().to_string(), str::to_owned);
        let mut source = std::error::Error::source(t);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !detail.contains(&text) {
                detail = format!("{detail}: {text}");
            }
            source = cause.source();
        }
        match t.kind() {
            ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => {
                Unreachable { node: self.base.clone(), detail }.into()
            }
            ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => {
                anyhow::anyhow!("invalid node URL {}: {detail}", self.base)
            }
            _ => anyhow::anyhow!("talking to the Wisp node at {}: {detail}", self.base),
        }
    }
}

/// The body of a 2xx answer as text; a non-2xx becomes [`ApiError`].
fn answer_text(resp: ureq::Response) -> anyhow::Result<String> {
    if !(200..300).contains(&resp.status()) {
        return Err(api_error(resp).into());
    }
    let mut bytes = Vec::new();
    resp.into_reader().read_to_end(&mut bytes).context("reading the node's answer")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The [`ApiError`] for a non-2xx answer: its `{"error": msg}`, else its text, else the reason.
pub fn api_error(resp: ureq::Response) -> ApiError {
    let status = resp.status();
    let reason = resp.status_text().to_owned();
    let mut bytes = Vec::new();
    let _ = resp.into_reader().take(MAX_ERROR_BODY).read_to_end(&mut bytes);
    let body = String::from_utf8_lossy(&bytes);
    let message = error_message(&body).unwrap_or_else(|| {
        let text = body.trim();
        if text.is_empty() {
            reason
        } else {
            let short: String = text.chars().take(300).collect();
            if short.len() < text.len() { format!("{short}…") } else { short }
        }
    });
    ApiError { status, message }
}

/// The message of a `{"error": "<message>"}` body.
pub fn error_message(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value.get("error")?.as_str().map(str::to_owned)
}

/// Parses a JSON answer of the node.
pub fn parse<T: DeserializeOwned>(body: &str) -> anyhow::Result<T> {
    serde_json::from_str(body).context("unexpected answer from the Wisp node")
}

/// Percent-encodes `name` for use as one path segment, so the node sees (and judges) it as is.
pub fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages() {
        assert_eq!(error_message(r#"{"error":"no function named x"}"#).as_deref(), Some("no function named x"));
        assert_eq!(error_message(r#"{"error": 3}"#), None);
        assert_eq!(error_message("plain text"), None);
        assert_eq!(error_message("[1]"), None);
    }

    #[test]
    fn segments() {
        assert_eq!(segment("hello-world_1.x"), "hello-world_1.x");
        assert_eq!(segment("a/b c?"), "a%2Fb%20c%3F");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn base_url() {
        assert_eq!(Client::new("http://127.0.0.1:8080/").base, "http://127.0.0.1:8080");
        assert_eq!(Client::new("localhost:9000").base, "http://localhost:9000");
    }

    #[test]
    fn error_display() {
        let e = ApiError { status: 404, message: "no function named x".into() };
        assert_eq!(e.to_string(), "no function named x (HTTP 404)");
    }
}

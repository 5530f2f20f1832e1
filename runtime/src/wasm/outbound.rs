//! What a function is granted beyond computing: environment variables, and outbound HTTP to the
//! origins on its allow-list. The host enforces the list on every `wasi:http/outgoing-handler`
//! request, bounds each request by the node's timeout, caps outbound requests in flight on the
//! node, and counts the body bytes sent and received for metering.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// What every instance of a revision is granted. Nothing by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Environment variables, secrets' values included.
    pub env: Vec<(String, String)>,
    /// Origins outbound HTTP may reach; empty: none.
    pub allow_outbound: Vec<Origin>,
}

/// An origin outbound HTTP may reach: scheme, host and port (`https://api.example.com`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    https: bool,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `http[s]://host[:port]` (a trailing `/` is accepted; a path, query, or user
    /// info is not). Hosts compare case-insensitively; the port defaults to the scheme's.
    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{s:?} must start with http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| format!("{s:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{s:?} must not contain user info"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("{s:?} must be an origin only (scheme, host and port; no path or query)"));
        }
        if authority.host().is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Self { https, host: authority.host().to_ascii_lowercase(), port })
    }

    /// Whether a request to `uri` goes to this origin.
    fn allows(&self, uri: &http::Uri) -> bool {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return false,
        };
        let Some(authority) = uri.authority() else { return false };
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        https == self.https && port == self.port && authority.host().eq_ignore_ascii_case(&self.host)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.host)?;
        if self.port != if self.https { 443 } else { 80 } {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// Node-wide bounds on outbound HTTP.
#[derive(Debug, Clone)]
pub(crate) struct OutboundLimits {
    /// Bounds connecting, the first response byte, and each gap between body bytes (a guest
    /// may ask for less); also how long a request waits for a free slot under `permits`.
    pub(crate) timeout: Duration,
    /// Outbound requests in flight on the node (a request holds its slot until its response
    /// body is finished or dropped).
    pub(crate) permits: Arc<Semaphore>,
}

/// The `wasi:http` hooks of one instance: sends a request only to an origin on the allow-list.
pub(crate) struct Outbound {
    pub(crate) allow: Arc<[Origin]>,
    pub(crate) limits: OutboundLimits,
    /// Request and response body bytes of this instance's outbound requests.
    pub(crate) bytes: Arc<AtomicU64>,
}

type SendResult =
    wasmtime_wasi_http::Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>)>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let allowed = self.allow.iter().any(|o| o.allows(request.uri()));
        let limits = self.limits.clone();
        let bytes = self.bytes.clone();
        Box::new(async move {
            if !allowed {
                return Err(Error::HttpRequestDenied);
            }
            let permit = match tokio::time::timeout(limits.timeout, limits.permits.acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                _ => return Err(Error::ConnectionLimitReached),
            };
            let cap = |asked: Option<Duration>| Some(asked.map_or(limits.timeout, |d| d.min(limits.timeout)));
            let options = options.unwrap_or_default();
            let options = RequestOptions {
                connect_timeout: cap(options.connect_timeout),
                first_byte_timeout: cap(options.first_byte_timeout),
                between_bytes_timeout: cap(options.between_bytes_timeout),
            };
            let request = request.map(|body| Counted { body, bytes: bytes.clone(), _permit: None }.boxed_unsync());
            let (response, io) = wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            let response = response.map(|body| Counted { body, bytes, _permit: Some(permit) }.boxed_unsync());
            Ok((response, Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

/// A body that adds the bytes of its data frames to a counter (and may hold a concurrency slot).
struct Counted<B> {
    body: B,
    bytes: Arc<AtomicU64>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_and_match() {
        let o = Origin::parse("https://API.example.com/").unwrap();
        assert_eq!(o.to_string(), "https://api.example.com");
        assert!(o.allows(&"https://api.example.com/v1/x?y=1".parse().unwrap()));
        assert!(o.allows(&"https://api.example.com:443/".parse().unwrap()));
        assert!(!o.allows(&"http://api.example.com/".parse().unwrap()));
        assert!(!o.allows(&"https://api.example.com:8443/".parse().unwrap()));
        assert!(!o.allows(&"https://api.example.com.evil.net/".parse().unwrap()));
        let local = Origin::parse("http://127.0.0.1:18080").unwrap();
        assert_eq!(local.to_string(), "http://127.0.0.1:18080");
        assert!(local.allows(&"http://127.0.0.1:18080/a".parse().unwrap()));
        assert!(!local.allows(&"http://127.0.0.1:18081/a".parse().unwrap()));
        for bad in ["api.example.com", "ftp://x", "https://x/path", "https://x?q", "https://u:p@x", "https://"] {
            assert!(Origin::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}

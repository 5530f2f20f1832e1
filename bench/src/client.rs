//! A minimal HTTP/1.1 keep-alive client on hyper's connection API: one TCP connection per
//! `Conn`, requests one at a time, no pool (so "N connections" means exactly N).

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

pub struct Conn {
    tx: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    /// Connects and spawns the connection's driver on the current tokio runtime.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (tx, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { tx, host: addr.to_string() })
    }

    /// Sends one request and reads the whole response body.
    pub async fn send(&mut self, method: Method, path: &str, body: Bytes) -> anyhow::Result<(StatusCode, Bytes)> {
        let req = Request::builder().method(method).uri(path).header(header::HOST, &self.host).body(Full::new(body))?;
        self.tx.ready().await?;
        let resp = self.tx.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        self.send(Method::GET, path, Bytes::new()).await
    }
}

/// One request on a fresh connection (admin calls, scraping /metrics).
pub async fn once(addr: SocketAddr, method: Method, path: &str, body: Bytes) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut conn = Conn::connect(addr).await?;
    conn.send(method, path, body).await
}

/// Polls `GET path` until it answers 200, or fails after `timeout`.
pub async fn wait_ok(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), once(addr, Method::GET, path, Bytes::new())).await {
            Ok(Ok((s, _))) if s == StatusCode::OK => return Ok(()),
            Ok(Ok((s, body))) => last = format!("{s}: {}", String::from_utf8_lossy(&body)),
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{addr}{path} not ready after {timeout:?}: {last}")
}

/// Sums a Prometheus metric's samples whose labels contain `label_filter` (e.g.
/// `function="hello"`); an empty filter sums every sample of the metric.
pub fn metric_sum(text: &str, name: &str, label_filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            if !label_filter.is_empty() && !rest.contains(label_filter) {
                return None;
            }
            rest.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Per-label-value samples of a metric: `wisp_cold_starts_total{function="x"} 1` -> ("x", 1).
pub fn metric_by_function(text: &str, name: &str) -> Vec<(String, f64)> {
    let prefix = format!("{name}{{function=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (function, tail) = rest.split_once('"')?;
            Some((function.to_string(), tail.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

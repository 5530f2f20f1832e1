//! A minimal HTTP/1.1 keep-alive client on hyper's connection API: one TCP connection per
//! `Conn`, requests one at a time, no pool (so "N connections" means exactly N).

use anyhow::Context;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use tokio::net::TcpStream;

pub struct Conn {
    tx: SendRequest<Empty<Bytes>>,
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

    /// `GET path`, reading the whole response body.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<StatusCode> {
        let req = Request::get(path).header(header::HOST, &self.host).body(Empty::new())?;
        self.tx.ready().await?;
        let resp = self.tx.send_request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        Ok(status)
    }
}

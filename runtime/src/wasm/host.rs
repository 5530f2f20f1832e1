//! The data each wasmtime `Store` carries: WASI state granting nothing by default (outbound
//! HTTP only to the origins the function is granted), the memory
//! limiter that also measures peak usage and charges the node's memory budget, the deadline the
//! epoch callback enforces, and guest stdout/stderr streams into the function's log ring.

use super::outbound::Outbound;
use crate::{LogBuffer, MemoryBudget};
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub(crate) struct Host {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) hooks: Outbound,
    pub(crate) memory: MemoryMeter,
    /// When the running invocation must stop; checked on every epoch tick.
    pub(crate) deadline: Instant,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Enforces the function's memory limit and the node's budget, and remembers the peak granted.
pub(crate) struct MemoryMeter {
    pub(crate) limit: u64,
    pub(crate) peak: u64,
    /// Set when a grow was refused by the function's limit, so a following trap is reported
    /// as memory exhaustion.
    pub(crate) refused: bool,
    /// Set when a grow was refused because the node's budget is spent.
    pub(crate) budget_refused: bool,
    pub(crate) max_table_elements: usize,
    pub(crate) budget: Arc<MemoryBudget>,
    /// Bytes this store holds against the budget; given back when the store is dropped.
    pub(crate) charged: u64,
}

impl ResourceLimiter for MemoryMeter {
    fn memory_growing(&mut self, current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            self.refused = true;
            return Ok(false);
        }
        let grow = (desired as u64).saturating_sub(current as u64);
        if !self.budget.try_take(grow) {
            self.budget_refused = true;
            return Ok(false);
        }
        self.charged += grow;
        self.peak = self.peak.max(desired as u64);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }
}

impl Drop for MemoryMeter {
    fn drop(&mut self) {
        self.budget.give_back(self.charged);
    }
}

/// A guest's stdout or stderr: writes never block and never fail; the ring drops old bytes.
#[derive(Clone)]
pub(crate) struct LogStream(pub(crate) Arc<LogBuffer>);

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.0.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

//! One invocation on a Wasm pool: buffer the request within its limit, take an instance, run the
//! guest's `incoming-handler`, buffer the response within its limit. One deadline, set when the
//! invocation starts, bounds all of it (reading the body included).

use super::pool::{InstancePool, InstantiateError, PoolInner, Ready};
use crate::{BodyError, InvokeError, Invoked, Workload, WorkloadStats, read_within};
use bytes::Bytes;
use futures::FutureExt;
use http_body::Body;
use http_body_util::Full;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::time::timeout_at;
use wasmtime::Trap;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};

impl Workload for InstancePool {
    async fn invoke<B>(&self, req: http::Request<B>) -> Invoked
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let pool = &*self.inner;
        let deadline = Instant::now() + pool.limits.timeout;
        let mut invoked = Invoked {
            result: Ok(http::Response::default()),
            cold: false,
            peak_memory_bytes: 0,
            request_bytes: 0,
            cpu_us: 0,
            outbound_bytes: 0,
        };
        invoked.result = invoke(pool, req, deadline, &mut invoked).await;
        invoked
    }

    fn set_target(&self, target: usize) {
        self.inner.set_target(target);
    }

    fn stats(&self) -> WorkloadStats {
        self.inner.stats()
    }
}

async fn invoke<B>(
    pool: &PoolInner,
    req: http::Request<B>,
    deadline: Instant,
    invoked: &mut Invoked,
) -> Result<http::Response<Bytes>, InvokeError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = pool.limits;
    let (mut parts, body) = req.into_parts();
    let read = {
        let read = read_within(&parts.headers, body, limits.max_request_body);
        tokio::pin!(read);
        // Most bodies are already here (or empty): only a body still arriving needs a timer.
        match read.as_mut().now_or_never() {
            Some(read) => read,
            None => timeout_at(deadline.into(), read).await.map_err(|_| InvokeError::Timeout(limits.timeout))?,
        }
    };
    let body = match read {
        Err(BodyError::TooLarge { limit }) => return Err(InvokeError::RequestTooLarge { limit }),
        Err(e) => return Err(InvokeError::BadRequest(e)),
        Ok(body) => body,
    };
    invoked.request_bytes = body.len() as u64;
    // Buffered bodies count against the node's memory budget while the guest reads them (an
    // empty one skips the shared counter).
    let _body_charge = match body.len() {
        0 => None,
        n => Some(pool.shared.budget.charge(n as u64).ok_or_else(|| pool.budget_spent())?),
    };
    if parts.uri.authority().is_none() && !parts.headers.contains_key(http::header::HOST) {
        parts.headers.insert(http::header::HOST, http::HeaderValue::from_static("localhost"));
    }
    // Counted from here: a slow uploader is not concurrency the scaler should provision for.
    let _in_flight = pool.enter();
    let (ready, cold) = pool.take().await.map_err(|e| match e {
        InstantiateError::Capacity(m) => InvokeError::Capacity(m),
        InstantiateError::Component(m) => InvokeError::Guest(format!("instantiating: {m}")),
        InstantiateError::Budget(limit) => InvokeError::MemoryBudget { limit },
    })?;
    invoked.cold = cold;
    // A reused instance that sets no response is a guest that cannot serve twice (the fetch
    // event of ComponentizeJS, for one): its request runs again on a fresh instance.
    let replay = (ready.uses > 0).then(|| copy_request(&parts, &body));
    let outbound = ready.store.data().hooks.bytes.clone();
    let cpu_ns = AtomicU64::new(0);
    let (mut result, mut peak) =
        run(pool, ready, http::Request::from_parts(parts, Full::new(body)), deadline, &cpu_ns).await;
    if let Some(req) = replay
        && matches!(&result, Err(InvokeError::Guest(m)) if m == NO_RESPONSE)
    {
        pool.stop_reuse();
        let (fresh, _) = pool.take().await.map_err(|e| InvokeError::Guest(format!("instantiating: {e}")))?;
        (result, peak) = run(pool, fresh, req, deadline, &cpu_ns).await;
    }
    invoked.peak_memory_bytes = peak;
    invoked.cpu_us = cpu_ns.load(Ordering::Relaxed) / 1000;
    invoked.outbound_bytes = outbound.load(std::sync::atomic::Ordering::Relaxed);
    result
}

/// The error of a handler that returned without setting a response.
const NO_RESPONSE: &str = "the handler returned without setting a response";

/// A copy of a buffered request (the body is reference-counted).
fn copy_request(parts: &http::request::Parts, body: &Bytes) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::new(Full::new(body.clone()));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// Runs the handler on a ready instance; returns the result and the peak memory it used, and
/// adds the thread CPU time the handler's polls took to `cpu_ns`.
async fn run(
    pool: &PoolInner,
    ready: Ready,
    req: http::Request<Full<Bytes>>,
    deadline: Instant,
    cpu_ns: &AtomicU64,
) -> (Result<http::Response<Bytes>, InvokeError>, u64) {
    let limits = pool.limits;
    let mut ready = ready;
    ready.store.data_mut().deadline = deadline;
    ready.store.set_epoch_deadline(1);

    let (sender, receiver) = tokio::sync::oneshot::channel();
    let resources = {
        let mut http = ready.store.data_mut().http();
        http.new_incoming_request(Scheme::Http, req).and_then(|req| Ok((req, http.new_response_outparam(sender)?)))
    };
    let (req, out) = match resources {
        Ok(r) => r,
        Err(e) => {
            pool.reap(ready.store);
            return (Err(InvokeError::Guest(format!("preparing the request: {e:#}"))), 0);
        }
    };

    let response = async move {
        let response = match receiver.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => return Err(InvokeError::Guest(describe_error_code(&code))),
            Err(_) => return Err(InvokeError::Guest(NO_RESPONSE.into())),
        };
        let (parts, body) = response.into_parts();
        match read_within(&http::HeaderMap::new(), body, limits.max_response_body).await {
            Ok(body) => Ok(http::Response::from_parts(parts, body)),
            Err(BodyError::TooLarge { limit }) => Err(InvokeError::ResponseTooLarge { limit }),
            Err(e) => Err(InvokeError::Guest(format!("response body: {e}"))),
        }
    };
    tokio::pin!(response);

    // Drive the handler and the response side together: the guest streams its body while the
    // host reads it. The handler may keep running after the response is complete.
    let raced = timeout_at(deadline.into(), async {
        let call = ready.proxy.wasi_http_incoming_handler().call_handle(&mut ready.store, req, out);
        tokio::pin!(call);
        let mut call = CpuTimed { inner: call, spent_ns: cpu_ns };
        tokio::select! {
            handled = &mut call => (handled, None),
            response = &mut response => (call.await, Some(response)),
        }
    })
    .await;

    // The handler returned (no trap, timeout or refused memory): its instance may serve again.
    let returned = matches!(raced, Ok((Ok(()), _)));
    let memory = &ready.store.data().memory;
    let (peak, refused, budget_refused) = (memory.peak, memory.refused, memory.budget_refused);
    let result = match raced {
        Err(_) => Err(InvokeError::Timeout(limits.timeout)),
        Ok((Err(_), _)) if budget_refused => Err(pool.budget_spent()),
        Ok((Err(e), _)) => Err(classify(e, refused, limits.memory_bytes, limits.timeout)),
        Ok((Ok(()), Some(response))) => response,
        Ok((Ok(()), None)) => {
            // The handler returned first; usually it finished its body, so the response is
            // complete now. If it left the body open, dropping its store closes it, and what
            // is left of the same deadline bounds the wait.
            if let Some(result) = response.as_mut().now_or_never() {
                finish(pool, ready, &result);
                return (result, peak);
            }
            drop(ready);
            // Its slot is free now: let a refill job replace it (reap would have queued one).
            pool.refill();
            let late = timeout_at(deadline.into(), response).await;
            return (late.unwrap_or(Err(InvokeError::Timeout(limits.timeout))), peak);
        }
    };
    if returned {
        finish(pool, ready, &result);
    } else {
        pool.reap(ready.store);
    }
    (result, peak)
}

/// After a handler that returned: an instance whose response is complete may serve again
/// (`recycle` decides); one whose response failed is dropped.
fn finish(pool: &PoolInner, ready: Ready, result: &Result<http::Response<Bytes>, InvokeError>) {
    match result {
        Ok(_) => pool.recycle(ready),
        Err(_) => pool.reap(ready.store),
    }
}

/// CPU time of the calling thread, nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we pass; CLOCK_THREAD_CPUTIME_ID always exists
    // on Linux. On an error ts stays zero and the poll counts as no time.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// Adds the thread CPU time each poll of `inner` takes to `spent_ns`: the guest runs only
/// inside these polls, on whichever worker polls it, so their sum is its CPU time (Workers'
/// billing meter), without counting time it waits for I/O or for a worker. An atomic (never
/// contended) keeps the invocation future `Send` and survives the timeout dropping this.
struct CpuTimed<'a, F> {
    inner: F,
    spent_ns: &'a AtomicU64,
}

impl<F: Future + Unpin> Future for CpuTimed<'_, F> {
    type Output = F::Output;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let start = thread_cpu_ns();
        let out = std::pin::Pin::new(&mut self.inner).poll(cx);
        self.spent_ns.fetch_add(thread_cpu_ns().saturating_sub(start), Ordering::Relaxed);
        out
    }
}

fn classify(error: wasmtime::Error, memory_refused: bool, memory_limit: u64, timeout: Duration) -> InvokeError {
    if memory_refused {
        return InvokeError::Memory { limit: memory_limit };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => InvokeError::Timeout(timeout),
        Some(trap) => InvokeError::Trap(trap.to_string()),
        None => InvokeError::Trap(format!("{error}")),
    }
}

fn describe_error_code(code: &ErrorCode) -> String {
    format!("the handler answered with an error instead of a response: {code:?}")
}

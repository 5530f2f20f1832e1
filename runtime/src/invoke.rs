//! One invocation: buffer the request within its limit, take an instance, run the guest's
//! `incoming-handler` under the deadline, buffer the response within its limit, and emit
//! exactly one usage record whatever happens (including the caller going away).

use crate::pool::{InstantiateError, PoolInner, Ready, Revision};
use crate::{InvokeError, Outcome, UsageRecord};
use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmtime::Trap;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};

/// What an invocation produced, with what the caller's metrics need.
pub struct Invoked {
    pub result: Result<http::Response<Bytes>, InvokeError>,
    pub outcome: Outcome,
    pub cold: bool,
    pub wall: Duration,
}

impl InvokeError {
    /// The one mapping from invocation failures to HTTP statuses.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            InvokeError::RequestTooLarge { .. } => S::PAYLOAD_TOO_LARGE,
            InvokeError::RequestBody(_) => S::BAD_REQUEST,
            InvokeError::Timeout(_) => S::GATEWAY_TIMEOUT,
            InvokeError::Capacity(_) => S::SERVICE_UNAVAILABLE,
            InvokeError::ResponseTooLarge { .. }
            | InvokeError::Trap(_)
            | InvokeError::Memory { .. }
            | InvokeError::Guest(_) => S::INTERNAL_SERVER_ERROR,
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            InvokeError::RequestTooLarge { .. } | InvokeError::RequestBody(_) | InvokeError::Capacity(_) => {
                Outcome::Rejected
            }
            InvokeError::ResponseTooLarge { .. } | InvokeError::Guest(_) => Outcome::Error,
            InvokeError::Trap(_) => Outcome::Trap,
            InvokeError::Memory { .. } => Outcome::Memory,
            InvokeError::Timeout(_) => Outcome::Timeout,
        }
    }
}

impl Revision {
    /// Runs the revision's handler for one request. `req`'s URI is what the guest sees.
    pub async fn invoke<B>(&self, req: http::Request<B>) -> Invoked
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let pool = &*self.inner;
        let _in_flight = pool.enter();
        let mut meter = Meter::start(pool);
        let result = invoke(pool, req, &mut meter).await;
        meter.finish(result)
    }
}

async fn invoke<B>(pool: &PoolInner, req: http::Request<B>, meter: &mut Meter<'_>) -> Result<http::Response<Bytes>, InvokeError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = pool.limits;
    let (mut parts, body) = req.into_parts();
    let declared = parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_request_body) {
        return Err(InvokeError::RequestTooLarge { limit: limits.max_request_body });
    }
    let body = match Limited::new(body, limits.max_request_body as usize).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(InvokeError::RequestTooLarge { limit: limits.max_request_body }),
        Err(e) => return Err(InvokeError::RequestBody(e.to_string())),
    };
    meter.record.request_bytes = body.len() as u64;
    if parts.uri.authority().is_none() && !parts.headers.contains_key(http::header::HOST) {
        parts.headers.insert(http::header::HOST, http::HeaderValue::from_static("localhost"));
    }
    let (ready, cold) = pool.take().await.map_err(|e| match e {
        InstantiateError::Capacity(m) => InvokeError::Capacity(m),
        InstantiateError::Component(m) => InvokeError::Guest(format!("instantiating: {m}")),
    })?;
    meter.record.cold = cold;
    let (result, peak) = run(pool, ready, http::Request::from_parts(parts, Full::new(body))).await;
    meter.record.peak_memory_bytes = peak;
    result
}

/// Runs the handler on a ready instance; returns the result and the peak memory it used.
async fn run(pool: &PoolInner, ready: Ready, req: http::Request<Full<Bytes>>) -> (Result<http::Response<Bytes>, InvokeError>, u64) {
    let limits = pool.limits;
    let Ready { mut store, proxy } = ready;
    store.data_mut().deadline = Instant::now() + limits.timeout;
    store.set_epoch_deadline(1);

    let (sender, receiver) = tokio::sync::oneshot::channel();
    let resources = {
        let mut http = store.data_mut().http();
        http.new_incoming_request(Scheme::Http, req).and_then(|req| Ok((req, http.new_response_outparam(sender)?)))
    };
    let (req, out) = match resources {
        Ok(r) => r,
        Err(e) => {
            pool.reap(store);
            return (Err(InvokeError::Guest(format!("preparing the request: {e:#}"))), 0);
        }
    };

    let response = async move {
        let response = match receiver.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => return Err(InvokeError::Guest(describe_error_code(&code))),
            Err(_) => return Err(InvokeError::Guest("the handler returned without setting a response".into())),
        };
        let (parts, body) = response.into_parts();
        match Limited::new(body, limits.max_response_body as usize).collect().await {
            Ok(collected) => Ok(http::Response::from_parts(parts, collected.to_bytes())),
            Err(e) if e.is::<LengthLimitError>() => Err(InvokeError::ResponseTooLarge { limit: limits.max_response_body }),
            Err(e) => Err(InvokeError::Guest(format!("response body: {e}"))),
        }
    };
    tokio::pin!(response);

    // Drive the handler and the response side together: the guest streams its body while the
    // host reads it. The handler may keep running after the response is complete.
    let raced = tokio::time::timeout(limits.timeout, async {
        let call = proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out);
        tokio::pin!(call);
        tokio::select! {
            handled = &mut call => (handled, None),
            response = &mut response => (call.await, Some(response)),
        }
    })
    .await;

    let memory = &store.data().memory;
    let (peak, refused) = (memory.peak, memory.refused);
    let result = match raced {
        Err(_) => Err(InvokeError::Timeout(limits.timeout)),
        Ok((Err(e), _)) => Err(classify(e, refused, limits.memory_bytes, limits.timeout)),
        Ok((Ok(()), Some(response))) => response,
        Ok((Ok(()), None)) => {
            // The handler returned first; usually it finished its body, so the response is
            // complete now. If it left the body open, dropping its store closes it.
            let now = std::future::poll_fn(|cx| Poll::Ready(response.as_mut().poll(cx))).await;
            if let Poll::Ready(result) = now {
                pool.reap(store);
                return (result, peak);
            }
            drop(store);
            let late = tokio::time::timeout(limits.timeout, response).await;
            return (late.unwrap_or(Err(InvokeError::Timeout(limits.timeout))), peak);
        }
    };
    pool.reap(store);
    (result, peak)
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

/// Builds the invocation's usage record; sends it exactly once, when finished or dropped.
struct Meter<'a> {
    pool: &'a PoolInner,
    started: Instant,
    record: UsageRecord,
    sent: bool,
}

impl<'a> Meter<'a> {
    fn start(pool: &'a PoolInner) -> Self {
        let start_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self {
            pool,
            started: Instant::now(),
            record: UsageRecord {
                function: pool.id.function.clone(),
                revision: pool.id.revision,
                start_ms,
                wall_us: 0,
                cold: false,
                peak_memory_bytes: 0,
                outcome: Outcome::Cancelled,
                request_bytes: 0,
                response_bytes: 0,
                status: 499,
            },
            sent: false,
        }
    }

    fn finish(mut self, result: Result<http::Response<Bytes>, InvokeError>) -> Invoked {
        let (outcome, status, response_bytes) = match &result {
            Ok(response) => (Outcome::Ok, response.status().as_u16(), response.body().len() as u64),
            Err(e) => (e.outcome(), e.status().as_u16(), 0),
        };
        self.record.outcome = outcome;
        self.record.status = status;
        self.record.response_bytes = response_bytes;
        let wall = self.started.elapsed();
        let cold = self.record.cold;
        self.send(wall);
        Invoked { result, outcome, cold, wall }
    }

    fn send(&mut self, wall: Duration) {
        self.record.wall_us = wall.as_micros() as u64;
        self.sent = true;
        self.pool.shared.usage.record(self.record.clone());
    }
}

impl Drop for Meter<'_> {
    fn drop(&mut self) {
        if !self.sent {
            // The caller went away mid-invocation: still exactly one record, as cancelled.
            self.send(self.started.elapsed());
        }
    }
}

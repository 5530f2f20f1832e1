//! The one invoke path: every request reaches a function through [`Scheduler::invoke`], whatever
//! its source. Admission against the function's concurrency cap, exactly one usage record per
//! admitted invocation (even if the caller goes away), and the invocation metrics all live here.

use crate::{Deployed, Inner, InvokeError, Scheduler};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use wisp_ledger::{Committed, Origin, Outcome, UsageRecord};
use wisp_runtime::{Invoked, Workload};

impl Scheduler {
    /// Runs `req` on `function`'s live revision. `req`'s URI is what the function sees;
    /// `origin` (a [`wisp_ledger::Source`], or a trigger and event id) is metered with it.
    pub async fn invoke<B>(
        &self,
        function: &str,
        req: http::Request<B>,
        origin: impl Into<Origin>,
    ) -> Result<http::Response<Bytes>, InvokeError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let deployed = self.route(function)?;
        let limit = self.inner.concurrency_limit(&deployed.stored.settings);
        let state = &deployed.state;
        if state.admitted.fetch_add(1, Ordering::Relaxed) >= limit as usize {
            state.admitted.fetch_sub(1, Ordering::Relaxed);
            self.inner.metrics_of(state).throttled.inc();
            return Err(InvokeError::Throttled { function: function.to_string(), limit });
        }
        let meter = Meter {
            deployed: &deployed,
            inner: &self.inner,
            origin: origin.into(),
            started: Instant::now(),
            start_ms: crate::now_ms(),
            done: false,
        };
        let invoked = deployed.live.invoke(req).await;
        let committed = meter.finish(&invoked);
        // With a synchronous ledger, the record is on disk before the caller hears back.
        committed.await;
        invoked.result.map_err(InvokeError::Runtime)
    }

    fn route(&self, function: &str) -> Result<Arc<Deployed>, InvokeError> {
        if let Some(d) = self.inner.functions.read().unwrap().get(function) {
            return Ok(d.clone());
        }
        match self.inner.failed.read().unwrap().get(function) {
            Some(f) => Err(InvokeError::Unavailable { function: function.to_string(), reason: f.reason.clone() }),
            None => Err(InvokeError::NotFound(function.to_string())),
        }
    }
}

fn outcome(result: &Result<http::Response<Bytes>, wisp_runtime::InvokeError>) -> Outcome {
    use wisp_runtime::InvokeError as E;
    match result {
        Ok(_) => Outcome::Ok,
        Err(E::RequestTooLarge { .. } | E::BadRequest(_) | E::Capacity(_) | E::MemoryBudget { .. }) => {
            Outcome::Rejected
        }
        Err(E::ResponseTooLarge { .. } | E::Guest(_)) => Outcome::Error,
        Err(E::Trap(_)) => Outcome::Trap,
        Err(E::Memory { .. }) => Outcome::Memory,
        Err(E::Timeout(_)) => Outcome::Timeout,
    }
}

/// Meters one admitted invocation: records it when finished, or as cancelled if the caller
/// went away first (the future was dropped), and releases its admission slot either way.
struct Meter<'a> {
    deployed: &'a Deployed,
    inner: &'a Inner,
    origin: Origin,
    started: Instant,
    start_ms: u64,
    done: bool,
}

impl Meter<'_> {
    fn record(&self, outcome: Outcome, invoked: Option<&Invoked>) -> Committed {
        let wall = self.started.elapsed();
        let (cold, peak, request_bytes) =
            invoked.map_or((false, 0, 0), |i| (i.cold, i.peak_memory_bytes, i.request_bytes));
        let (status, response_bytes) = match invoked.map(|i| &i.result) {
            Some(Ok(response)) => (response.status().as_u16(), response.body().len() as u64),
            _ => (0, 0),
        };
        self.inner.metrics_of(&self.deployed.state).observe(outcome, cold, wall);
        self.inner.ledger.record(UsageRecord {
            function: self.deployed.state.name.clone(),
            revision: self.deployed.stored.revision,
            source: self.origin.source,
            start_ms: self.start_ms,
            wall_us: wall.as_micros() as u64,
            cold,
            peak_memory_bytes: peak,
            outcome,
            request_bytes,
            response_bytes,
            status,
            trigger: self.origin.trigger.clone(),
            event_id: self.origin.event_id.clone(),
        })
    }

    fn finish(mut self, invoked: &Invoked) -> Committed {
        self.done = true;
        self.record(outcome(&invoked.result), Some(invoked))
    }
}

impl Drop for Meter<'_> {
    fn drop(&mut self) {
        self.deployed.state.admitted.fetch_sub(1, Ordering::Relaxed);
        if !self.done {
            // Dropped mid-invocation: still exactly one record, marked cancelled.
            drop(self.record(Outcome::Cancelled, None));
        }
    }
}

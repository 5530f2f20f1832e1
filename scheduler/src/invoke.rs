//! The one invoke path: every request reaches a function through [`Scheduler::invoke`], whatever
//! its source. Admission against the function's concurrency cap, exactly one usage record per
//! admitted invocation (even if the caller goes away), and the invocation metrics all live here.

use crate::activator::Refused;
use crate::revision::{Live, Revision};
use crate::route::Target;
use crate::{FunctionState, Inner, InvokeError, Scheduler};
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use wisp_ledger::{Committed, Origin, Outcome, Runtime, UsageRecord};
use wisp_runtime::{Invoked, Workload};

impl Scheduler {
    /// Runs `req` on a revision of `function` (an id: `name` or `namespace/name`), chosen by the
    /// `Knative-Serving-Tag` header if it has one, else by the traffic split. `req`'s URI is
    /// what the function sees; `origin` (a [`wisp_ledger::Source`], or a trigger and event id)
    /// is metered with it. At zero or at capacity the request waits in the revision's
    /// activator while the autoscaler is poked.
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
        let service = self.service(function).ok_or_else(|| InvokeError::NotFound(function.to_string()))?;
        let tag = req.headers().get("knative-serving-tag").and_then(|v| v.to_str().ok());
        let revision = match service.route.pick(tag) {
            Some(Target::Live(revision)) => revision.clone(),
            Some(Target::Unavailable { revision, reason }) => {
                let reason = format!("revision {revision:?} {reason}");
                return Err(InvokeError::Unavailable { function: function.to_string(), reason });
            }
            None => match tag {
                Some(tag) => return Err(InvokeError::NoSuchTag { function: function.to_string(), tag: tag.into() }),
                None => {
                    let reason = "no traffic target routes anywhere".to_string();
                    return Err(InvokeError::Unavailable { function: function.to_string(), reason });
                }
            },
        };
        let settings = &revision.stored.settings;
        let limit = self.inner.concurrency_limit(settings);
        let state = &service.state;
        if state.admitted.fetch_add(1, Ordering::Relaxed) >= limit as usize {
            state.admitted.fetch_sub(1, Ordering::Relaxed);
            self.inner.metrics_of(state).throttled.inc();
            return Err(InvokeError::Throttled { function: function.to_string(), limit });
        }
        let _admitted = Admitted(&state.admitted);
        let _counted = revision.enter();
        if revision.replicas() == 0 {
            // The first request to a revision at zero: decide now, not at the next tick.
            revision.poke(true);
        }
        let timeout = settings.limits().timeout;
        let _slot =
            revision.activator.acquire(timeout, || revision.poke(true)).await.map_err(|refused| match refused {
                Refused::QueueFull => {
                    InvokeError::QueueFull { function: function.to_string(), limit: self.inner.config.activator_queue }
                }
                Refused::Timeout => InvokeError::ActivatorTimeout { function: function.to_string(), timeout },
            })?;
        let meter = Meter {
            revision: &revision,
            state,
            inner: &self.inner,
            origin: origin.into(),
            started: Instant::now(),
            start_ms: crate::now_ms(),
            done: false,
        };
        let invoked = revision.live.invoke(req).await;
        // With a synchronous ledger, the record is on disk before the caller hears back.
        if let Some(committed) = meter.finish(&invoked) {
            committed.await;
        }
        invoked.result.map_err(InvokeError::Runtime)
    }
}

fn outcome(result: &Result<http::Response<Bytes>, wisp_runtime::InvokeError>) -> Outcome {
    use wisp_runtime::InvokeError as E;
    match result {
        Ok(_) => Outcome::Ok,
        Err(
            E::RequestTooLarge { .. } | E::BadRequest(_) | E::Capacity(_) | E::MemoryBudget { .. } | E::NotReady(_),
        ) => Outcome::Rejected,
        Err(E::ResponseTooLarge { .. } | E::Guest(_) | E::Upstream(_)) => Outcome::Error,
        Err(E::Trap(_)) => Outcome::Trap,
        Err(E::Memory { .. }) => Outcome::Memory,
        Err(E::Timeout(_)) => Outcome::Timeout,
    }
}

/// Holds one slot of a function's `max_concurrency` until dropped.
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Meters one invocation the activator let through: records it when finished, or as
/// cancelled if the caller went away first (the future was dropped). Time queued in the
/// activator is not billed.
struct Meter<'a> {
    revision: &'a Revision,
    state: &'a FunctionState,
    inner: &'a Inner,
    origin: Origin,
    started: Instant,
    start_ms: u64,
    done: bool,
}

impl Meter<'_> {
    /// Observes the invocation in the metrics and queues its usage record (unless metering is
    /// off); returns when the record counts as written.
    fn record(&self, outcome: Outcome, invoked: Option<&Invoked>) -> Option<Committed> {
        let wall = self.started.elapsed();
        let (cold, peak, request_bytes, cpu_us, outbound_bytes) = invoked.map_or((false, 0, 0, 0, 0), |i| {
            (i.cold, i.peak_memory_bytes, i.request_bytes, i.cpu_us, i.outbound_bytes)
        });
        let (status, response_bytes) = match invoked.map(|i| &i.result) {
            Some(Ok(response)) => (response.status().as_u16(), response.body().len() as u64),
            _ => (0, 0),
        };
        self.inner.metrics_of(self.state).observe(outcome, cold, wall);
        if !self.inner.config.metering {
            return None;
        }
        Some(self.inner.ledger.record(UsageRecord {
            function: self.state.name.clone(),
            revision: self.revision.stored.revision,
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
            runtime: match self.revision.live {
                Live::Wasm(_) => Runtime::Wasm,
                Live::Container(_) => Runtime::Container,
            },
            memory_bytes: self.revision.stored.settings.memory_bytes,
            cpu_us,
            outbound_bytes,
        }))
    }

    fn finish(mut self, invoked: &Invoked) -> Option<Committed> {
        self.done = true;
        self.record(outcome(&invoked.result), Some(invoked))
    }
}

impl Drop for Meter<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Dropped mid-invocation: still exactly one record, marked cancelled.
            drop(self.record(Outcome::Cancelled, None));
        }
    }
}

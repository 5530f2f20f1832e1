//! Delivering one event to a function through the scheduler's invoke path, with the trigger's
//! retry policy. Every source uses this; what to do with a final failure (dead-letter or drop)
//! and when to acknowledge to the broker stay with the source.

use crate::delivery::{DeliverySpec, retryable};
use crate::event::Event;
use crate::status::TriggerStatus;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use wisp_ledger::{Origin, Source};
use wisp_scheduler::Scheduler;

/// Longest `knativeerrordata` kept from a failed response.
pub const ERROR_DATA_LIMIT: usize = 1024;

/// How one event's delivery ended.
#[derive(Debug)]
pub enum Delivery {
    /// The function answered 2xx; the response is kept for callers that want it.
    Delivered(http::Response<Bytes>),
    /// The last attempt failed, or a response was final and not 2xx.
    Failed(Failure),
    /// `stop` fired during a backoff: the event is neither delivered nor failed, and must not be
    /// acknowledged (it is redelivered after a restart or rebalance).
    Cancelled,
}

/// Why an event could not be delivered: what the dead-letter extensions carry.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The function's last status, or the status reporting why there was none; 0 after a
    /// per-attempt timeout.
    pub status: u16,
    /// The response body (or the error), cut to [`ERROR_DATA_LIMIT`] bytes.
    pub data: String,
    /// Attempts made.
    pub attempts: u32,
    /// The response, when the function gave one (async invocations keep it as their result).
    pub response: Option<http::Response<Bytes>>,
}

impl Failure {
    /// Adds Knative's dead-letter extensions to `event`: `knativeerrordest` (where delivery
    /// was attempted), `knativeerrorcode` (the last status, when there was one) and
    /// `knativeerrordata` (the response or error, truncated).
    pub fn annotate(&self, event: &mut Event, dest: &str) {
        event.set_extension("knativeerrordest", dest);
        if self.status != 0 {
            event.set_extension("knativeerrorcode", self.status.to_string());
        }
        event.set_extension("knativeerrordata", self.data.clone());
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > ERROR_DATA_LIMIT {
        let mut end = ERROR_DATA_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Delivers events of one trigger to its function. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    scheduler: Scheduler,
    function: Arc<str>,
    source: Source,
    trigger: Option<Arc<str>>,
    delivery: DeliverySpec,
    status: Option<Arc<TriggerStatus>>,
}

impl Dispatcher {
    /// A dispatcher to `function`, metered as `source` (and `trigger`, when there is one),
    /// counting retries and deliveries in `status`.
    pub fn new(
        scheduler: Scheduler,
        function: &str,
        source: Source,
        delivery: DeliverySpec,
        status: Option<Arc<TriggerStatus>>,
    ) -> Self {
        let trigger = status.as_ref().map(|s| s.name().clone());
        Self { scheduler, function: function.into(), source, trigger, delivery, status }
    }

    /// The function events go to.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// Where deliveries go, as `knativeerrordest` names it.
    pub fn destination(&self) -> String {
        format!("/fn/{}", self.function)
    }

    /// The retry policy.
    pub fn delivery(&self) -> &DeliverySpec {
        &self.delivery
    }

    /// Delivers `event`, retrying per the delivery spec. `stop` interrupts only the pauses
    /// between attempts: an attempt in flight runs to its end (the caller bounds shutdown by
    /// dropping this future, which the scheduler meters as cancelled).
    pub async fn deliver(&self, event: &Event, stop: &CancellationToken) -> Delivery {
        let received = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failure = match self.attempt(&event.id, event.to_request()).await {
                Ok(response) => {
                    if let Some(s) = &self.status {
                        s.delivered(received.elapsed());
                    }
                    return Delivery::Delivered(response);
                }
                Err(failure) => failure,
            };
            if !retryable(failure.status) || attempts > self.delivery.retries {
                return Delivery::Failed(Failure { attempts, ..failure });
            }
            if let Some(s) = &self.status {
                s.retried();
            }
            tokio::select! {
                _ = stop.cancelled() => return Delivery::Cancelled,
                _ = tokio::time::sleep(self.delivery.backoff(attempts)) => {}
            }
        }
    }

    /// Makes one attempt: `Ok` with a 2xx response, or the failure (retryable or not, see
    /// [`retryable`]) with its status, data and response. `id` is the event id metered with it.
    pub async fn attempt(
        &self,
        id: &str,
        request: http::Request<http_body_util::Full<Bytes>>,
    ) -> Result<http::Response<Bytes>, Failure> {
        let origin = Origin { source: self.source, trigger: self.trigger.clone(), event_id: Some(id.into()) };
        let attempt = self.scheduler.invoke(&self.function, request, origin);
        let (status, data, response) = match tokio::time::timeout(self.delivery.timeout(), attempt).await {
            Ok(Ok(response)) if response.status().is_success() => return Ok(response),
            Ok(Ok(response)) => {
                let data = String::from_utf8_lossy(response.body()).into_owned();
                (response.status().as_u16(), data, Some(response))
            }
            Ok(Err(e)) => (e.kind().http_status(), e.to_string(), None),
            Err(_) => (0, format!("no response within {:?} (delivery timeout)", self.delivery.timeout()), None),
        };
        Err(Failure { status, data: truncate(data), attempts: 1, response })
    }
}

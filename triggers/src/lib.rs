//! Event sources: Kafka topics and RabbitMQ queues bound to functions (triggers), and async HTTP
//! invocations. Every event becomes a CloudEvents 1.0 binary-mode request and goes through the
//! scheduler's one invoke path with the trigger's delivery spec (retries, backoff, per-attempt
//! timeout); it is acknowledged to its broker only after the function accepted it or it went to
//! the dead-letter destination. One module per source, each a small type behind [`Consumer`].

#![warn(missing_docs)]

pub mod delivery;
mod dispatch;
pub mod event;
mod invocations;
mod kafka;
mod manager;
mod rabbitmq;
pub mod spec;
mod status;

pub use delivery::{BackoffPolicy, DeliverySpec};
pub use dispatch::{Delivery, Dispatcher, Failure};
pub use event::Event;
pub use invocations::{CallbackView, InvocationError, InvocationState, InvocationView, Invocations, InvocationsConfig};
pub use manager::{TriggerError, TriggerView, Triggers, TriggersConfig};
pub use spec::{InitialOffset, KafkaSpec, Ordering, RabbitmqSpec, SourceSpec, TriggerSpec, redact_url};
pub use status::{PartitionLag, State, TriggerStats, TriggerStatus};

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a consumer is given to run with.
#[derive(Clone)]
pub(crate) struct Context {
    /// The trigger as created (name, function, source settings, delivery spec).
    pub(crate) spec: TriggerSpec,
    /// Delivers one event with the trigger's retry policy.
    pub(crate) dispatcher: Dispatcher,
    /// Where the consumer reports state, lag and counts.
    pub(crate) status: Arc<TriggerStatus>,
    /// On stop, how long in-flight deliveries may take to finish before they are abandoned
    /// (abandoned events are not acknowledged, so they are redelivered).
    pub(crate) drain: Duration,
}

/// One kind of event source, run as one task per trigger (Spin's trigger executors are the model).
pub(crate) trait Consumer: Send + Sized + 'static {
    /// Consumes until `stop` is cancelled, delivering each event with `ctx.dispatcher` and
    /// acknowledging it to the broker only after it was delivered or dead-lettered. A broker
    /// that cannot be reached is a state on `ctx.status` and a retry with backoff, never a
    /// return. On stop it finishes (or, after `ctx.drain`, abandons) in-flight deliveries,
    /// commits what is done, and leaves the broker cleanly before returning.
    fn run(self, ctx: Context, stop: CancellationToken) -> impl Future<Output = ()> + Send;
}

/// The `source` attribute Knative gives events of a source object: `/apis/v1/namespaces/<ns>/<kind>/<name>#<where>`.
pub(crate) fn ce_source(kind: &str, trigger: &str, place: &str) -> String {
    format!("/apis/v1/namespaces/default/{kind}/{trigger}#{place}")
}

//! PLACEHOLDER: being written.

use crate::spec::{RabbitmqSpec, TriggerSpec};
use crate::{Consumer, Context};
use tokio_util::sync::CancellationToken;

pub(crate) struct RabbitmqConsumer {
    spec: RabbitmqSpec,
}

impl RabbitmqConsumer {
    pub(crate) fn new(_trigger: &TriggerSpec, spec: &RabbitmqSpec) -> Self {
        Self { spec: spec.clone() }
    }
}

impl Consumer for RabbitmqConsumer {
    async fn run(self, ctx: Context, stop: CancellationToken) {
        let _ = (&self.spec, &ctx);
        stop.cancelled().await;
    }
}

//! PLACEHOLDER: being written.

use crate::spec::{KafkaSpec, TriggerSpec};
use crate::{Consumer, Context};
use tokio_util::sync::CancellationToken;

pub(crate) struct KafkaConsumer {
    spec: KafkaSpec,
}

impl KafkaConsumer {
    pub(crate) fn new(_trigger: &TriggerSpec, spec: &KafkaSpec) -> Self {
        Self { spec: spec.clone() }
    }
}

impl Consumer for KafkaConsumer {
    async fn run(self, ctx: Context, stop: CancellationToken) {
        let _ = (&self.spec, &ctx);
        stop.cancelled().await;
    }
}

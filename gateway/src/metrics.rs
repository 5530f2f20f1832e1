//! The gateway's own metrics (connections, shed requests), registered beside the scheduler's in
//! the node's one `prometheus-client` registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Default)]
pub(crate) struct GatewayMetrics {
    pub(crate) shed: Counter,
    pub(crate) open_connections: Gauge,
    pub(crate) connection_limit: Gauge,
}

impl GatewayMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "wisp_requests_shed",
            "Function requests refused with 429 because the node was at --max-concurrency",
            m.shed.clone(),
        );
        registry.register("wisp_open_connections", "Client connections open now", m.open_connections.clone());
        registry.register(
            "wisp_connection_limit",
            "Client connections served at once (--max-connections)",
            m.connection_limit.clone(),
        );
        m
    }
}

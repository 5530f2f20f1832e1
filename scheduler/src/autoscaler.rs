//! The autoscaler loop: every tick (`--scale-interval`, 100 ms by default, one metric bucket)
//! each live revision closes its bucket and its KPA decider sets its replicas. Requests that
//! find a revision at zero or at capacity poke it between ticks (see `Revision::poke`).

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Every `interval` until `shutdown`: tick each live revision of each service.
pub(crate) async fn run(scheduler: std::sync::Weak<crate::Inner>, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let Some(inner) = scheduler.upgrade() else { return };
        for service in inner.services() {
            for revision in service.live.values() {
                revision.tick(service.route.routes_to(&revision.stored.name));
            }
        }
    }
}

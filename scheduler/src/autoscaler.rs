//! Scaling: how many ready instances each live revision keeps. One policy for now (keep
//! `min_warm`, follow recent concurrency, drop to zero when idle), sampled every
//! `--scale-interval` from each workload's stats; a QPS autoscaler will be another policy.

use crate::model::Settings;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wisp_runtime::Workload;

/// What the scaler observed of one revision since its last tick.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub in_flight: usize,
    /// Highest concurrency since the previous tick.
    pub peak_in_flight: usize,
    pub idle_for: Duration,
}

/// Keeps `min_warm` ready, or twice the recent peak concurrency (the headroom absorbs the refill
/// lag: with exactly `peak` ready, the next request often arrived before its replacement was
/// instantiated and started cold), up to `max_ready`; after `idle_timeout` without requests, none.
#[derive(Debug, Clone, Copy)]
pub struct IdleScaler {
    pub max_ready: usize,
}

impl IdleScaler {
    /// Ready instances the revision should keep now.
    pub fn desired_ready(&self, settings: &Settings, sample: &Sample) -> usize {
        if sample.in_flight == 0 && sample.idle_for >= settings.idle_timeout() {
            return 0;
        }
        (settings.min_warm as usize).max(2 * sample.peak_in_flight).min(self.max_ready)
    }
}

/// Every `interval` until `shutdown`: sample each live revision and set its target.
pub(crate) async fn run(scheduler: std::sync::Weak<crate::Inner>, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let Some(inner) = scheduler.upgrade() else { return };
        for d in inner.live() {
            let stats = d.live.stats();
            let sample =
                Sample { in_flight: stats.in_flight, peak_in_flight: stats.peak_in_flight, idle_for: stats.idle_for };
            d.live.set_target(inner.policy.desired_ready(&d.stored.settings, &sample));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(in_flight: usize, peak: usize, idle_ms: u64) -> Sample {
        Sample { in_flight, peak_in_flight: peak, idle_for: Duration::from_millis(idle_ms) }
    }

    #[test]
    fn keeps_min_warm_follows_peaks_and_drops_to_zero_when_idle() {
        let policy = IdleScaler { max_ready: 8 };
        let settings = Settings { min_warm: 2, idle_timeout_ms: 1000, ..Settings::default() };
        assert_eq!(policy.desired_ready(&settings, &sample(0, 0, 10)), 2);
        assert_eq!(policy.desired_ready(&settings, &sample(3, 3, 0)), 6);
        assert_eq!(policy.desired_ready(&settings, &sample(0, 50, 0)), 8);
        assert_eq!(policy.desired_ready(&settings, &sample(0, 0, 1000)), 0);
        assert_eq!(policy.desired_ready(&settings, &sample(1, 1, 5000)), 2);
        assert_eq!(policy.desired_ready(&Settings { min_warm: 3, ..settings.clone() }, &sample(1, 1, 0)), 3);
        let zero = Settings { min_warm: 0, ..settings };
        assert_eq!(policy.desired_ready(&zero, &sample(0, 0, 10)), 0);
    }
}

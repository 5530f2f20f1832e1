//! Scaling: how many ready instances each revision keeps. One policy for now (keep `min_warm`,
//! follow recent concurrency, drop to zero when idle); a QPS autoscaler will be another
//! `ScalingPolicy`.

use crate::model::Settings;
use std::time::Duration;

/// What the scaler observed of one revision since its last tick.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub in_flight: usize,
    /// Highest concurrency since the previous tick.
    pub peak_in_flight: usize,
    pub idle_for: Duration,
}

pub trait ScalingPolicy: Send + Sync + 'static {
    /// Ready instances the revision should keep now.
    fn desired_ready(&self, settings: &Settings, sample: &Sample) -> usize;
}

/// Keeps `min_warm` ready, or twice the recent peak concurrency (the headroom absorbs the refill
/// lag: with exactly `peak` ready, the next request often arrived before its replacement was
/// instantiated and started cold), up to `max_ready`; after `idle_timeout` without requests, none.
#[derive(Debug, Clone, Copy)]
pub struct IdleScaler {
    pub max_ready: usize,
}

impl ScalingPolicy for IdleScaler {
    fn desired_ready(&self, settings: &Settings, sample: &Sample) -> usize {
        if sample.in_flight == 0 && sample.idle_for >= settings.idle_timeout() {
            return 0;
        }
        (settings.min_warm as usize).max(2 * sample.peak_in_flight).min(self.max_ready)
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
        assert_eq!(policy.desired_ready(&Settings { min_warm: 3, ..settings }, &sample(1, 1, 0)), 3);
        let zero = Settings { min_warm: 0, ..settings };
        assert_eq!(policy.desired_ready(&zero, &sample(0, 0, 10)), 0);
    }
}

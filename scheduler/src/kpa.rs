//! The KPA-class autoscaler decider: Knative's `Scale` (pkg/autoscaler/scaling/autoscaler.go)
//! plus the KPA reconciler's bounds and scale-to-zero steps (pkg/reconciler/autoscaling/kpa/
//! scaler.go), as pure functions of a simulated clock. Time is a `Duration` since an arbitrary
//! epoch; nothing here reads a clock or spawns, so every behaviour is unit-tested by stepping time.
//!
//! Mapping from Knative: the stable window is `Settings::idle_timeout_ms`, the activation scale
//! is `Settings::min_warm`, `containerConcurrency` is `Settings::container_concurrency`, and the
//! `autoscaling.knative.dev/*` annotations are `Settings::scaling`. The node-wide knobs of
//! config-autoscaler are [`DeciderConfig`].

use crate::model::Settings;
use crate::scaling::{Metric, Scaling};
use std::collections::VecDeque;
use std::time::Duration;

/// Windowed averages of the two KPA metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Averages {
    /// In-flight plus activator-queued requests.
    pub concurrency: f64,
    /// Requests per second.
    pub rps: f64,
}

impl Averages {
    /// Whether any request shows in these averages (either metric, whichever one scales).
    fn any(&self) -> bool {
        self.concurrency > 0.0 || self.rps > 0.0
    }
}

/// Most ring slots one [`Windows`] keeps (about 7 KiB): two minutes of 1 s buckets stay exact
/// (the default 60 s window needs 60); a longer window is kept in coarser slots, so a revision
/// with a one-hour window does not hold a 3,600-slot ring (density: thousands of warm
/// functions). Coarse slots delay the panic side's view of a step for such revisions.
const MAX_SLOTS: u64 = 120;

/// One ring slot: the records of `per_slot` consecutive buckets.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Which slot of time this is (bucket index / per_slot); a slot whose index is not the
    /// one asked for holds stale data from an earlier lap of the ring and counts as empty.
    index: u64,
    /// Sum of the recorded concurrencies, one per recorded bucket (see `record`).
    concurrency: f64,
    requests: u64,
    /// The newest bucket recorded into this slot, its records and their mean (included in
    /// `concurrency`), so a second record in the same bucket averages with the first instead
    /// of adding to it.
    last_bucket: u64,
    last_records: u32,
    last_mean: f64,
}

/// Windowed averages of the two KPA metrics, in fixed-size buckets (Knative's
/// `TimedFloat64Buckets` with the linear algorithm). One ring serves every window up to the
/// stable window, so the stable, panic and newest-bucket averages come from the same records.
#[derive(Debug, Clone)]
pub struct Windows {
    bucket: Duration,
    /// The stable window in buckets: the longest window averaged.
    span: u64,
    /// Buckets per slot: 1 unless the stable window is longer than `MAX_SLOTS` buckets.
    per_slot: u64,
    /// Allocated by the first record and freed by [`Windows::reset`]: an idle revision at zero
    /// holds none (tens of thousands of functions fit).
    slots: Vec<Option<Slot>>,
    /// The ring's length once allocated.
    len: usize,
    /// The bucket where the current run of observation began: averages cover no time before
    /// it, so a revision seen for 3 s is not diluted by 57 s it was never measured for.
    first: Option<u64>,
    /// The newest bucket recorded.
    last: Option<u64>,
    /// The newest bucket with a non-zero record, exact for any window (`any_traffic`).
    last_traffic: Option<u64>,
}

impl Windows {
    /// Buckets of `bucket` (Knative: 1 s; Wisp: the autoscaler tick) covering `stable_window`.
    ///
    /// Panics if `bucket` is zero.
    pub fn new(bucket: Duration, stable_window: Duration) -> Self {
        assert!(!bucket.is_zero(), "a metric bucket must be longer than zero");
        let span = buckets_in(stable_window, bucket);
        let per_slot = span.div_ceil(MAX_SLOTS);
        // Coarse slots need one more: a window not aligned to slots touches one extra slot.
        let len = span.div_ceil(per_slot) + u64::from(per_slot > 1);
        Self {
            bucket,
            span,
            per_slot,
            slots: Vec::new(),
            len: len as usize,
            first: None,
            last: None,
            last_traffic: None,
        }
    }

    /// Forgets every record and frees the ring (a revision idle at zero has nothing to average).
    pub fn reset(&mut self) {
        *self = Self { slots: Vec::new(), first: None, last: None, last_traffic: None, ..*self };
    }

    /// The bucket size.
    pub fn bucket(&self) -> Duration {
        self.bucket
    }

    fn index(&self, at: Duration) -> u64 {
        (at.as_nanos() / self.bucket.as_nanos()) as u64
    }

    /// One bucket's observation ending at `now`: the time-averaged concurrency over it
    /// (in-flight + activator-queued) and the number of requests that arrived in it. It lands
    /// in the bucket that contains `now` (so a decision right after the record sees it). A
    /// second record in the same bucket (a tick that came early) averages its concurrency with
    /// the first and adds its requests: one source must not double its load. Records older
    /// than the stable window are ignored; negative or non-finite concurrency counts as 0.
    pub fn record(&mut self, now: Duration, concurrency: f64, requests: u64) {
        if self.slots.is_empty() {
            self.slots = vec![None; self.len];
        }
        let concurrency = if concurrency.is_finite() && concurrency > 0.0 { concurrency } else { 0.0 };
        let at = self.index(now);
        match (self.first, self.last) {
            (Some(first), Some(last)) => {
                if at.saturating_add(self.span) <= last {
                    return;
                }
                if at >= last.saturating_add(self.span) {
                    // A whole window without records: a new run (Knative resets firstWrite).
                    self.first = Some(at);
                } else if at < first {
                    self.first = Some(at);
                }
            }
            _ => self.first = Some(at),
        }
        self.last = self.last.max(Some(at));
        if concurrency > 0.0 || requests > 0 {
            self.last_traffic = self.last_traffic.max(Some(at));
        }
        let index = at / self.per_slot;
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(index % len) as usize];
        match slot {
            Some(s) if s.index == index && s.last_bucket == at => {
                s.last_records += 1;
                let mean = s.last_mean + (concurrency - s.last_mean) / f64::from(s.last_records);
                s.concurrency += mean - s.last_mean;
                s.last_mean = mean;
                s.requests += requests;
            }
            Some(s) if s.index == index => {
                s.concurrency += concurrency;
                s.requests += requests;
                (s.last_bucket, s.last_records, s.last_mean) = (at, 1, concurrency);
            }
            _ => {
                *slot = Some(Slot {
                    index,
                    concurrency,
                    requests,
                    last_bucket: at,
                    last_records: 1,
                    last_mean: concurrency,
                })
            }
        }
    }

    /// Averages over the last `window` (concurrency, requests per second), counting missing
    /// buckets (no record) as 0 once the window has been observed (Knative's linear
    /// averaging): before the first record of this run, time is not counted at all. `window`
    /// is rounded up to whole buckets, at least one, and at most the stable window. With
    /// coarse slots (stable windows over `MAX_SLOTS` buckets) the window is rounded out to
    /// whole slots, so an average is never 0 while a request is still inside the window.
    pub fn average(&self, now: Duration, window: Duration) -> Averages {
        let Some(first) = self.first else { return Averages::default() };
        let end = self.index(now);
        let width = buckets_in(window, self.bucket).min(self.span);
        let start = end.saturating_add(1).saturating_sub(width).max(first);
        if start > end {
            return Averages::default();
        }
        let (from, to) = (start / self.per_slot, end / self.per_slot);
        let counted = end + 1 - (from * self.per_slot).max(first);
        let len = self.slots.len() as u64;
        let (mut concurrency, mut requests) = (0.0, 0u64);
        for index in from..=to {
            if let Some(s) = self.slots[(index % len) as usize].filter(|s| s.index == index) {
                concurrency += s.concurrency;
                requests += s.requests;
            }
        }
        let counted = counted as f64;
        Averages {
            concurrency: (concurrency / counted).max(0.0),
            rps: requests as f64 / (counted * self.bucket.as_secs_f64()),
        }
    }

    /// Whether anything non-zero was recorded within the last `window` (whole buckets; exact
    /// for any window, even past the stable window).
    pub fn any_traffic(&self, now: Duration, window: Duration) -> bool {
        let (end, width) = (self.index(now), buckets_in(window, self.bucket));
        self.last_traffic.is_some_and(|at| at.saturating_add(width) > end)
    }
}

/// `window` in whole buckets, rounded up, at least one.
fn buckets_in(window: Duration, bucket: Duration) -> u64 {
    (window.as_nanos().div_ceil(bucket.as_nanos()) as u64).max(1)
}

/// The node-wide KPA knobs (Knative's config-autoscaler).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeciderConfig {
    /// Replicas may grow at most this many times the ready count per decision (Knative: 1000).
    pub max_scale_up_rate: f64,
    /// Replicas may shrink to no less than ready / this per decision (Knative: 2).
    pub max_scale_down_rate: f64,
    /// How long the last replica stays after the decision to go to zero. Knative's 30 s waits
    /// for the network to put the activator in the path; Wisp's activator is always in the
    /// request path in-process, so 0 by default.
    pub scale_to_zero_grace: Duration,
    /// Off: 1 replica is the floor (Knative `enable-scale-to-zero`).
    pub enable_scale_to_zero: bool,
    /// How often the caller decides; also the shortest panic window.
    pub tick: Duration,
}

impl Default for DeciderConfig {
    fn default() -> Self {
        Self {
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            scale_to_zero_grace: Duration::ZERO,
            enable_scale_to_zero: true,
            tick: Duration::from_secs(2),
        }
    }
}

/// What one decision is made from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Input {
    pub now: Duration,
    /// Averages over [`Decider::stable_window`].
    pub stable: Averages,
    /// Averages over [`Decider::panic_window`] (a caller may raise them, e.g. to the demand a
    /// first request brings, to decide at once).
    pub panic: Averages,
    /// Replicas ready now.
    pub ready: u32,
    /// Routed by some traffic target: min-scale, initial-scale, scale-down delay, rate-limited
    /// scale-down and last-replica retention apply only then.
    pub reachable: bool,
}

/// One decision.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Decision {
    /// Replicas wanted.
    pub desired: u32,
    pub panicking: bool,
    /// Spare capacity beyond the target burst capacity: negative means the activator should
    /// stay in the path (Knative's EBC; 0 when TBC is 0, -1 when TBC is -1).
    pub excess_burst_capacity: f64,
    /// The stable and panic values of the scaling metric used.
    pub stable_value: f64,
    pub panic_value: f64,
}

/// The knobs the decider reads from a revision's settings.
#[derive(Debug, Clone, Copy)]
struct Spec {
    scaling: Scaling,
    stable_window: Duration,
    activation: u32,
    container_concurrency: u32,
}

impl Spec {
    fn of(settings: &Settings) -> Self {
        Self {
            scaling: settings.scaling,
            stable_window: settings.idle_timeout(),
            activation: settings.min_warm,
            container_concurrency: settings.container_concurrency,
        }
    }
}

/// Where the revision is on its way to and from zero (Knative's PA Active condition).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Never had a replica: may go to zero without waiting (initial-scale 0, or unrouted).
    New,
    /// Has replicas since `since`; must stay active a stable window before going idle.
    Active { since: Duration },
    /// Decided to go to zero at `since` (Knative: PA Inactive); the last replica stays for
    /// max(grace, retention).
    Deactivating { since: Duration },
    /// Scaled to zero.
    Zero,
}

/// The highest desired count over the last `scale-down-delay` (Knative's max.TimeWindow): a
/// monotonic queue, so each decision is O(1) amortized.
#[derive(Debug, Clone, Default)]
struct MaxWindow {
    /// (when, desired), desired strictly decreasing front to back.
    entries: VecDeque<(Duration, u32)>,
}

impl MaxWindow {
    fn record(&mut self, now: Duration, value: u32, span: Duration) -> u32 {
        while self.entries.back().is_some_and(|&(_, v)| v <= value) {
            self.entries.pop_back();
        }
        self.entries.push_back((now, value));
        while self.entries.front().is_some_and(|&(at, _)| at + span <= now) {
            self.entries.pop_front();
        }
        self.entries.front().map_or(value, |&(_, v)| v)
    }
}

/// One revision's KPA decider. Feed it [`Input`]s from a [`Windows`] every tick (and at once on
/// a first request); apply [`Decision::desired`].
#[derive(Debug, Clone)]
pub struct Decider {
    spec: Spec,
    config: DeciderConfig,
    /// The last time the panic demand was over the threshold; panicking while `Some`.
    panic_time: Option<Duration>,
    /// The most replicas wanted during this panic: never scale below it while panicking.
    max_panic: u32,
    delay: MaxWindow,
    phase: Phase,
    /// The revision has had initial-scale ready replicas once; the floor no longer applies.
    initial_reached: bool,
}

impl Decider {
    /// A decider for a revision with `ready` replicas now. With more than one it starts in
    /// panic mode (Knative: an autoscaler restart must not scale down on empty history), and
    /// with any it counts as active from `now`.
    pub fn new(settings: &Settings, config: DeciderConfig, now: Duration, ready: u32) -> Self {
        let spec = Spec::of(settings);
        Self {
            spec,
            config,
            panic_time: (ready > 1).then_some(now),
            max_panic: if ready > 1 { ready } else { 0 },
            delay: MaxWindow::default(),
            phase: if ready > 0 { Phase::Active { since: now } } else { Phase::New },
            initial_reached: ready >= spec.scaling.initial_scale,
        }
    }

    /// Settings changed in place: panic, delay and scale-to-zero state carry over.
    pub fn update(&mut self, settings: &Settings) {
        self.spec = Spec::of(settings);
    }

    /// Knative's stable window: `idle_timeout`.
    pub fn stable_window(&self) -> Duration {
        self.spec.stable_window
    }

    /// `panic-window-percentage` of the stable window, rounded to the millisecond, at least
    /// one tick (Knative rounds to the second, at least one 1 s bucket).
    pub fn panic_window(&self) -> Duration {
        let ms = self.spec.stable_window.as_millis() as f64 * self.spec.scaling.panic_window_percentage / 100.0;
        Duration::from_millis(ms.round() as u64).max(self.config.tick)
    }

    /// Decides the replicas: Knative's `Scale`, then min/max/initial bounds and the
    /// scale-to-zero steps of the KPA reconciler.
    pub fn decide(&mut self, input: &Input) -> Decision {
        let Spec { scaling, stable_window, activation, container_concurrency: cc } = self.spec;
        let now = input.now;
        if input.ready >= scaling.initial_scale {
            self.initial_reached = true;
        }
        // Replicas that exist are active (they came from initial-scale or from the caller),
        // but a lagging ready count after a scale to zero does not undo it.
        if self.phase == Phase::New && input.ready > 0 {
            self.phase = Phase::Active { since: now };
        }

        let sanitize = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
        let (stable_value, panic_value) = match scaling.metric {
            Metric::Concurrency => (input.stable.concurrency, input.panic.concurrency),
            Metric::Rps => (input.stable.rps, input.panic.rps),
        };
        let (stable_value, panic_value) = (sanitize(stable_value), sanitize(panic_value));
        let target = scaling.replica_target(cc);
        // With no replicas, rates are relative to one (else nothing could ever start).
        let ready = f64::from(input.ready.max(1));
        let max_up = (self.config.max_scale_up_rate.max(1.0) * ready).ceil();
        // Unrouted revisions may drop at once: nobody is left to serve.
        let max_down = if input.reachable { (ready / self.config.max_scale_down_rate.max(1.0)).floor() } else { 0.0 };
        let dspc = (stable_value / target).ceil();
        let dppc = (panic_value / target).ceil();
        let mut desired_stable = dspc.max(max_down).min(max_up) as u32;
        let mut desired_panic = dppc.max(max_down).min(max_up) as u32;
        // Activation scale: whenever the revision is wanted at all, at least this many.
        if dspc > 0.0 {
            desired_stable = desired_stable.max(activation);
        }
        if dppc > 0.0 {
            desired_panic = desired_panic.max(activation);
        }

        // Panic when the short window wants threshold× the ready replicas; leave only after a
        // stable window without that, when the burst has reached the stable average.
        let over = dppc / ready >= scaling.panic_threshold_percentage / 100.0;
        match self.panic_time {
            _ if over => self.panic_time = Some(now),
            Some(since) if since + stable_window < now => {
                self.panic_time = None;
                self.max_panic = 0;
            }
            _ => {}
        }
        let mut desired = desired_stable;
        if self.panic_time.is_some() {
            // Provision for the larger of the two, and never scale down while panicking.
            self.max_panic = self.max_panic.max(desired.max(desired_panic));
            desired = self.max_panic;
        }
        // Any request in either window means the revision is in use: never zero, and at least
        // the activation scale. This is what makes a first request to a revision at zero start
        // replicas at once, from the panic average alone (the stable one may still read 0).
        let in_use = input.stable.any() || input.panic.any();
        if in_use {
            desired = desired.max(activation.max(1));
        }
        let delay = Duration::from_millis(scaling.scale_down_delay_ms);
        if input.reachable && !delay.is_zero() {
            desired = self.delay.record(now, desired, delay);
        }

        // The reconciler's bounds: min-scale only while routed; initial-scale as the floor
        // until reached once (ignored when unrouted); max-scale caps everything (0: none).
        let mut min = if input.reachable { scaling.min_scale } else { 0 };
        if input.reachable && !self.initial_reached {
            min = min.max(scaling.initial_scale);
        }
        let mut bounded = desired.max(min);
        if scaling.max_scale > 0 {
            bounded = bounded.min(scaling.max_scale);
        }
        if bounded == 0 && !self.config.enable_scale_to_zero {
            bounded = 1;
        }

        let desired = if bounded > 0 {
            match self.phase {
                Phase::New | Phase::Zero => self.phase = Phase::Active { since: now },
                // Only traffic undoes the decision to go idle: a floor or a rate limit holding
                // replicas up does not restart the clock.
                Phase::Deactivating { .. } if in_use => self.phase = Phase::Active { since: now },
                _ => {}
            }
            bounded
        } else {
            self.toward_zero(now, input.reachable)
        };

        let total = scaling.total_target(cc);
        let tbc = scaling.target_burst_capacity;
        let excess_burst_capacity = if tbc == 0.0 {
            0.0
        } else if tbc > 0.0 {
            (f64::from(input.ready) * total - tbc - panic_value).floor()
        } else {
            -1.0
        };
        Decision { desired, panicking: self.panic_time.is_some(), excess_burst_capacity, stable_value, panic_value }
    }

    /// No traffic for the whole stable window (the stable average is 0) and nothing holds
    /// replicas up: Knative's `handleScaleToZero`. The revision must have been active a stable
    /// window (its metrics mean something), then the last replica stays max(grace, retention)
    /// after that decision; retention applies only while routed.
    fn toward_zero(&mut self, now: Duration, reachable: bool) -> u32 {
        let stable_window = self.spec.stable_window;
        if let Phase::Active { since } = self.phase {
            if now.saturating_sub(since) < stable_window {
                return 1;
            }
            self.phase = Phase::Deactivating { since: now };
        }
        match self.phase {
            Phase::Deactivating { since } => {
                let retention = if reachable {
                    Duration::from_millis(self.spec.scaling.scale_to_zero_retention_ms)
                } else {
                    Duration::ZERO
                };
                if now.saturating_sub(since) < self.config.scale_to_zero_grace.max(retention) {
                    return 1;
                }
                self.phase = Phase::Zero;
                0
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn load(concurrency: f64) -> Averages {
        Averages { concurrency, rps: 0.0 }
    }

    /// Settings with the KPA knobs changed by `f`; otherwise Wisp's defaults (60 s stable
    /// window, activation 1, target 100 × 70% = 70).
    fn with(f: impl FnOnce(&mut Settings)) -> Settings {
        let mut s = Settings::default();
        f(&mut s);
        s
    }

    /// A revision on a simulated clock: 1 s buckets, a decision every 2 s (Knative's timing),
    /// ready replicas following the decision at once.
    struct Sim {
        windows: Windows,
        decider: Decider,
        now: Duration,
        ready: u32,
        reachable: bool,
        tick: Duration,
        last: Decision,
    }

    impl Sim {
        fn new(settings: &Settings, config: DeciderConfig) -> Self {
            let decider = Decider::new(settings, config, Duration::ZERO, 0);
            Self {
                windows: Windows::new(secs(1), decider.stable_window()),
                decider,
                now: Duration::ZERO,
                ready: 0,
                reachable: true,
                tick: config.tick,
                last: Decision::default(),
            }
        }

        fn decide(&mut self) -> Decision {
            let input = Input {
                now: self.now,
                stable: self.windows.average(self.now, self.decider.stable_window()),
                panic: self.windows.average(self.now, self.decider.panic_window()),
                ready: self.ready,
                reachable: self.reachable,
            };
            self.last = self.decider.decide(&input);
            self.ready = self.last.desired;
            self.last
        }

        /// `seconds` buckets of constant load; the decisions made, with their times.
        fn run(&mut self, seconds: u64, concurrency: f64, rps: u64) -> Vec<(u64, Decision)> {
            let mut decisions = Vec::new();
            for _ in 0..seconds {
                self.windows.record(self.now, concurrency, rps);
                if self.now.as_nanos().is_multiple_of(self.tick.as_nanos()) {
                    decisions.push((self.now.as_secs(), self.decide()));
                }
                self.now += secs(1);
            }
            decisions
        }
    }

    #[test]
    fn windows_average_over_gaps_and_wraparound() {
        let mut w = Windows::new(secs(1), secs(10));
        assert_eq!(w.average(secs(5), secs(10)), Averages::default(), "nothing recorded");
        for t in 0..5 {
            w.record(secs(t), 10.0, 20);
        }
        // Five buckets observed: the average is over those, not diluted by time never measured.
        assert_eq!(w.average(secs(4), secs(10)), Averages { concurrency: 10.0, rps: 20.0 });
        // A gap (5..=7) counts as zero once observed.
        w.record(secs(8), 10.0, 20);
        let a = w.average(secs(8), secs(10));
        assert!(close(a.concurrency, 60.0 / 9.0) && close(a.rps, 120.0 / 9.0), "{a:?}");
        assert!(close(w.average(secs(8), secs(3)).concurrency, 10.0 / 3.0), "buckets 6, 7, 8");
        // Mid-bucket `now` is the same bucket.
        assert_eq!(w.average(Duration::from_millis(8_999), secs(3)), w.average(secs(8), secs(3)));

        // Around the ring more than once: slots of earlier laps never leak into averages.
        for t in 9..25 {
            w.record(secs(t), t as f64, 0);
        }
        assert_eq!(w.average(secs(24), secs(10)).concurrency, 19.5, "mean of 15..=24");
        assert_eq!(w.average(secs(24), secs(100)), w.average(secs(24), secs(10)), "capped at the stable window");
        // A trailing gap counts as zero too: buckets 18..=27, of which 18..=24 have data.
        assert!(close(w.average(secs(27), secs(10)).concurrency, (18..=24).sum::<u64>() as f64 / 10.0));
        assert_eq!(w.average(secs(34), secs(10)), Averages::default());

        // After a whole window without records the next one starts a new run: a first request
        // after idling is not averaged with the idle window it was never measured in.
        w.record(secs(40), 3.0, 0);
        assert_eq!(w.average(secs(40), secs(10)).concurrency, 3.0);
        assert_eq!(w.average(secs(41), secs(10)).concurrency, 1.5);

        // Records older than the window are ignored.
        w.record(secs(20), 1000.0, 0);
        assert_eq!(w.average(secs(41), secs(10)).concurrency, 1.5);
    }

    #[test]
    fn windows_requests_per_second_use_the_bucket_length() {
        let mut w = Windows::new(secs(2), secs(60));
        w.record(secs(2), 0.0, 1400);
        w.record(secs(4), 0.0, 1400);
        assert_eq!(w.average(secs(4), secs(6)).rps, 700.0);
        assert_eq!(w.average(secs(5), secs(1)).rps, 700.0, "one bucket at least");
    }

    #[test]
    fn a_second_record_in_one_bucket_averages_its_concurrency() {
        // A late tick then an early one can land twice in a bucket: one source, not two.
        let mut w = Windows::new(secs(1), secs(10));
        w.record(Duration::from_millis(1_000), 4.0, 3);
        w.record(Duration::from_millis(1_900), 8.0, 2);
        w.record(secs(2), 1.0, 1);
        assert_eq!(w.average(secs(1), secs(1)), Averages { concurrency: 6.0, rps: 5.0 });
        assert_eq!(w.average(secs(2), secs(10)), Averages { concurrency: 3.5, rps: 3.0 });
    }

    #[test]
    fn windows_any_traffic_counts_only_non_zero_records() {
        let mut w = Windows::new(secs(1), secs(10));
        for t in 0..6 {
            w.record(secs(t), 0.0, 0);
        }
        assert!(!w.any_traffic(secs(5), secs(10)));
        w.record(secs(6), 0.0, 1);
        assert!(w.any_traffic(secs(6), secs(10)));
        assert!(w.any_traffic(secs(15), secs(10)), "bucket 6 is in (5, 15]");
        assert!(!w.any_traffic(secs(16), secs(10)));
        assert!(w.any_traffic(secs(100), secs(100)), "exact beyond the ring");
    }

    #[test]
    fn long_windows_use_coarse_slots_without_dropping_traffic() {
        // Two hours of 1 s buckets: 60 s slots, memory bounded.
        let mut w = Windows::new(secs(1), secs(7200));
        for t in 0..7200 {
            w.record(secs(t), 1.0, 1);
        }
        assert!(w.slots.len() as u64 <= MAX_SLOTS + 1, "{} slots", w.slots.len());
        assert_eq!(w.average(secs(7199), secs(7200)), Averages { concurrency: 1.0, rps: 1.0 });
        assert_eq!(w.average(secs(7199), secs(10)), Averages { concurrency: 1.0, rps: 1.0 });
        let mut w = Windows::new(secs(1), secs(7200));
        let slot = w.per_slot;
        w.record(secs(0), 5.0, 1);
        for t in 1..=7199 {
            w.record(secs(t), 0.0, 0);
        }
        // Rounded out to whole slots, a window never reads 0 while traffic is inside it; it
        // reads 0 once the traffic's whole slot has left the window.
        assert!(w.average(secs(7199), secs(7200)).concurrency > 0.0);
        for t in 7200..=7200 + slot {
            w.record(secs(t), 0.0, 0);
        }
        assert_eq!(w.average(secs(7200 + slot), secs(7200)), Averages::default());
    }

    #[test]
    fn panic_window_is_a_share_of_the_stable_window_at_least_a_tick() {
        let config = DeciderConfig::default();
        assert_eq!(Decider::new(&Settings::default(), config, Duration::ZERO, 0).panic_window(), secs(6));
        let short = with(|s| s.idle_timeout_ms = 10_000);
        assert_eq!(Decider::new(&short, config, Duration::ZERO, 0).panic_window(), secs(2), "one tick");
        let odd = with(|s| {
            s.idle_timeout_ms = 65_000;
            s.scaling.panic_window_percentage = 25.0;
        });
        assert_eq!(Decider::new(&odd, config, Duration::ZERO, 0).panic_window(), Duration::from_millis(16_250));
    }

    #[test]
    fn a_tenfold_step_panics_within_the_panic_window_and_jumps() {
        let settings = Settings::default();
        let mut sim = Sim::new(&settings, DeciderConfig::default());
        sim.run(120, 100.0, 0);
        assert_eq!((sim.ready, sim.last.panicking), (2, false), "100 in flight at target 70: 2 replicas");

        let step = sim.now.as_secs();
        let panic_window = sim.decider.panic_window().as_secs();
        let after = sim.run(panic_window + 1, 1000.0, 0);
        let (entered, _) = after.iter().find(|(_, d)| d.panicking).expect("panic mode");
        assert!(*entered < step + panic_window, "panicked at {entered}, step at {step}");
        // Once the panic window holds only the new load, its value decides: 1000 / 70 → 15,
        // while the stable average alone (about 205) would want 3.
        let (_, last) = after.last().unwrap();
        assert_eq!(last.desired, 15);
        assert!(last.panicking && last.stable_value < 250.0, "{last:?}");
    }

    #[test]
    fn panic_holds_the_peak_then_exits_after_a_calm_stable_window_and_scales_down_gradually() {
        let settings = Settings::default();
        let mut sim = Sim::new(&settings, DeciderConfig::default());
        sim.run(120, 100.0, 0);
        let step = sim.now.as_secs();
        let mut decisions = sim.run(20, 1000.0, 0);
        decisions.extend(sim.run(160, 100.0, 0));
        let stable = sim.decider.stable_window().as_secs();

        let mut peak = 0;
        for &(t, d) in &decisions {
            if t <= step + stable {
                assert!(d.panicking, "still panicking at {t}: {d:?}");
            }
            if d.panicking {
                assert!(d.desired >= peak, "no scale-down while panicking: {} after {peak} at {t}", d.desired);
                peak = d.desired;
            }
        }
        assert_eq!(peak, 15);
        let exit = decisions.iter().find(|(t, d)| *t > step && !d.panicking).map(|(t, _)| *t).expect("panic ends");
        assert!(exit <= step + stable + 6, "panic lasted until {exit} after a step at {step}");

        // After panic: down at most by half per decision (max-scale-down-rate 2), to the
        // stable need of 100 / 70 → 2.
        let mut ready = peak;
        for &(t, d) in decisions.iter().filter(|(t, _)| *t >= exit) {
            assert!(d.desired >= ready / 2, "{} → {} at {t}", ready, d.desired);
            ready = d.desired;
        }
        assert_eq!(sim.ready, 2);
        let first_after = decisions.iter().find(|(t, _)| *t == exit).unwrap().1;
        assert_eq!(first_after.desired, 7, "15 halves to 7 though the stable average wants 5");
    }

    #[test]
    fn scale_up_and_down_are_rate_limited_per_decision() {
        let settings = Settings::default();
        let input = |now, c, ready| Input { now: secs(now), stable: load(c), panic: load(c), ready, reachable: true };
        let mut d = Decider::new(&settings, DeciderConfig::default(), Duration::ZERO, 1);
        // Demand for one replica, 20 ready: halve per decision.
        let downs: Vec<u32> =
            [(2, 20), (4, 10), (6, 5), (8, 2)].map(|(t, r)| d.decide(&input(t, 70.0, r)).desired).into();
        assert_eq!(downs, [10, 5, 2, 1]);

        let quarter = DeciderConfig { max_scale_down_rate: 4.0, ..DeciderConfig::default() };
        let mut d = Decider::new(&settings, quarter, Duration::ZERO, 1);
        assert_eq!(d.decide(&input(2, 70.0, 20)).desired, 5);

        // Unrouted: nothing to protect, straight to the need.
        let mut d = Decider::new(&settings, DeciderConfig::default(), Duration::ZERO, 1);
        assert_eq!(d.decide(&Input { reachable: false, ..input(2, 70.0, 20) }).desired, 1);

        // Up: at most max-scale-up-rate × ready, in panic too.
        let doubling = DeciderConfig { max_scale_up_rate: 2.0, ..DeciderConfig::default() };
        let mut d = Decider::new(&settings, doubling, Duration::ZERO, 1);
        let up = d.decide(&input(2, 70.0 * 20.0, 3));
        assert_eq!((up.desired, up.panicking), (6, true));
    }

    /// Ten seconds of one request in flight, then nothing for `idle` seconds.
    fn busy_then_idle(settings: &Settings, config: DeciderConfig, reachable: bool, idle: u64) -> Vec<(u64, Decision)> {
        let mut sim = Sim::new(settings, config);
        sim.reachable = reachable;
        let mut decisions = sim.run(10, 1.0, 1);
        decisions.extend(sim.run(idle, 0.0, 0));
        decisions
    }

    fn first_zero(decisions: &[(u64, Decision)]) -> Option<u64> {
        let at = decisions.iter().find(|(_, d)| d.desired == 0).map(|(t, _)| *t)?;
        assert!(decisions.iter().filter(|(t, _)| *t >= at).all(|(_, d)| d.desired == 0), "stays at zero");
        Some(at)
    }

    #[test]
    fn to_zero_only_after_a_quiet_stable_window_then_grace_or_retention() {
        // The last request is in bucket 9; the stable average (buckets t-59..=t) reads 0 from
        // t = 70, the first decision with no request in the whole stable window.
        let quiet = 70;
        let decisions = busy_then_idle(&Settings::default(), DeciderConfig::default(), true, 200);
        assert_eq!(first_zero(&decisions), Some(quiet), "grace 0, retention 0: at once");
        assert!(decisions.iter().filter(|(t, _)| *t < quiet).all(|(_, d)| d.desired == 1));

        let retained = with(|s| s.scaling.scale_to_zero_retention_ms = 30_000);
        let decisions = busy_then_idle(&retained, DeciderConfig::default(), true, 200);
        assert_eq!(first_zero(&decisions), Some(quiet + 30), "the last replica is retained 30 s");
        assert!(decisions.iter().filter(|(t, _)| *t < quiet + 30).all(|(_, d)| d.desired == 1));

        let grace = DeciderConfig { scale_to_zero_grace: secs(20), ..DeciderConfig::default() };
        assert_eq!(first_zero(&busy_then_idle(&Settings::default(), grace, true, 200)), Some(quiet + 20));
        assert_eq!(first_zero(&busy_then_idle(&retained, grace, true, 200)), Some(quiet + 30), "the longer wins");
        // Retention protects routed revisions only.
        assert_eq!(first_zero(&busy_then_idle(&retained, DeciderConfig::default(), false, 200)), Some(quiet));

        let never = DeciderConfig { enable_scale_to_zero: false, ..DeciderConfig::default() };
        let decisions = busy_then_idle(&Settings::default(), never, true, 300);
        assert!(decisions.iter().all(|(_, d)| d.desired == 1), "floor 1 without scale to zero");
    }

    #[test]
    fn a_revision_is_active_a_stable_window_before_it_may_go_idle() {
        // Restarted with one ready replica and no metric history: the stable average reads 0
        // at once, but the replica stays a stable window.
        let settings = Settings::default();
        let mut d = Decider::new(&settings, DeciderConfig::default(), secs(1000), 1);
        let idle = |now| Input { now: secs(now), stable: load(0.0), panic: load(0.0), ready: 1, reachable: true };
        for t in (1000..1060).step_by(2) {
            assert_eq!(d.decide(&idle(t)).desired, 1, "at {t}");
        }
        assert_eq!(d.decide(&idle(1060)).desired, 0);

        // Brand new with initial-scale 0: nothing to wait for.
        let lazy = with(|s| s.scaling.initial_scale = 0);
        let mut d = Decider::new(&lazy, DeciderConfig::default(), Duration::ZERO, 0);
        assert_eq!(d.decide(&Input { ready: 0, ..idle(0) }).desired, 0);
        let never = DeciderConfig { enable_scale_to_zero: false, ..DeciderConfig::default() };
        let mut d = Decider::new(&lazy, never, Duration::ZERO, 0);
        assert_eq!(d.decide(&Input { ready: 0, ..idle(0) }).desired, 1);

        // Brand new with initial-scale 1, scaled up by the caller before the first decision:
        // active from then, not dropped at the first tick.
        let mut d = Decider::new(&settings, DeciderConfig::default(), Duration::ZERO, 0);
        assert_eq!(d.decide(&idle(0)).desired, 1);
        assert_eq!(d.decide(&idle(58)).desired, 1);
        assert_eq!(d.decide(&idle(60)).desired, 0);
    }

    #[test]
    fn a_restart_with_several_replicas_starts_in_panic() {
        let settings = Settings::default();
        let mut d = Decider::new(&settings, DeciderConfig::default(), secs(1000), 5);
        let idle = |now, ready| Input { now: secs(now), stable: load(0.0), panic: load(0.0), ready, reachable: true };
        for t in (1000..=1060).step_by(2) {
            let decision = d.decide(&idle(t, 5));
            assert_eq!((decision.desired, decision.panicking), (5, true), "held at {t}");
        }
        let calm = d.decide(&idle(1062, 5));
        assert_eq!((calm.desired, calm.panicking), (2, false), "then down at the usual rate");

        let d = Decider::new(&settings, DeciderConfig::default(), secs(1000), 1);
        assert!(d.panic_time.is_none(), "one replica: nothing to protect");
    }

    #[test]
    fn min_and_max_scale_bound_the_decision() {
        let min3 = with(|s| s.scaling.min_scale = 3);
        let decisions = busy_then_idle(&min3, DeciderConfig::default(), true, 300);
        assert!(decisions.iter().all(|(_, d)| d.desired == 3), "min-scale while routed");
        assert_eq!(first_zero(&busy_then_idle(&min3, DeciderConfig::default(), false, 200)), Some(70), "unrouted");

        let max4 = with(|s| s.scaling.max_scale = 4);
        let mut sim = Sim::new(&max4, DeciderConfig::default());
        let decisions = sim.run(60, 1000.0, 0);
        assert!(decisions.iter().all(|(_, d)| d.desired <= 4));
        assert_eq!(sim.ready, 4);
    }

    #[test]
    fn initial_scale_is_the_floor_until_reached_once() {
        let settings = with(|s| s.scaling.initial_scale = 5);
        let idle =
            |now, ready, reachable| Input { now: secs(now), stable: load(0.0), panic: load(0.0), ready, reachable };
        let mut d = Decider::new(&settings, DeciderConfig::default(), Duration::ZERO, 0);
        assert_eq!(d.decide(&idle(0, 0, true)).desired, 5);
        assert_eq!(d.decide(&idle(2, 2, true)).desired, 5, "not reached yet");
        assert_eq!(d.decide(&idle(4, 5, true)).desired, 2, "reached: now the usual rate down");
        assert_eq!(d.decide(&idle(6, 2, true)).desired, 1);

        // Unrouted: initial-scale is ignored, the revision may stay at zero.
        let mut d = Decider::new(&settings, DeciderConfig::default(), Duration::ZERO, 0);
        assert_eq!(d.decide(&idle(0, 0, false)).desired, 0);
    }

    #[test]
    fn activation_scale_raises_any_demand() {
        let warm3 = with(|s| s.min_warm = 3);
        let at = |c| Input { now: secs(10), stable: load(c), panic: load(c), ready: 3, reachable: true };
        let mut d = Decider::new(&warm3, DeciderConfig::default(), Duration::ZERO, 0);
        assert_eq!(d.decide(&at(1.0)).desired, 3);
        assert_eq!(d.decide(&at(80.0)).desired, 3, "wants 2");
        assert_eq!(d.decide(&at(300.0)).desired, 5, "wants more than the activation scale");
    }

    #[test]
    fn a_first_request_to_a_revision_at_zero_starts_replicas_at_once() {
        for min_warm in [1, 2] {
            let settings = with(|s| s.min_warm = min_warm);
            let mut sim = Sim::new(&settings, DeciderConfig::default());
            sim.run(10, 1.0, 1);
            sim.run(200, 0.0, 0);
            assert_eq!(sim.ready, 0);
            // Mid-tick, a request arrives: recorded and decided at once.
            sim.now += Duration::from_millis(300);
            sim.windows.record(sim.now, 1.0, 1);
            let d = sim.decide();
            assert_eq!((d.desired, d.panicking), (min_warm, false));

            // The caller may instead raise only the panic average (the stable one reads 0).
            let mut d = Decider::new(&settings, DeciderConfig::default(), Duration::ZERO, 0);
            let quiet = Input { now: Duration::ZERO, stable: load(0.0), panic: load(0.0), ready: 0, reachable: true };
            assert_eq!(d.decide(&quiet).desired, 1, "initial-scale");
            assert_eq!(d.decide(&Input { now: secs(100), ready: 1, ..quiet }).desired, 0);
            let poke = Input { now: Duration::from_millis(100_300), panic: load(1.0), ..quiet };
            assert_eq!(d.decide(&poke).desired, min_warm);
        }
    }

    #[test]
    fn rps_metric_scales_on_requests_per_second() {
        // Target 200 × 70% = 140 rps per replica; containerConcurrency does not cap an rps target.
        for cc in [0, 10] {
            let settings = with(|s| {
                s.scaling.metric = Metric::Rps;
                s.container_concurrency = cc;
            });
            let mut sim = Sim::new(&settings, DeciderConfig::default());
            sim.run(120, 1.0, 700);
            assert_eq!(sim.ready, 5, "cc {cc}");
            assert_eq!((sim.last.stable_value, sim.last.panic_value), (700.0, 700.0));
        }
        // The concurrency metric with containerConcurrency 10: target 7.
        let settings = with(|s| s.container_concurrency = 10);
        let mut sim = Sim::new(&settings, DeciderConfig::default());
        sim.run(120, 35.0, 700);
        assert_eq!((sim.ready, sim.last.stable_value), (5, 35.0));
    }

    #[test]
    fn scale_down_delay_holds_the_highest_recent_decision() {
        let settings = with(|s| s.scaling.scale_down_delay_ms = 10_000);
        let at = |now, c| Input { now: secs(now), stable: load(c), panic: load(c), ready: 10, reachable: true };
        let mut d = Decider::new(&settings, DeciderConfig::default(), Duration::ZERO, 1);
        assert_eq!(d.decide(&at(0, 700.0)).desired, 10);
        assert_eq!(d.decide(&at(2, 70.0)).desired, 10, "wants 5: delayed");
        assert_eq!(d.decide(&at(4, 560.0)).desired, 10, "wants 8");
        assert_eq!(d.decide(&at(8, 70.0)).desired, 10);
        assert_eq!(d.decide(&at(10, 70.0)).desired, 8, "10 is 10 s old; 8 is the highest since");
        assert_eq!(d.decide(&at(14, 70.0)).desired, 5);

        // Unrouted revisions are not delayed.
        let mut d = Decider::new(&settings, DeciderConfig::default(), Duration::ZERO, 1);
        d.decide(&at(0, 700.0));
        assert_eq!(d.decide(&Input { reachable: false, ..at(2, 70.0) }).desired, 1);
    }

    #[test]
    fn excess_burst_capacity_follows_target_burst_capacity() {
        let ebc = |tbc: f64, ready, panic| {
            let settings = with(|s| s.scaling.target_burst_capacity = tbc);
            let mut d = Decider::new(&settings, DeciderConfig::default(), Duration::ZERO, 1);
            let input = Input { now: secs(2), stable: load(panic), panic: load(panic), ready, reachable: true };
            d.decide(&input).excess_burst_capacity
        };
        assert_eq!(ebc(211.0, 3, 50.0), 39.0, "3 × 100 − 211 − 50");
        assert_eq!(ebc(211.0, 1, 0.0), -111.0, "one replica cannot absorb the burst: activator stays");
        assert_eq!(ebc(0.0, 1, 50.0), 0.0);
        assert_eq!(ebc(-1.0, 10, 0.0), -1.0);
    }

    #[test]
    fn update_keeps_the_panic_state() {
        let mut d = Decider::new(&Settings::default(), DeciderConfig::default(), Duration::ZERO, 5);
        d.update(&with(|s| s.scaling.max_scale = 2));
        let idle = Input { now: secs(2), stable: load(0.0), panic: load(0.0), ready: 5, reachable: true };
        let decision = d.decide(&idle);
        assert_eq!((decision.desired, decision.panicking), (2, true));
        d.update(&with(|s| s.idle_timeout_ms = 10_000));
        assert_eq!(d.stable_window(), secs(10));
        assert!(!d.decide(&Input { now: secs(11), ..idle }).panicking, "the new stable window has passed");
    }
}

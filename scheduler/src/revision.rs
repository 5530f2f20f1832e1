//! A live revision: its workload, its activator, and its autoscaler state. Requests reach it
//! through [`crate::route::Route`]; the autoscaler ticks it and the activator pokes it.

use crate::activator::Activator;
use crate::kpa::{Averages, Decider, DeciderConfig, Decision, Input, Windows};
use crate::store::StoredRevision;
use bytes::Bytes;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use wisp_runtime::container::ReplicaSet;
use wisp_runtime::wasm::InstancePool;
use wisp_runtime::{Invoked, Workload, WorkloadStats};

/// A revision's workload, one variant per artifact kind, dispatched statically.
pub(crate) enum Live {
    Wasm(InstancePool),
    Container(ReplicaSet),
}

impl Workload for Live {
    async fn invoke<B>(&self, req: http::Request<B>) -> Invoked
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self {
            Live::Wasm(pool) => pool.invoke(req).await,
            Live::Container(set) => set.invoke(req).await,
        }
    }

    fn set_target(&self, target: usize) {
        match self {
            Live::Wasm(pool) => pool.set_target(target),
            Live::Container(set) => set.set_target(target),
        }
    }

    fn stats(&self) -> WorkloadStats {
        match self {
            Live::Wasm(pool) => pool.stats(),
            Live::Container(set) => set.stats(),
        }
    }
}

/// Time-weighted concurrency (in flight plus queued in the activator) and arrivals since the
/// last tick: what Knative's queue-proxy reports, measured in-process.
struct Meter {
    in_flight: u32,
    since: Instant,
    /// Request-seconds accumulated since the last tick.
    area: f64,
    requests: u64,
}

impl Meter {
    fn advance(&mut self, now: Instant) {
        self.area += self.in_flight as f64 * now.saturating_duration_since(self.since).as_secs_f64();
        self.since = now;
    }
}

/// What the autoscaler keeps per revision.
struct Scaler {
    windows: Windows,
    decider: Decider,
    last: Decision,
    /// The averages the last decision used.
    stable: Averages,
    panic: Averages,
    last_tick: Instant,
    /// Peak concurrency of each of the last ticks (a ring covering about a second): the pool
    /// keeps twice the recent peak ready, over a second rather than one 100 ms tick, which
    /// under bursty load would see too small a peak and leave requests to instantiate.
    peaks: Vec<usize>,
    next_peak: usize,
}

impl Scaler {
    fn recent_peak(&self) -> usize {
        self.peaks.iter().copied().max().unwrap_or(0)
    }
}

/// What `wisp describe` and the metrics show of a revision's scaling.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ScalingStatus {
    pub desired_replicas: u32,
    pub ready_replicas: u32,
    pub panic: bool,
    pub stable_concurrency: f64,
    pub panic_concurrency: f64,
    pub stable_rps: f64,
    pub panic_rps: f64,
    pub activator_queue: usize,
    pub in_flight: usize,
    pub ready_instances: usize,
}

pub(crate) struct Revision {
    pub(crate) stored: StoredRevision,
    pub(crate) live: Live,
    pub(crate) activator: Activator,
    /// Replicas granted: the activator's capacity is this times `containerConcurrency`.
    replicas: AtomicU32,
    meter: Mutex<Meter>,
    scaler: Mutex<Scaler>,
    /// The scheduler's clock origin, so the decider sees durations.
    epoch: Instant,
    /// The autoscaler's tick, one metric bucket.
    tick: Duration,
    max_ready: usize,
}

/// A request counted in the revision's concurrency until dropped.
pub(crate) struct Counted<'a>(&'a Revision);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        let mut meter = self.0.meter.lock().unwrap();
        meter.advance(Instant::now());
        meter.in_flight -= 1;
    }
}

impl Revision {
    pub(crate) fn new(
        stored: StoredRevision,
        live: Live,
        config: DeciderConfig,
        epoch: Instant,
        queue_limit: usize,
        max_ready: usize,
    ) -> Self {
        let now = Instant::now();
        let mut settings = stored.settings.clone();
        // `wisp deploy --min-warm 0` (activation scale 0, which manifests cannot express) has
        // always meant nothing warm until a request arrives: the revision starts at zero too.
        if settings.min_warm == 0 {
            settings.scaling.initial_scale = 0;
        }
        let tick = config.tick;
        let decider = Decider::new(&settings, config, now - epoch, 0);
        // Knative's 1 s buckets (60 per default window), finer for short windows, never finer
        // than the tick: a ring of about 60 slots per busy revision. Ticks within a bucket
        // average into it, so a step still shows in the newest bucket at the next tick.
        let bucket = (decider.stable_window() / 60).clamp(tick, Duration::from_secs(1).max(tick));
        let windows = Windows::new(bucket, decider.stable_window());
        let initial = settings.scaling.initial_scale;
        let cc = settings.container_concurrency;
        let revision = Self {
            activator: Activator::new((cc > 0).then_some(0), queue_limit),
            replicas: AtomicU32::new(0),
            meter: Mutex::new(Meter { in_flight: 0, since: now, area: 0.0, requests: 0 }),
            scaler: Mutex::new(Scaler {
                windows,
                decider,
                last: Decision { desired: initial, ..Decision::default() },
                stable: Averages::default(),
                panic: Averages::default(),
                last_tick: now,
                peaks: vec![0; (Duration::from_secs(1).as_nanos() / tick.as_nanos()).clamp(1, 100) as usize],
                next_peak: 0,
            }),
            epoch,
            tick,
            max_ready,
            stored,
            live,
        };
        revision.scale_to(initial, 0);
        revision
    }

    /// Counts a request from arrival (before the activator) to its end.
    pub(crate) fn enter(&self) -> Counted<'_> {
        let mut meter = self.meter.lock().unwrap();
        meter.advance(Instant::now());
        meter.in_flight += 1;
        meter.requests += 1;
        Counted(self)
    }

    /// Unloaded (nothing routes to it): idle instances go now, in-flight requests finish.
    pub(crate) fn release(&self) {
        self.live.set_target(0);
    }

    pub(crate) fn replicas(&self) -> u32 {
        self.replicas.load(Ordering::Relaxed)
    }

    /// Sets the replicas: the activator's capacity and the pool's ready instances. Fewer
    /// replicas never cut a request off: in-flight ones keep their slots and instances.
    fn scale_to(&self, replicas: u32, recent_peak: usize) {
        self.replicas.store(replicas, Ordering::Relaxed);
        let cc = self.stored.settings.container_concurrency as usize;
        if cc > 0 {
            self.activator.set_capacity(Some(replicas as usize * cc));
        }
        let ready = if replicas == 0 {
            0
        } else if let Live::Container(_) = self.live {
            // A container replica is a process serving `containerConcurrency` requests: the
            // set runs exactly the replicas decided.
            (replicas as usize).min(self.max_ready)
        } else {
            // Headroom of twice the recent peak absorbs the refill lag: with exactly the peak
            // ready, the next request often arrived before its replacement was instantiated.
            (replicas as usize * cc.max(1)).max(2 * recent_peak).min(self.max_ready)
        };
        self.live.set_target(ready);
    }

    /// One autoscaler tick: closes the metric bucket and decides.
    pub(crate) fn tick(&self, reachable: bool) {
        let now = Instant::now();
        let (concurrency, requests) = {
            let mut meter = self.meter.lock().unwrap();
            meter.advance(now);
            let taken = (meter.area, meter.requests);
            meter.area = 0.0;
            meter.requests = 0;
            taken
        };
        let mut scaler = self.scaler.lock().unwrap();
        let elapsed = now.saturating_duration_since(scaler.last_tick).as_secs_f64();
        scaler.last_tick = now;
        if requests == 0 && concurrency == 0.0 && self.replicas() == 0 {
            // At zero and idle: nothing to decide (a request pokes) and nothing worth keeping,
            // so ten thousand idle functions cost the tick, and memory, next to nothing.
            scaler.windows.reset();
            return;
        }
        let average = if elapsed > 0.0 { concurrency / elapsed } else { 0.0 };
        scaler.windows.record(now - self.epoch, average, requests);
        let desired = self.decide(&mut scaler, now, reachable, None);
        // Every tick, changed or not: the pool's ready target follows the recent peak too, and
        // setting it opens the pool's next peak window.
        let slot = scaler.next_peak % scaler.peaks.len();
        scaler.peaks[slot] = self.live.stats().peak_in_flight;
        scaler.next_peak += 1;
        self.scale_to(desired, scaler.recent_peak());
    }

    /// Decides at once, outside the tick: the first request to a revision at zero, or one that
    /// had to queue. `demand` is the concurrency seen now; the panic average is raised to it.
    pub(crate) fn poke(&self, reachable: bool) {
        let demand = self.meter.lock().unwrap().in_flight as f64;
        // Another poke or tick deciding now will see this demand too.
        let Ok(mut scaler) = self.scaler.try_lock() else { return };
        let desired = self.decide(&mut scaler, Instant::now(), reachable, Some(demand));
        if desired != self.replicas() {
            self.scale_to(desired, scaler.recent_peak());
        }
    }

    /// Runs the decider on the windows (the panic side raised to `demand`); returns desired.
    fn decide(&self, scaler: &mut Scaler, now: Instant, reachable: bool, demand: Option<f64>) -> u32 {
        let at = now - self.epoch;
        let stable = scaler.windows.average(at, scaler.decider.stable_window());
        let mut panic = scaler.windows.average(at, scaler.decider.panic_window());
        // The newest bucket alone: a step in load shows at the next tick, not after the panic
        // window has averaged it in (Wasm replicas are cheap: reacting early costs little).
        let newest = scaler.windows.average(at, self.tick);
        panic = max_averages(panic, newest);
        if let Some(demand) = demand {
            panic.concurrency = panic.concurrency.max(demand);
            panic.rps = panic.rps.max(demand);
        }
        let input = Input { now: at, stable, panic, ready: self.replicas(), reachable };
        let decision = scaler.decider.decide(&input);
        scaler.last = decision;
        scaler.stable = stable;
        scaler.panic = panic;
        decision.desired
    }

    /// The scaling state for `describe` and metrics.
    pub(crate) fn status(&self) -> ScalingStatus {
        let (last, stable, panic) = {
            let scaler = self.scaler.lock().unwrap();
            (scaler.last, scaler.stable, scaler.panic)
        };
        let stats = self.live.stats();
        ScalingStatus {
            desired_replicas: last.desired,
            ready_replicas: self.replicas(),
            panic: last.panicking,
            stable_concurrency: stable.concurrency,
            panic_concurrency: panic.concurrency,
            stable_rps: stable.rps,
            panic_rps: panic.rps,
            activator_queue: self.activator.queued(),
            in_flight: stats.in_flight,
            ready_instances: stats.ready,
        }
    }
}

fn max_averages(a: Averages, b: Averages) -> Averages {
    Averages { concurrency: a.concurrency.max(b.concurrency), rps: a.rps.max(b.rps) }
}

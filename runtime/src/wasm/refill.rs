//! The refill threads: instances are made ahead of their requests, and finished stores are
//! reset, on a few dedicated threads at a lower CPU priority than the request path. That work
//! is CPU-bound and takes milliseconds for large components (a Python interpreter's heap), so
//! on the async workers it would delay other requests; as jobs on a shared queue it spreads
//! over the idle cores, and when every core is busy the request path wins.

use super::pool::PoolInner;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Nice value of the refill threads: below the request path, so a saturated node serves
/// requests first (they then instantiate on demand) instead of filling pools nobody waits on.
const NICE: libc::c_int = 5;

/// What a refill thread does for one pool.
pub(crate) enum Job {
    /// Drop the pool's finished stores (returning their slots) and make instances until the
    /// pool has its goal.
    Fill(Weak<PoolInner>),
    /// Drop the pool's finished stores.
    Reset(Weak<PoolInner>),
}

/// The queue feeding the refill threads. Cheap to clone; the threads exit when the last
/// clone is gone.
#[derive(Clone)]
pub(crate) struct Refiller {
    jobs: crossbeam_channel::Sender<Job>,
    threads: usize,
    /// Finished stores handed to the threads and not yet dropped, across all pools.
    resets: Arc<AtomicUsize>,
    max_resets: usize,
}

impl Refiller {
    /// Starts `threads` refill threads, which take at most `max_resets` finished stores at a
    /// time (their instance slots are not free until reset).
    pub(crate) fn start(threads: usize, max_resets: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new().name(format!("wisp-refill-{i}")).spawn(move || {
                // SAFETY: setpriority with PRIO_PROCESS and who = 0 changes only the calling
                // thread on Linux (threads have their own nice value); failure leaves it at 0.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                let Ok(runtime) = runtime else { return };
                for job in queue {
                    match job {
                        Job::Fill(pool) => {
                            if let Some(pool) = pool.upgrade() {
                                runtime.block_on(pool.fill());
                            }
                        }
                        Job::Reset(pool) => {
                            if let Some(pool) = pool.upgrade() {
                                pool.drop_finished();
                            }
                        }
                    }
                }
            })?;
        }
        Ok(Self { jobs, threads, resets: Arc::default(), max_resets: max_resets.max(1) })
    }

    /// Claims a place for one more finished store; false when the threads are that far behind
    /// and the caller must reset it itself (the back-pressure that bounds the backlog).
    pub(crate) fn defer_reset(&self) -> bool {
        let max = self.max_resets;
        self.resets.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// A deferred store was dropped.
    pub(crate) fn reset_done(&self) {
        self.resets.fetch_sub(1, Ordering::Relaxed);
    }

    /// How many refill threads there are.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    pub(crate) fn send(&self, job: Job) {
        // The threads outlive every pool (they end with the last Refiller), so this succeeds.
        let _ = self.jobs.send(job);
    }
}

/// How far ahead of its requests a pool stays. Making a replacement takes `made` (an average
/// over recent instantiations) while requests take an instance every `gap` (likewise), so
/// `made / gap` more are used up before it is ready: a pool of a slow-to-instantiate component
/// keeps that many spare beyond its target, or sequential requests find it empty.
pub(crate) struct Lead {
    epoch: Instant,
    last_take_ns: AtomicU64,
    gap_ns: AtomicU64,
    made_ns: AtomicU64,
}

impl Lead {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_take_ns: AtomicU64::new(0),
            gap_ns: AtomicU64::new(0),
            made_ns: AtomicU64::new(0),
        }
    }

    /// A request took an instance (or found none).
    pub(crate) fn taken(&self) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let last = self.last_take_ns.swap(now, Ordering::Relaxed);
        if last != 0 {
            average_in(&self.gap_ns, now.saturating_sub(last));
        }
    }

    /// An instantiation took `took`.
    pub(crate) fn made(&self, took: Duration) {
        average_in(&self.made_ns, took.as_nanos() as u64);
    }

    /// Recent average instantiation time.
    pub(crate) fn instantiation(&self) -> Duration {
        Duration::from_nanos(self.made_ns.load(Ordering::Relaxed))
    }

    /// Spare instances to keep beyond `target`: at most `target` more, none for a pool at zero,
    /// and none while an instantiation takes under a quarter of the gap between requests (the
    /// batch refill keeps up with that alone).
    pub(crate) fn spare(&self, target: usize) -> usize {
        let gap = self.gap_ns.load(Ordering::Relaxed);
        let made = self.made_ns.load(Ordering::Relaxed);
        if target == 0 || gap == 0 || made.saturating_mul(4) < gap {
            return 0;
        }
        (made.div_ceil(gap) as usize).min(target)
    }
}

/// Folds a sample into an exponentially weighted average (weight 1/8); the first sample sets
/// it. Racy updates lose a sample at worst.
fn average_in(cell: &AtomicU64, sample: u64) {
    let old = cell.load(Ordering::Relaxed);
    let new = if old == 0 { sample } else { old - old / 8 + sample / 8 };
    cell.store(new.max(1), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_covers_what_is_used_up_while_one_is_made_capped_at_the_target() {
        let lead = Lead::new();
        assert_eq!(lead.spare(2), 0, "no history, no spare");
        lead.made(Duration::from_millis(3));
        lead.gap_ns.store(1_000_000, Ordering::Relaxed);
        assert_eq!(lead.spare(0), 0, "a pool at zero stays at zero");
        assert_eq!(lead.spare(2), 2, "3 ms to make, one taken per ms: capped at the target");
        assert_eq!(lead.spare(8), 3);
        lead.gap_ns.store(10_000_000, Ordering::Relaxed);
        assert_eq!(lead.spare(8), 1, "3 ms to make, one taken per 10 ms: one in reserve");
        lead.gap_ns.store(20_000_000, Ordering::Relaxed);
        assert_eq!(lead.spare(8), 0, "requests 20 ms apart: the batch refill keeps up");
    }

    #[test]
    fn deferred_resets_are_bounded_and_freed_as_they_are_done() {
        let refiller = Refiller::start(1, 2).unwrap();
        assert!(refiller.defer_reset() && refiller.defer_reset());
        assert!(!refiller.defer_reset(), "two behind: the caller resets the third itself");
        refiller.reset_done();
        assert!(refiller.defer_reset());
    }

    #[test]
    fn the_average_starts_at_the_first_sample_and_moves_an_eighth_per_sample() {
        let cell = AtomicU64::new(0);
        average_in(&cell, 800);
        assert_eq!(cell.load(Ordering::Relaxed), 800);
        average_in(&cell, 1600);
        assert_eq!(cell.load(Ordering::Relaxed), 900);
    }
}

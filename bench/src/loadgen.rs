//! The load generator: closed loop (N connections, each sends its next request when the
//! previous answer is read) and open loop (requests scheduled at a fixed rate; latency counts
//! from the *intended* send time, so a stalled server cannot hide queueing delay by slowing
//! the sender down: no coordinated omission).
//!
//! It runs on one current-thread tokio runtime (plus a pacer thread in open loop) and reports
//! its own CPU use: above `SATURATED_PCT` of a core it may be the bottleneck.

use crate::client::Conn;
use crate::sys;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Above this share of one core the (single-threaded) load generator is considered saturated.
pub const SATURATED_PCT: f64 = 90.0;

pub fn new_hist() -> Histogram<u64> {
    // Nanoseconds, 1 ns .. 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram bounds")
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    pub fn from_hist(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            count: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    /// The server process, for its CPU use.
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Closed,
    /// Requests per second, spread evenly.
    Open {
        rate: f64,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub connections: usize,
    /// Sent but not recorded (connections warm up, pools refill).
    pub warmup: Duration,
    pub duration: Duration,
    pub mode: Mode,
}

/// One run against one target. Raw histogram kept for merging rounds.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub hist: Histogram<u64>,
    /// Requests measured (sent after the warm-up).
    pub requests: u64,
    /// Requests answered, warm-up included.
    pub answered: u64,
    pub errors: u64,
    pub non_2xx: u64,
    pub first_error: Option<String>,
    pub measured_s: f64,
    /// Load generator CPU over the measured window, % of one core.
    pub bench_cpu_pct: f64,
    /// Server process CPU over the measured window, % of one core (all its threads).
    pub server_cpu_pct: Option<f64>,
    /// Everything else on the machine over the measured window, % of one core (noise).
    pub other_cpu_pct: Option<f64>,
    /// Server CPU by thread name over the measured window, % of one core.
    pub server_threads_pct: BTreeMap<String, f64>,
    /// Open loop: requests scheduled in the measured window but never sent before it ended
    /// (every connection was busy). Nonzero means the rate was above capacity.
    pub unsent: u64,
    /// Open loop: how late the pacer released requests (its own scheduling noise, included in
    /// the latencies).
    pub pacer_lag: Option<Histogram<u64>>,
}

impl RunResult {
    pub fn rps(&self) -> f64 {
        if self.measured_s > 0.0 { self.requests as f64 / self.measured_s } else { 0.0 }
    }
}

struct WorkerOut {
    hist: Histogram<u64>,
    requests: u64,
    answered: u64,
    errors: u64,
    non_2xx: u64,
    first_error: Option<String>,
}

impl WorkerOut {
    fn new() -> Self {
        Self { hist: new_hist(), requests: 0, answered: 0, errors: 0, non_2xx: 0, first_error: None }
    }

    /// Sends one request and records it, timed from `since`, if `since` is in the measured
    /// window. After an error, reconnects; returns false if that failed too.
    async fn send(
        &mut self,
        conn: &mut Conn,
        addr: SocketAddr,
        path: &str,
        since: Instant,
        measure_start: Instant,
    ) -> bool {
        match conn.get(path).await {
            Ok(status) => {
                self.answered += 1;
                if since >= measure_start {
                    self.hist.saturating_record(since.elapsed().as_nanos() as u64);
                    self.requests += 1;
                    if !status.is_success() {
                        self.non_2xx += 1;
                    }
                }
                true
            }
            Err(e) => {
                self.error(format!("{e:#}"));
                match Conn::connect(addr).await {
                    Ok(c) => {
                        *conn = c;
                        true
                    }
                    Err(_) => false,
                }
            }
        }
    }

    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// Runs one load test on a fresh current-thread runtime (call from outside any runtime).
pub fn run(target: &Target, spec: Spec) -> anyhow::Result<RunResult> {
    // This thread drives the runtime (and its timers): wake it close to on time.
    sys::precise_timers_for_this_thread();
    crate::block_on(run_async(target, spec))
}

async fn run_async(target: &Target, spec: Spec) -> anyhow::Result<RunResult> {
    let mut conns = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        conns.push(Conn::connect(target.addr).await?);
    }
    let start = Instant::now();
    let measure_start = start + spec.warmup;
    let end = measure_start + spec.duration;

    // Samples CPU at the edges of the measured window.
    let pid = target.pid;
    let sample = move || {
        (
            Instant::now(),
            sys::self_cpu(),
            pid.and_then(sys::proc_cpu),
            pid.map(sys::proc_threads_cpu),
            sys::system_busy(),
        )
    };
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(measure_start.into()).await;
        let t0 = sample();
        tokio::time::sleep_until(end.into()).await;
        (t0, sample())
    });

    let mut pacing = None;
    let mut workers = Vec::with_capacity(conns.len());
    match spec.mode {
        Mode::Closed => {
            for conn in conns {
                let path = target.path.clone();
                let addr = target.addr;
                workers.push(tokio::spawn(closed_worker(conn, addr, path, measure_start, end)));
            }
        }
        Mode::Open { rate } => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
            let permits = Arc::new(Semaphore::new(0));
            let next = Arc::new(AtomicU64::new(0));
            pacing = Some(tokio::spawn(pacer(permits.clone(), start, interval, end, measure_start)));
            for conn in conns {
                let (path, addr) = (target.path.clone(), target.addr);
                let (permits, next) = (permits.clone(), next.clone());
                workers.push(tokio::spawn(open_worker(
                    conn,
                    addr,
                    path,
                    permits,
                    next,
                    start,
                    interval,
                    measure_start,
                )));
            }
        }
    }

    let mut total = WorkerOut::new();
    for w in workers {
        let out = w.await?;
        total.hist.add(&out.hist).ok();
        total.requests += out.requests;
        total.answered += out.answered;
        total.errors += out.errors;
        total.non_2xx += out.non_2xx;
        if total.first_error.is_none() {
            total.first_error = out.first_error;
        }
    }
    let ((w0, b0, s0, th0, m0), (w1, b1, s1, th1, m1)) = sampler.await?;
    let wall = (w1 - w0).as_secs_f64().max(1e-9);
    let bench_cpu = (b1 - b0).as_secs_f64();
    let server_cpu = s0.zip(s1).map(|(a, b)| b - a);
    let other_cpu_pct =
        m0.zip(m1).map(|(a, b)| ((b - a) - bench_cpu - server_cpu.unwrap_or(0.0)).max(0.0) / wall * 100.0);
    let server_threads_pct = match (th0, th1) {
        (Some(a), Some(b)) => b
            .iter()
            .map(|(name, after)| (name.clone(), (after - a.get(name).copied().unwrap_or(0.0)) / wall * 100.0))
            .filter(|(_, pct)| *pct >= 0.5)
            .collect(),
        _ => BTreeMap::new(),
    };
    let (mut unsent, mut pacer_lag) = (0, None);
    if let Some(p) = pacing {
        let (released_in_window, lag) = p.await??;
        unsent = released_in_window.saturating_sub(total.requests + total.errors);
        pacer_lag = Some(lag);
    }
    Ok(RunResult {
        hist: total.hist,
        requests: total.requests,
        answered: total.answered,
        errors: total.errors,
        non_2xx: total.non_2xx,
        first_error: total.first_error,
        measured_s: spec.duration.as_secs_f64(),
        bench_cpu_pct: bench_cpu / wall * 100.0,
        server_cpu_pct: server_cpu.map(|c| c / wall * 100.0),
        other_cpu_pct,
        server_threads_pct,
        unsent,
        pacer_lag,
    })
}

async fn closed_worker(
    mut conn: Conn,
    addr: SocketAddr,
    path: String,
    measure_start: Instant,
    end: Instant,
) -> WorkerOut {
    let mut out = WorkerOut::new();
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        if !out.send(&mut conn, addr, &path, t0, measure_start).await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn open_worker(
    mut conn: Conn,
    addr: SocketAddr,
    path: String,
    permits: Arc<Semaphore>,
    next: Arc<AtomicU64>,
    start: Instant,
    interval: Duration,
    measure_start: Instant,
) -> WorkerOut {
    let mut out = WorkerOut::new();
    // The pacer closes the semaphore at the end of the run: waiting workers stop.
    while let Ok(permit) = permits.acquire().await {
        permit.forget();
        let i = next.fetch_add(1, Ordering::Relaxed);
        let intended = start + interval.mul_f64(i as f64);
        out.send(&mut conn, addr, &path, intended, measure_start).await;
    }
    out
}

/// A periodic timer on the runtime's own epoll (timerfd): tokio's timers have millisecond
/// granularity, too coarse for the schedule, and a separate pacer thread would cost a
/// cross-thread wake-up per release.
struct TimerFd(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>);

impl TimerFd {
    fn periodic(period: Duration) -> std::io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscalls; the fd is owned by the OwnedFd from here on.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let ts =
            libc::timespec { tv_sec: period.as_secs() as libc::time_t, tv_nsec: period.subsec_nanos() as libc::c_long };
        let spec = libc::itimerspec { it_interval: ts, it_value: ts };
        use std::os::fd::AsRawFd;
        // SAFETY: arming the timer we own.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd stays open, and is the same fd, for as long as the AsyncFd owns it.
        let fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
        Ok(Self(fd.map_err(std::io::Error::from)?))
    }

    async fn tick(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        loop {
            let mut guard = self.0.readable().await?;
            let mut expirations = 0u64;
            // SAFETY: reading 8 bytes into a u64 from our timerfd.
            let n = unsafe { libc::read(self.0.get_ref().as_raw_fd(), (&mut expirations as *mut u64).cast(), 8) };
            if n == 8 {
                return Ok(());
            }
            guard.clear_ready();
        }
    }
}

/// Releases one permit per scheduled request once its intended time has come, waking on a
/// periodic timer (the request interval, but at least 50 µs: later requests are released in
/// small batches, on time or late but never early). Returns how many releases fell in the
/// measured window and the release lateness.
async fn pacer(
    permits: Arc<Semaphore>,
    start: Instant,
    interval: Duration,
    end: Instant,
    measure_start: Instant,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let timer = TimerFd::periodic(interval.max(Duration::from_micros(50)))?;
    let total = ((end - start).as_secs_f64() / interval.as_secs_f64()).ceil() as u64;
    let intended = |i: u64| start + interval.mul_f64(i as f64);
    let mut lag = new_hist();
    let (mut released, mut in_window) = (0u64, 0u64);
    while released < total {
        let now = Instant::now();
        let due = ((now.saturating_duration_since(start).as_secs_f64() / interval.as_secs_f64()).floor() as u64 + 1)
            .min(total);
        for i in released..due {
            let t = intended(i);
            lag.saturating_record(now.saturating_duration_since(t).as_nanos() as u64);
            if t >= measure_start {
                in_window += 1;
            }
        }
        if due > released {
            permits.add_permits((due - released) as usize);
            released = due;
        }
        if released < total {
            timer.tick().await?;
        }
    }
    // Let the last releases be picked up, then stop the workers.
    tokio::time::sleep(Duration::from_millis(1)).await;
    permits.close();
    Ok((in_window, lag))
}

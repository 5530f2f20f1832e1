//! The load generator: closed loop (N connections, each sends its next request when the
//! previous answer is read) and open loop (requests scheduled at a fixed rate; latency counts
//! from the *intended* send time, so a stalled server cannot hide queueing delay by slowing
//! the sender down: no coordinated omission).
//!
//! It runs on one current-thread tokio runtime and reports its own CPU use: above
//! `SATURATED_PCT` of a core it may be the bottleneck.

use crate::sys;
use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde::{Serialize, Serializer};
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// A minimal HTTP/1.1 keep-alive client on hyper's connection API: one TCP connection, requests
/// one at a time, no pool (so "N connections" means exactly N).
pub struct Conn {
    tx: SendRequest<Empty<Bytes>>,
    host: String,
}

impl Conn {
    /// Connects and spawns the connection's driver on the current tokio runtime.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (tx, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self { tx, host: addr.to_string() })
    }

    /// `GET path`, reading the whole response body.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<StatusCode> {
        self.get_as(path, None).await
    }

    /// `GET path` with this `Authorization` header value, if any.
    pub async fn get_as(&mut self, path: &str, authorization: Option<&str>) -> anyhow::Result<StatusCode> {
        let mut req = Request::get(path).header(header::HOST, &self.host);
        if let Some(value) = authorization {
            req = req.header(header::AUTHORIZATION, value);
        }
        let req = req.body(Empty::new())?;
        self.tx.ready().await?;
        let resp = self.tx.send_request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        Ok(status)
    }
}

/// Above this share of one core the (single-threaded) load generator is considered saturated.
pub const SATURATED_PCT: f64 = 90.0;

/// Latency summary in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// A latency histogram (nanoseconds, 1 ns .. 1 h, 3 significant digits), serialized as its
/// `Latency` summary.
#[derive(Debug, Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist(Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram bounds"))
    }
}

impl Hist {
    pub fn record(&mut self, d: Duration) {
        self.0.saturating_record(d.as_nanos() as u64);
    }

    pub fn add(&mut self, other: &Hist) {
        self.0.add(&other.0).expect("same bounds");
    }

    pub fn latency(&self) -> Latency {
        let h = &self.0;
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let count = h.len();
        Latency {
            count,
            mean_us: h.mean() / 1000.0,
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: us(1.0),
        }
    }
}

impl Serialize for Hist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.latency().serialize(s)
    }
}

#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    /// The server process, for its CPU use.
    pub pid: u32,
    /// Sent as the `Authorization` header of every request (e.g. `Bearer TOKEN`).
    pub authorization: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub connections: usize,
    /// Sent but not recorded (connections warm up, pools refill).
    pub warmup: Duration,
    pub duration: Duration,
    /// Open loop at this many requests per second, spread evenly; `None`: closed loop.
    pub rate: Option<f64>,
}

/// One run against one target, or several merged (rounds).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Run {
    #[serde(rename = "latency")]
    pub hist: Hist,
    /// Requests measured (sent after the warm-up).
    pub requests: u64,
    /// Requests answered, warm-up included.
    pub answered: u64,
    pub errors: u64,
    pub non_2xx: u64,
    pub first_error: Option<String>,
    pub measured_s: f64,
    /// CPU seconds over the measured window: the load generator, the server process (all its
    /// threads), and everything else on the machine (noise).
    pub bench_cpu_s: f64,
    pub server_cpu_s: f64,
    pub other_cpu_s: f64,
    /// Open loop: requests scheduled in the measured window but never sent before it ended
    /// (every connection was busy). Nonzero means the rate was above capacity.
    pub unsent: u64,
    /// Open loop: how late the pacer released requests (its own scheduling noise, included in
    /// the latencies).
    pub pacer_lag: Hist,
}

impl Run {
    /// Adds `o`'s counts, histograms, time and CPU to this one.
    pub fn merge(&mut self, o: &Run) {
        self.hist.add(&o.hist);
        self.pacer_lag.add(&o.pacer_lag);
        self.requests += o.requests;
        self.answered += o.answered;
        self.errors += o.errors;
        self.non_2xx += o.non_2xx;
        self.first_error = self.first_error.take().or_else(|| o.first_error.clone());
        self.measured_s += o.measured_s;
        self.bench_cpu_s += o.bench_cpu_s;
        self.server_cpu_s += o.server_cpu_s;
        self.other_cpu_s += o.other_cpu_s;
        self.unsent += o.unsent;
    }

    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.measured_s.max(1e-9)
    }

    /// CPU seconds as % of one core over the measured window.
    pub fn pct(&self, cpu_s: f64) -> f64 {
        cpu_s / self.measured_s.max(1e-9) * 100.0
    }

    pub fn saturated(&self) -> bool {
        self.pct(self.bench_cpu_s) > SATURATED_PCT
    }

    /// Server CPU time per measured request, µs (all cores).
    pub fn server_us_per_req(&self) -> f64 {
        self.server_cpu_s * 1e6 / self.requests.max(1) as f64
    }

    /// One line for the progress log.
    pub fn describe(&self) -> String {
        let l = self.hist.latency();
        format!("{:>8.0} rps  p50 {:>7.1} us  p99 {:>8.1} us", self.rps(), l.p50_us, l.p99_us)
    }

    /// Sends one request and records it, timed from `since`, if `since` is in the measured
    /// window. After an error, reconnects; returns false if that failed too.
    async fn send(&mut self, conn: &mut Conn, target: &Target, since: Instant, measure_start: Instant) -> bool {
        match conn.get_as(&target.path, target.authorization.as_deref()).await {
            Ok(status) => {
                self.answered += 1;
                if since >= measure_start {
                    self.hist.record(since.elapsed());
                    self.requests += 1;
                    self.non_2xx += u64::from(!status.is_success());
                }
                true
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
                Conn::connect(target.addr).await.map(|c| *conn = c).is_ok()
            }
        }
    }
}

/// Runs one load test on a fresh current-thread runtime (call from outside any runtime).
pub fn run(target: &Target, spec: Spec) -> anyhow::Result<Run> {
    crate::block_on(run_async(target, spec))
}

/// Open loop: the schedule the connections take their requests from.
struct Schedule {
    /// One permit per request whose intended time has come; closed at the end of the run.
    permits: Semaphore,
    next: AtomicU64,
    start: Instant,
    interval: Duration,
}

impl Schedule {
    fn intended(&self, i: u64) -> Instant {
        self.start + self.interval.mul_f64(i as f64)
    }
}

async fn run_async(target: &Target, spec: Spec) -> anyhow::Result<Run> {
    let mut conns = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        conns.push(Conn::connect(target.addr).await?);
    }
    let start = Instant::now();
    let measure_start = start + spec.warmup;
    let end = measure_start + spec.duration;

    // CPU seconds so far (this process, the server, the whole machine), sampled at the edges
    // of the measured window.
    let pid = target.pid;
    let cpu = move || {
        [sys::proc_cpu(std::process::id()), sys::proc_cpu(pid), sys::machine_busy()].map(Option::unwrap_or_default)
    };
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(measure_start.into()).await;
        let before = cpu();
        tokio::time::sleep_until(end.into()).await;
        let after = cpu();
        [0, 1, 2].map(|i| after[i] - before[i])
    });

    let schedule = spec.rate.map(|rate| {
        let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
        Arc::new(Schedule { permits: Semaphore::new(0), next: AtomicU64::new(0), start, interval })
    });
    let pacer = schedule.clone().map(|s| tokio::spawn(pacer(s, end, measure_start)));
    let workers: Vec<_> = conns
        .into_iter()
        .map(|conn| tokio::spawn(worker(conn, target.clone(), schedule.clone(), measure_start, end)))
        .collect();

    let mut run = Run::default();
    for w in workers {
        run.merge(&w.await?);
    }
    run.measured_s = spec.duration.as_secs_f64();
    let [bench, server, machine] = sampler.await?;
    (run.bench_cpu_s, run.server_cpu_s, run.other_cpu_s) = (bench, server, (machine - bench - server).max(0.0));
    if let Some(p) = pacer {
        let (released_in_window, lag) = p.await??;
        run.unsent = released_in_window.saturating_sub(run.requests + run.errors);
        run.pacer_lag = lag;
    }
    Ok(run)
}

/// One connection's loop. Closed loop: the next request goes as soon as the previous one is
/// answered. Open loop: each request waits for its turn in the schedule and is timed from when
/// it should have been sent.
async fn worker(
    mut conn: Conn,
    target: Target,
    schedule: Option<Arc<Schedule>>,
    measure_start: Instant,
    end: Instant,
) -> Run {
    let mut out = Run::default();
    loop {
        let since = match &schedule {
            None if Instant::now() >= end => break,
            None => Instant::now(),
            Some(s) => match s.permits.acquire().await {
                Ok(permit) => {
                    permit.forget();
                    s.intended(s.next.fetch_add(1, Ordering::Relaxed))
                }
                Err(_) => break, // closed: the run is over
            },
        };
        if !out.send(&mut conn, &target, since, measure_start).await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    out
}

/// A periodic timer on the runtime's own epoll (timerfd): tokio's timers have millisecond
/// granularity, too coarse for the schedule, and a separate pacer thread would cost a
/// cross-thread wake-up per release.
struct TimerFd(AsyncFd<File>);

impl TimerFd {
    fn periodic(period: Duration) -> std::io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall; the new fd is owned by the File from here on.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let file = unsafe { File::from_raw_fd(fd) };
        let ts =
            libc::timespec { tv_sec: period.as_secs() as libc::time_t, tv_nsec: period.subsec_nanos() as libc::c_long };
        let spec = libc::itimerspec { it_interval: ts, it_value: ts };
        // SAFETY: arming the timer we own.
        if unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the File owns the fd and keeps it open, unchanged, for as long as the AsyncFd
        // owns the File.
        let fd = unsafe { AsyncFd::register(file) };
        Ok(Self(fd.map_err(std::io::Error::from)?))
    }

    /// Waits for the next expiration (or returns at once if some are pending).
    async fn tick(&self) -> std::io::Result<()> {
        loop {
            let mut guard = self.0.readable().await?;
            if let Ok(read) = guard.try_io(|f| f.get_ref().read(&mut [0; 8])) {
                return read.map(drop);
            }
        }
    }
}

/// Releases one permit per scheduled request once its intended time has come, waking on a
/// periodic timer (the request interval, but at least 50 µs: later requests are released in
/// small batches, on time or late but never early). Returns how many releases fell in the
/// measured window and the release lateness.
async fn pacer(s: Arc<Schedule>, end: Instant, measure_start: Instant) -> anyhow::Result<(u64, Hist)> {
    let timer = TimerFd::periodic(s.interval.max(Duration::from_micros(50)))?;
    let total = ((end - s.start).as_secs_f64() / s.interval.as_secs_f64()).ceil() as u64;
    let mut lag = Hist::default();
    let (mut released, mut in_window) = (0u64, 0u64);
    while released < total {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(s.start).as_secs_f64();
        let due = ((elapsed / s.interval.as_secs_f64()).floor() as u64 + 1).min(total);
        for i in released..due {
            lag.record(now.saturating_duration_since(s.intended(i)));
            in_window += u64::from(s.intended(i) >= measure_start);
        }
        s.permits.add_permits((due - released) as usize);
        released = due;
        if released < total {
            timer.tick().await?;
        }
    }
    // Let the last releases be picked up, then stop the workers.
    tokio::time::sleep(Duration::from_millis(1)).await;
    s.permits.close();
    Ok((in_window, lag))
}

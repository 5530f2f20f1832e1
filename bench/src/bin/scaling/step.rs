//! Scenario step: a service with containerConcurrency 10 (target 7 per replica at the default
//! 70% utilization) on a guest that sleeps `--work-ms` per request, under closed-loop load at
//! `--connections` C, then at once `--factor` × C. Baseline: the same service before the step.
//!
//! Measured: when the node's decision shows in `/metrics` (desired, then ready replicas; polled
//! every `--poll-ms`), the same from the client side (completions imply more requests in
//! service than the old capacity allowed), panic mode, the activator queue, errors, and when the
//! p99 of 100 ms windows (by completion time) is back within 1.5× the pre-step p99.

use crate::loadgen::{Conn, Hist};
use crate::node::{Gauges, MISBEHAVE, Service, Wisp};
use crate::{Plan, block_on, log, ms, sys};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SERVICE: &str = "step";
const CONTAINER_CONCURRENCY: u32 = 10;

/// One request: when it was sent and answered (since the run's start), and its status (None:
/// a transport error).
#[derive(Debug, Clone, Copy)]
struct Sample {
    sent: Duration,
    done: Duration,
    status: Option<u16>,
}

impl Sample {
    fn latency(&self) -> Duration {
        self.done - self.sent
    }

    fn ok(&self) -> bool {
        self.status == Some(200)
    }
}

/// Latency and throughput of one phase.
#[derive(Debug, Serialize)]
pub struct Phase {
    pub connections: u32,
    pub seconds: f64,
    pub requests: u64,
    pub rps: f64,
    /// Non-200 answers and transport errors.
    pub errors: u64,
    pub latency: Hist,
}

/// One 100 ms window, by completion time, relative to the step.
#[derive(Debug, Serialize)]
pub struct Window {
    pub start_ms: f64,
    pub requests: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// One /metrics poll around the step, times relative to the step.
#[derive(Debug, Serialize)]
pub struct TracePoint {
    pub sent_ms: f64,
    pub answered_ms: f64,
    pub desired: f64,
    pub ready: f64,
    pub panic: f64,
    pub activator_queue: f64,
    pub panic_concurrency: f64,
}

#[derive(Debug, Serialize)]
pub struct StepReport {
    pub service: &'static str,
    pub container_concurrency: u32,
    pub replica_target: f64,
    pub work_ms: u64,
    /// Before the step (after the warm-up): the baseline.
    pub pre: Phase,
    /// After the step, whole phase (the transient included).
    pub post: Phase,
    /// After the step, from the p99 recovery on (None if it never recovered).
    pub post_recovered: Option<Phase>,
    pub desired_before: f64,
    pub ready_before: f64,
    pub panic_before: bool,
    pub desired_max_after: f64,
    pub ready_max_after: f64,
    /// Replicas the target asks for at the stepped load: ceil(factor × C / target).
    pub desired_expected: f64,
    /// From the step until a /metrics answer showed a different desired (ready) replica
    /// count: an upper bound, within one poll interval plus one scrape...
    pub decision_ms: Option<f64>,
    /// ...and the lower bound: when the poll before it, which still showed the old count,
    /// was sent (0 if before the step).
    pub decision_after_ms: Option<f64>,
    /// From the step until a /metrics answer showed desired at `desired_expected` or more.
    pub desired_reached_ms: Option<f64>,
    pub ready_change_ms: Option<f64>,
    /// The same from the client: the first moment more requests were in service than the
    /// old capacity (ready × containerConcurrency) allows, each service interval taken as
    /// [answer − the fastest pre-step latency, answer].
    pub decision_client_ms: Option<f64>,
    pub panic_observed: bool,
    pub activator_queue_max: f64,
    /// The pre-step p99 times `recovery_factor`.
    pub recovery_threshold_ms: f64,
    /// End of the last post-step window whose p99 was above the threshold (0: none was);
    /// None if the last window of the run was still above it.
    pub recovered_ms: Option<f64>,
    /// Post-step windows above the threshold (or empty).
    pub windows_over: usize,
    pub windows: Vec<Window>,
    /// /metrics polls made, and their mean interval.
    pub polls: usize,
    pub poll_interval_ms: f64,
    pub poll_error: Option<String>,
    /// The polls from 100 ms before the step to 300 ms after it.
    pub trace: Vec<TracePoint>,
    pub first_error: Option<String>,
    /// CPU over the whole load (warm-up included), % of one core: the node, the bench process
    /// (load generator and poller), and the rest of the machine.
    pub node_cpu_pct: f64,
    pub bench_cpu_pct: f64,
    pub other_cpu_pct: f64,
}

pub fn run(plan: &Plan, wisp: &Wisp) -> anyhow::Result<StepReport> {
    let revision = wisp.apply(&Service {
        name: SERVICE,
        image: MISBEHAVE,
        container_concurrency: CONTAINER_CONCURRENCY,
        annotations: Vec::new(),
    })?;
    let path = format!("/fn/{SERVICE}?mode=sleep&ms={}", plan.work_ms);
    wisp.check(&path)?;
    let base = plan.step_connections;
    let stepped = base * plan.step_factor;
    log(&format!("step: revision {revision}, {base} -> {stepped} connections, guest sleeps {} ms", plan.work_ms));

    let pre = Duration::from_secs_f64(plan.step_pre_s);
    let post = Duration::from_secs_f64(plan.step_post_s);
    let warmup = Duration::from_secs_f64(plan.step_warmup_s);
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    // Connections are opened first; load starts at `begin`, steps at `step`, stops at `end`.
    let begin = Duration::from_millis(200);
    let (step, end) = (begin + pre, begin + pre + post);
    let cpu = || [sys::proc_cpu(std::process::id()), sys::proc_cpu(wisp.pid), sys::machine_busy()];
    let (loaded, (polls, poll_error), cpu_used) = std::thread::scope(|s| {
        let poller = s.spawn(|| wisp.poll(SERVICE, Duration::from_millis(plan.poll_ms), t0, &stop));
        let before = cpu();
        let loaded = block_on(load(wisp.addr, &path, base, stepped, t0, [begin, step, end]));
        let after = cpu();
        stop.store(true, Ordering::Relaxed);
        let used = [0, 1, 2].map(|i| after[i].zip(before[i]).map_or(0.0, |(a, b)| a - b));
        (loaded, poller.join().expect("the /metrics poller panicked"), used)
    });
    let (samples, first_error) = loaded?;
    let wall = (end - begin).as_secs_f64();
    let [bench_cpu, node_cpu, machine_cpu] = cpu_used;

    // The baseline: after the warm-up, before the step.
    let phase = |from: Duration, to: Duration, connections: u32| {
        let mut p = Phase {
            connections,
            seconds: (to - from).as_secs_f64(),
            requests: 0,
            rps: 0.0,
            errors: 0,
            latency: Hist::default(),
        };
        for s in samples.iter().filter(|s| s.sent >= from && s.sent < to) {
            p.requests += 1;
            p.errors += u64::from(!s.ok());
            p.latency.record(s.latency());
        }
        p.rps = p.requests as f64 / p.seconds.max(1e-9);
        p
    };
    let pre_phase = phase(begin + warmup, step, base);
    let post_phase = phase(step, end, stepped);
    let pre_lat: Vec<Duration> =
        samples.iter().filter(|s| s.sent >= begin + warmup && s.sent < step && s.ok()).map(Sample::latency).collect();
    anyhow::ensure!(!pre_lat.is_empty(), "no successful request before the step");
    let pre_p99 = Duration::from_secs_f64(pre_phase.latency.latency().p99_us / 1e6);
    let threshold = pre_p99.mul_f64(plan.recovery_factor);

    // Windows by completion time, from a few before the step to the end.
    let width = Duration::from_millis(plan.window_ms);
    let before_windows = 5u32.min((pre.as_millis() / width.as_millis()) as u32);
    let count = (post.as_nanos() / width.as_nanos()) as u32;
    let mut windows = Vec::new();
    let mut last_over: Option<u32> = None;
    let mut windows_over = 0;
    for k in -(before_windows as i64)..count as i64 {
        let from = if k < 0 { step - width * (-k) as u32 } else { step + width * k as u32 };
        let mut lat: Vec<Duration> =
            samples.iter().filter(|s| s.done >= from && s.done < from + width).map(Sample::latency).collect();
        lat.sort_unstable();
        let at = |q: f64| lat.get(((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len().max(1)) - 1).copied();
        let (p99, has_errors) = (at(0.99), samples.iter().any(|s| s.done >= from && s.done < from + width && !s.ok()));
        if k >= 0 && (p99.is_none_or(|p| p > threshold) || has_errors) {
            last_over = Some(k as u32);
            windows_over += 1;
        }
        windows.push(Window {
            start_ms: if k < 0 { -ms(width * (-k) as u32) } else { ms(width * k as u32) },
            requests: lat.len(),
            p50_ms: at(0.5).map(ms),
            p99_ms: p99.map(ms),
            max_ms: lat.last().copied().map(ms),
        });
    }
    let recovered = match last_over {
        None => Some(Duration::ZERO),
        Some(k) if k + 1 >= count => None,
        Some(k) => Some(width * (k + 1)),
    };
    let post_recovered = recovered.map(|r| phase(step + r, end, stepped));

    // The node's view, from the polls. The baseline is the last poll answered before the step;
    // a change first shows in a poll answered after it (the upper bound), and the poll before
    // that one, which still showed the old value, was read after it was sent (the lower bound).
    let base_at = polls.iter().rposition(|p| p.answered < step);
    let last_before = base_at.map(|i| polls[i].gauges).unwrap_or_default();
    let after = &polls[base_at.map_or(0, |i| i + 1)..];
    let first_change = |read: fn(&Gauges) -> f64| {
        let was = read(&last_before);
        let i = after.iter().position(|p| read(&p.gauges) != was)?;
        let previous = if i == 0 { base_at.map(|b| &polls[b]) } else { after.get(i - 1) };
        let lower = previous.map_or(Duration::ZERO, |p| p.sent.saturating_sub(step));
        Some((ms(after[i].answered - step), ms(lower)))
    };
    let max_after = |read: fn(&Gauges) -> f64| after.iter().map(|p| read(&p.gauges)).fold(0.0, f64::max);
    let poll_interval_ms = match (polls.first(), polls.last()) {
        (Some(a), Some(b)) if polls.len() > 1 => ms(b.sent - a.sent) / (polls.len() - 1) as f64,
        _ => 0.0,
    };
    let trace = polls
        .iter()
        .filter(|p| p.answered + Duration::from_millis(100) >= step && p.sent <= step + Duration::from_millis(300))
        .map(|p| TracePoint {
            sent_ms: ms(p.sent) - ms(step),
            answered_ms: ms(p.answered) - ms(step),
            desired: p.gauges.desired,
            ready: p.gauges.ready,
            panic: p.gauges.panic,
            activator_queue: p.gauges.queue,
            panic_concurrency: p.gauges.panic_concurrency,
        })
        .collect();
    let desired_expected = (f64::from(stepped) / (f64::from(CONTAINER_CONCURRENCY) * 0.7)).ceil();
    let reached = after.iter().find(|p| p.gauges.desired >= desired_expected).map(|p| ms(p.answered - step));
    let decision = first_change(|g| g.desired);
    let ready_change = first_change(|g| g.ready);

    // The client's view: service intervals [done − fastest, done]; more overlapping than the
    // old capacity means the capacity had grown.
    let fastest = *pre_lat.iter().min().expect("not empty");
    let capacity = (last_before.ready.max(1.0) * f64::from(CONTAINER_CONCURRENCY)) as i64;
    let mut events: Vec<(Duration, i64)> = samples
        .iter()
        .filter(|s| s.ok() && s.done >= step)
        .flat_map(|s| [(s.done.saturating_sub(fastest), 1), (s.done, -1)])
        .collect();
    events.sort_unstable(); // at equal times an end (-1) sorts before a start
    let mut in_service = 0;
    let mut decision_client = None;
    for (t, delta) in events {
        in_service += delta;
        if in_service > capacity && t >= step {
            decision_client = Some(ms(t - step));
            break;
        }
    }

    let replica_target = f64::from(CONTAINER_CONCURRENCY) * 0.7;
    let report = StepReport {
        service: SERVICE,
        container_concurrency: CONTAINER_CONCURRENCY,
        replica_target,
        work_ms: plan.work_ms,
        desired_before: last_before.desired,
        ready_before: last_before.ready,
        panic_before: polls.iter().any(|p| p.sent >= begin + warmup && p.answered < step && p.gauges.panic > 0.0),
        desired_max_after: max_after(|g| g.desired),
        ready_max_after: max_after(|g| g.ready),
        desired_expected,
        desired_reached_ms: reached,
        decision_ms: decision.map(|d| d.0),
        decision_after_ms: decision.map(|d| d.1),
        ready_change_ms: ready_change.map(|d| d.0),
        decision_client_ms: decision_client,
        panic_observed: after.iter().any(|p| p.gauges.panic > 0.0),
        activator_queue_max: max_after(|g| g.queue),
        recovery_threshold_ms: ms(threshold),
        recovered_ms: recovered.map(ms),
        windows_over,
        windows,
        polls: polls.len(),
        poll_interval_ms,
        poll_error,
        trace,
        first_error,
        node_cpu_pct: node_cpu / wall * 100.0,
        bench_cpu_pct: bench_cpu / wall * 100.0,
        other_cpu_pct: (machine_cpu - node_cpu - bench_cpu).max(0.0) / wall * 100.0,
        pre: pre_phase,
        post: post_phase,
        post_recovered,
    };
    let fmt = |v: Option<f64>| v.map_or_else(|| "never".to_string(), |v| format!("{v:.0} ms"));
    log(&format!(
        "step: desired {} -> {} (decision seen {}; client {}), panic {}, p99 {:.1} ms pre, recovered {}, errors {}",
        report.desired_before,
        report.desired_max_after,
        fmt(report.decision_ms),
        fmt(report.decision_client_ms),
        if report.panic_observed { "yes" } else { "no" },
        ms(pre_p99),
        fmt(report.recovered_ms),
        report.pre.errors + report.post.errors,
    ));
    Ok(report)
}

/// Closed-loop load: `base` connections from `begin`, `stepped − base` more from `step`, all
/// until `end` (offsets from `t0`). Every connection is opened before `begin`.
async fn load(
    addr: SocketAddr,
    path: &str,
    base: u32,
    stepped: u32,
    t0: Instant,
    [begin, step, end]: [Duration; 3],
) -> anyhow::Result<(Vec<Sample>, Option<String>)> {
    let mut conns = Vec::new();
    for _ in 0..stepped {
        conns.push(Conn::connect(addr).await?);
    }
    anyhow::ensure!(t0.elapsed() < begin, "opening {stepped} connections took longer than {begin:?}");
    let workers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let start = if (i as u32) < base { begin } else { step };
            tokio::spawn(worker(conn, addr, path.to_string(), t0, start, end))
        })
        .collect();
    let (mut samples, mut first_error) = (Vec::new(), None);
    for w in workers {
        let (s, e) = w.await?;
        samples.extend(s);
        first_error = first_error.or(e);
    }
    Ok((samples, first_error))
}

async fn worker(
    mut conn: Conn,
    addr: SocketAddr,
    path: String,
    t0: Instant,
    start: Duration,
    end: Duration,
) -> (Vec<Sample>, Option<String>) {
    tokio::time::sleep_until((t0 + start).into()).await;
    let (mut out, mut first_error) = (Vec::new(), None);
    while t0.elapsed() < end {
        let sent = t0.elapsed();
        let result = conn.get(&path).await;
        let done = t0.elapsed();
        let status = match result {
            Ok(status) => {
                if status != 200 {
                    first_error.get_or_insert_with(|| format!("answered {status}"));
                }
                Some(status.as_u16())
            }
            Err(e) => {
                first_error.get_or_insert_with(|| format!("{e:#}"));
                match Conn::connect(addr).await {
                    Ok(c) => conn = c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
                None
            }
        };
        out.push(Sample { sent, done, status });
    }
    (out, first_error)
}

//! A revision's replicas: a housekeeping task starts and stops crun containers to match the
//! target the autoscaler sets, replaces ones that die, and samples their memory; requests pick
//! the least-busy ready replica, at most `containerConcurrency` at a time each, and wait (cold)
//! while one starts.

use super::replica::{self, Replica, Started};
use super::{ContainerSpec, Host};
use crate::{BodyError, InvokeError, Invoked, LogBuffer, Workload, WorkloadStats, read_within};
use bytes::Bytes;
use http_body_util::Full;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A stretch of one replica's life, for replica-seconds metering: one when it stops, and one
/// every `--replica-usage-interval` while it runs (a min-scale replica may never stop).
#[derive(Debug, Clone)]
pub struct ReplicaSpan {
    /// The container's id.
    pub id: String,
    /// Unix milliseconds when the span began (the replica's start, or the previous span's end).
    pub start_ms: u64,
    /// Unix milliseconds when it ended.
    pub end_ms: u64,
    /// CPU time used in the span (its cgroup's), milliseconds; 0 where the host has no cgroups.
    pub cpu_ms: u64,
}

#[derive(Default)]
struct State {
    target: usize,
    /// Ready replicas, in service.
    ready: Vec<Arc<Replica>>,
    starting: usize,
    /// The last start failure, while no replica is ready: waiting requests fail with it
    /// instead of waiting out their timeout.
    failure: Option<String>,
    consecutive_failures: u32,
    /// No start before this (crash-loop backoff).
    backoff_until: Option<Instant>,
    closed: bool,
}

struct Inner {
    host: Arc<Host>,
    spec: ContainerSpec,
    logs: Arc<LogBuffer>,
    ended: Arc<dyn Fn(ReplicaSpan) + Send + Sync>,
    state: Mutex<State>,
    /// Wakes the housekeeping task.
    changed: Notify,
    /// Wakes requests waiting for a replica (one ready, a slot freed, a start failed).
    capacity: Notify,
    next_id: AtomicU64,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    invocations: AtomicU64,
    cold_starts: AtomicU64,
}

/// One revision's container replicas. Dropping it stops them.
pub struct ReplicaSet {
    inner: Arc<Inner>,
}

impl Drop for ReplicaSet {
    fn drop(&mut self) {
        self.inner.state.lock().unwrap().closed = true;
        self.inner.changed.notify_one();
    }
}

impl ReplicaSet {
    pub(crate) fn new(
        host: Arc<Host>,
        spec: ContainerSpec,
        logs: Arc<LogBuffer>,
        ended: Arc<dyn Fn(ReplicaSpan) + Send + Sync>,
    ) -> Self {
        let inner = Arc::new(Inner {
            host,
            spec,
            logs,
            ended,
            state: Mutex::default(),
            changed: Notify::new(),
            capacity: Notify::new(),
            next_id: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            invocations: AtomicU64::new(0),
            cold_starts: AtomicU64::new(0),
        });
        tokio::spawn(housekeeping(inner.clone()));
        Self { inner }
    }
}

/// Matches replicas to the target until the set is dropped, then stops them all.
async fn housekeeping(inner: Arc<Inner>) {
    let mut sample = tokio::time::interval(Duration::from_secs(1));
    loop {
        let (starts, stops, closed, wake_at) = {
            let mut state = inner.state.lock().unwrap();
            let target = if state.closed { 0 } else { state.target };
            let mut stops = Vec::new();
            while state.ready.len() > target {
                // The least busy goes; in-flight requests on it finish first.
                let (i, _) = state
                    .ready
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, r)| r.in_flight.load(Ordering::Relaxed))
                    .expect("non-empty");
                stops.push(state.ready.swap_remove(i));
            }
            let now = Instant::now();
            let waiting = state.backoff_until.filter(|t| *t > now);
            let room = inner.host.config.max_parallel_starts.saturating_sub(state.starting);
            let wanted = target.saturating_sub(state.ready.len() + state.starting);
            // Nothing starts once the node is shutting down.
            let closing = inner.host.closed.load(Ordering::Relaxed);
            let starts = if waiting.is_some() || closing { 0 } else { wanted.min(room) };
            state.starting += starts;
            (starts, stops, state.closed && state.ready.is_empty() && state.starting == 0, waiting)
        };
        for replica in stops {
            replica.draining.store(true, Ordering::Relaxed);
            tokio::spawn(stop(inner.clone(), replica));
        }
        for _ in 0..starts {
            tokio::spawn(start(inner.clone()));
        }
        if closed {
            return;
        }
        let backoff = async {
            match wake_at {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = inner.changed.notified() => {}
            _ = backoff => {}
            _ = sample.tick() => {
                let ready = inner.state.lock().unwrap().ready.clone();
                let (ended, interval) = (inner.ended.clone(), inner.host.config.usage_interval.as_millis() as u64);
                // Small in-kernel reads, but reads: off the async workers.
                let _ = tokio::task::spawn_blocking(move || {
                    let now = now_ms();
                    for replica in ready {
                        replica.sample_memory();
                        if now.saturating_sub(replica.billed_until()) >= interval {
                            ended(replica.span(now));
                        }
                    }
                })
                .await;
            }
        }
    }
}

async fn start(inner: Arc<Inner>) {
    let id = format!("{}-{}", inner.spec.name, inner.next_id.fetch_add(1, Ordering::Relaxed));
    let result = replica::start(&inner.host, &inner.spec, id.clone(), &inner.logs).await;
    let mut state = inner.state.lock().unwrap();
    state.starting -= 1;
    match result {
        Ok(Started { replica, pidfd, exited }) => {
            state.failure = None;
            state.consecutive_failures = 0;
            state.backoff_until = None;
            state.ready.push(replica.clone());
            tokio::spawn(watch_exit(inner.clone(), replica, pidfd, exited));
        }
        Err(why) => {
            tracing::warn!(container = %id, "replica did not start: {why}");
            inner.logs.append(format!("[wisp] replica {id} did not start: {why}\n").as_bytes());
            // Crash-loop backoff, as Kubernetes does: 1 s doubling to 30 s.
            state.consecutive_failures += 1;
            let pause = Duration::from_secs(1 << (state.consecutive_failures - 1).min(5)).min(Duration::from_secs(30));
            state.backoff_until = Some(Instant::now() + pause);
            state.failure = Some(why);
        }
    }
    drop(state);
    inner.capacity.notify_waiters();
    inner.changed.notify_one();
}

/// Waits for a replica's exit (expected or not), reaps it, and cleans up after it.
async fn watch_exit(
    inner: Arc<Inner>,
    replica: Arc<Replica>,
    pidfd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    exited: tokio::sync::watch::Sender<Option<String>>,
) {
    let _ = pidfd.readable().await;
    let status = super::host::reap(std::os::fd::AsFd::as_fd(pidfd.get_ref()));
    let _ = exited.send(Some(status.clone()));
    let expected = replica.draining.load(Ordering::Relaxed) || inner.host.closed.load(Ordering::Relaxed);
    {
        let mut state = inner.state.lock().unwrap();
        state.ready.retain(|r| !Arc::ptr_eq(r, &replica));
    }
    if !expected {
        tracing::warn!(container = %replica.id, "replica exited unexpectedly ({status}); replacing it");
        inner.logs.append(format!("[wisp] replica {} exited ({status}); replacing it\n", replica.id).as_bytes());
    }
    // Read before cleanup: `crun delete` removes the cgroup.
    let measured = replica.clone();
    let span = tokio::task::spawn_blocking(move || measured.span(now_ms())).await;
    replica::cleanup(&inner.host, &replica.id).await;
    if let Ok(span) = span {
        (inner.ended)(span);
    }
    inner.capacity.notify_waiters();
    inner.changed.notify_one();
}

/// Stops a replica taken out of service: waits for its requests, then SIGTERM, the grace
/// period, SIGKILL. Its exit watcher cleans up.
async fn stop(inner: Arc<Inner>, replica: Arc<Replica>) {
    let deadline = Instant::now() + inner.spec.limits.timeout;
    while replica.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    replica.signal(inner.spec.stop_signal);
    if !replica.wait_exit(inner.host.config.stop_grace).await {
        replica.signal(libc::SIGKILL);
        replica.wait_exit(Duration::from_secs(10)).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What an exchange got to before it ended (or timed out), for metering.
#[derive(Default)]
struct Seen {
    request_bytes: u64,
    cold: bool,
    replica: Option<Arc<Replica>>,
}

/// A request's hold on one replica.
struct Slot<'a> {
    inner: &'a Inner,
    replica: Arc<Replica>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.replica.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.inner.spec.concurrency > 0 {
            self.inner.capacity.notify_one();
        }
    }
}

impl Inner {
    /// The least busy ready replica with a free slot, waiting while none is (a replica
    /// starting, or all at `containerConcurrency`). Returns whether it had to wait.
    async fn acquire(&self) -> Result<(Slot<'_>, bool), InvokeError> {
        let mut waited = false;
        loop {
            let notified = self.capacity.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.state.lock().unwrap();
                let limit = match self.spec.concurrency {
                    0 => usize::MAX,
                    n => n as usize,
                };
                let best = state
                    .ready
                    .iter()
                    .filter(|r| !r.draining.load(Ordering::Relaxed) && !r.has_exited())
                    .map(|r| (r.in_flight.load(Ordering::Relaxed), r))
                    .filter(|(n, _)| *n < limit)
                    .min_by_key(|(n, _)| *n);
                if let Some((_, replica)) = best {
                    replica.in_flight.fetch_add(1, Ordering::Relaxed);
                    return Ok((Slot { inner: self, replica: replica.clone() }, waited));
                }
                if state.ready.is_empty()
                    && state.starting == 0
                    && let Some(why) = &state.failure
                {
                    return Err(InvokeError::NotReady(why.clone()));
                }
            }
            if !waited {
                waited = true;
                self.changed.notify_one();
            }
            notified.await;
        }
    }

    async fn exchange<B>(&self, req: http::Request<B>, seen: &mut Seen) -> Result<http::Response<Bytes>, InvokeError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limits = &self.spec.limits;
        let (mut parts, body) = req.into_parts();
        let body = match read_within(&parts.headers, body, limits.max_request_body).await {
            Ok(body) => body,
            Err(BodyError::TooLarge { limit }) => return Err(InvokeError::RequestTooLarge { limit }),
            Err(e) => return Err(InvokeError::BadRequest(e)),
        };
        seen.request_bytes = body.len() as u64;
        let (slot, waited) = self.acquire().await?;
        if waited {
            seen.cold = true;
            self.cold_starts.fetch_add(1, Ordering::Relaxed);
        }
        let replica = &slot.replica;
        seen.replica = Some(replica.clone());
        strip_hop_by_hop(&mut parts.headers);
        parts.uri = parts.uri.path_and_query().map_or("/", |p| p.as_str()).parse().unwrap_or_default();
        parts.version = http::Version::HTTP_11;
        let mut sender = replica.sender(&self.host).await.map_err(InvokeError::Upstream)?;
        let response = match sender.send_request(http::Request::from_parts(parts, Full::new(body))).await {
            Ok(response) => response,
            Err(e) => return Err(InvokeError::Upstream(replica.failure_after(&e.to_string()).await)),
        };
        let (mut parts, body) = response.into_parts();
        let body = match read_within(&http::HeaderMap::new(), body, limits.max_response_body).await {
            Ok(body) => body,
            Err(BodyError::TooLarge { limit }) => return Err(InvokeError::ResponseTooLarge { limit }),
            Err(e) => return Err(InvokeError::Upstream(replica.failure_after(&e.to_string()).await)),
        };
        replica.put_back(sender);
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(http::header::CONTENT_LENGTH);
        Ok(http::Response::from_parts(parts, body))
    }
}

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    use http::header::*;
    for name in [CONNECTION, TE, TRANSFER_ENCODING, UPGRADE, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TRAILER] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

impl Workload for ReplicaSet {
    async fn invoke<B>(&self, req: http::Request<B>) -> Invoked
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let inner = &self.inner;
        inner.invocations.fetch_add(1, Ordering::Relaxed);
        let now = inner.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        inner.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        let mut seen = Seen::default();
        let timeout = inner.spec.limits.timeout;
        let result = match tokio::time::timeout(timeout, inner.exchange(req, &mut seen)).await {
            Ok(result) => result,
            Err(_) => Err(InvokeError::Timeout(timeout)),
        };
        inner.in_flight.fetch_sub(1, Ordering::Relaxed);
        Invoked {
            result,
            cold: seen.cold,
            // The serving replica's peak so far (cgroup, sampled each second); 0 where the
            // host has no cgroups to read it from.
            peak_memory_bytes: seen.replica.map_or(0, |r| r.memory_peak.load(Ordering::Relaxed)),
            request_bytes: seen.request_bytes,
            cpu_us: 0,
            outbound_bytes: 0,
        }
    }

    fn set_target(&self, target: usize) {
        let inner = &self.inner;
        inner.peak_in_flight.store(inner.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        let mut state = inner.state.lock().unwrap();
        if state.target != target {
            state.target = target;
            drop(state);
            inner.changed.notify_one();
        }
    }

    fn stats(&self) -> WorkloadStats {
        let inner = &self.inner;
        let state = inner.state.lock().unwrap();
        WorkloadStats {
            ready: state.ready.len(),
            target: state.target,
            in_flight: inner.in_flight.load(Ordering::Relaxed),
            peak_in_flight: inner.peak_in_flight.load(Ordering::Relaxed),
            invocations: inner.invocations.load(Ordering::Relaxed),
            cold_starts: inner.cold_starts.load(Ordering::Relaxed),
            instantiation: std::time::Duration::ZERO,
        }
    }
}

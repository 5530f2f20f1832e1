//! Kafka triggers: a consumer group on some topics (Knative's KafkaSource). Each record becomes
//! a CloudEvent the way Knative builds it, and its offset is committed only once the record was
//! delivered, dead-lettered or dropped.
//!
//! One blocking thread per trigger owns the librdkafka consumer: it serves the group protocol
//! (rebalance callbacks, commit results, errors), commits done offsets every [`COMMIT_EVERY`],
//! starts the (blocking) lag lookups every [`LAG_EVERY`] on a pool thread, and closes the
//! consumer on stop. Those calls block, so they stay off the async workers.
//! Each assigned partition gets a librdkafka queue of its own (split before the assignment takes
//! effect) read by an async worker, so a slow or poison partition holds up only itself; and
//! librdkafka stops prefetching a partition whose queue is full, which bounds memory.

use crate::dispatch::{Delivery, Failure};
use crate::event::{self, Event};
use crate::spec::{InitialOffset, KafkaSpec, Ordering, TriggerSpec};
use crate::status::TriggerStatus;
use crate::{Consumer, Context};
use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tokio::runtime::Handle;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// How long the consumer thread waits for a group event before checking for stop and commits.
const POLL: Duration = Duration::from_millis(20);
/// How often done offsets are committed (asynchronously), when some changed. After a crash,
/// what was delivered since the last commit is delivered again: keep it a short window (Knative
/// commits every 5 s; an async commit costs one small request).
const COMMIT_EVERY: Duration = Duration::from_millis(20);
/// A member that vanished (kill -9) keeps its partitions this long: after a crash the restarted
/// node waits for it. librdkafka's default is 45 s; 10 s is above brokers' usual minimum (6 s).
const SESSION_TIMEOUT_MS: &str = "10000";
/// How often consumer lag is refreshed.
const LAG_EVERY: Duration = Duration::from_secs(2);
/// Timeout of one watermark or committed-offset lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// First and longest pause between attempts to create the consumer or write the dead-letter topic.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a stopping partition worker may overstay its drain before it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Unordered: how far a partition may run ahead of its oldest unfinished record. A record stuck
/// in retries holds the commit back, and everything after it is replayed after a restart.
const UNORDERED_WINDOW: i64 = 1000;
/// A partition worker re-reads its queue at least this often, in case a wake-up was missed.
const REPOLL: Duration = Duration::from_secs(1);
/// Pause after a partition error, so an error that repeats cannot spin.
const ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long a dead-letter record may wait in the producer's full queue, and how long librdkafka
/// keeps trying to deliver it before that attempt fails (and is retried by us).
const PRODUCE_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
const PRODUCE_TIMEOUT_MS: &str = "15000";

/// A partition: topic and number.
type Key = (String, i32);

pub(crate) struct KafkaConsumer {
    trigger: String,
    group: String,
    spec: KafkaSpec,
}

impl KafkaConsumer {
    pub(crate) fn new(trigger: &TriggerSpec, spec: &KafkaSpec) -> Self {
        Self { trigger: trigger.name.clone(), group: trigger.kafka_group(spec), spec: spec.clone() }
    }

    fn consumer_config(&self) -> ClientConfig {
        let reset = match self.spec.from {
            InitialOffset::Earliest => "earliest",
            InitialOffset::Latest => "latest",
        };
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.spec.brokers)
            .set("group.id", &self.group)
            .set("client.id", format!("wisp-{}", self.trigger))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", reset)
            .set("session.timeout.ms", SESSION_TIMEOUT_MS)
            // With a queue per partition, librdkafka's prefetch limits apply per partition (its
            // defaults, 100,000 records or 64 MiB, would be per partition too): 4 MiB or
            // 10,000 records each, re-checked every 100 ms once reached.
            .set("queued.max.messages.kbytes", "4096")
            .set("queued.min.messages", "10000")
            .set("fetch.queue.backoff.ms", "100")
            .set("log.connection.close", "false");
        config
    }

    fn producer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.spec.brokers)
            .set("client.id", format!("wisp-{}-dlq", self.trigger))
            .set("message.timeout.ms", PRODUCE_TIMEOUT_MS)
            .set("log.connection.close", "false");
        config
    }

    /// The consumer thread: sessions (one librdkafka consumer each) until stopped. A session
    /// ends early only on a fatal client error, and the next one starts after a backoff.
    fn consume(self, ctx: Context, stop: CancellationToken, rt: Handle) {
        let mut backoff = Backoff::default();
        while !stop.is_cancelled() {
            let started = Instant::now();
            let end = match Session::open(&self, &ctx, &stop, &rt) {
                Ok(session) => session.run(),
                Err(e) => {
                    ctx.status.failing(format!("kafka: cannot start the consumer: {e}"));
                    End::Failed
                }
            };
            if end == End::Stopped {
                return;
            }
            if started.elapsed() > RETRY_MAX {
                backoff = Backoff::default();
            }
            if pause(&rt, &stop, backoff.next()) {
                return;
            }
        }
    }
}

impl Consumer for KafkaConsumer {
    async fn run(self, ctx: Context, stop: CancellationToken) {
        // Should this future be dropped instead of awaited to the end, the thread still stops.
        let stop = stop.child_token();
        let _stop_on_drop = stop.clone().drop_guard();
        let (rt, trigger) = (Handle::current(), self.trigger.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || self.consume(ctx, stop, rt)).await {
            tracing::error!(trigger, "kafka consumer thread failed: {e}");
        }
    }
}

/// Sleeps on a blocking thread for `pause` or until `stop`; true if stopped.
fn pause(rt: &Handle, stop: &CancellationToken, pause: Duration) -> bool {
    rt.block_on(async {
        tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(pause) => false,
        }
    })
}

/// Doubling pauses from [`RETRY_FIRST`] to [`RETRY_MAX`].
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(RETRY_FIRST)
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let pause = self.0;
        self.0 = (pause * 2).min(RETRY_MAX);
        pause
    }
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    Stopped,
    Failed,
}

/// One librdkafka consumer, from creation to close.
struct Session {
    consumer: Arc<BaseConsumer<Shared>>,
    stop: CancellationToken,
    rt: Handle,
}

impl Session {
    fn open(kc: &KafkaConsumer, ctx: &Context, stop: &CancellationToken, rt: &Handle) -> KafkaResult<Session> {
        let dead_letter = match &kc.spec.dead_letter_topic {
            Some(topic) => Some(DeadLetter { topic: topic.clone(), producer: kc.producer_config().create()? }),
            None => None,
        };
        let unordered = (kc.spec.ordering == Ordering::Unordered)
            .then(|| Arc::new(Semaphore::new(kc.spec.max_in_flight.max(1) as usize)));
        let shared = Shared {
            trigger: kc.trigger.clone(),
            from: kc.spec.from,
            health: Arc::new(Health { ok: AtomicBool::new(false), status: ctx.status.clone() }),
            rt: rt.clone(),
            stop: stop.clone(),
            drain: ctx.drain,
            deliverer: Arc::new(Deliverer { ctx: ctx.clone(), dead_letter }),
            unordered,
            consumer: OnceLock::new(),
            partitions: Mutex::default(),
        };
        let consumer: Arc<BaseConsumer<Shared>> = Arc::new(kc.consumer_config().create_with_context(shared)?);
        let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
        let topics: Vec<&str> = kc.spec.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        tracing::info!(trigger = kc.trigger, group = kc.group, ?topics, "kafka consumer subscribed");
        Ok(Session { consumer, stop: stop.clone(), rt: rt.clone() })
    }

    /// Serves the group until stop or a fatal error, then stops the partition workers, commits
    /// what they finished, and leaves the group (closing the consumer).
    fn run(self) -> End {
        let lag_stop = CancellationToken::new();
        let (end, lag) = self.serve(&lag_stop);
        lag_stop.cancel();
        if let Some(lag) = lag {
            let _ = self.rt.block_on(lag);
        }
        self.consumer.context().revoke(&self.consumer, |_| true);
        // The last reference: dropping it closes the consumer, which leaves the group (blocking).
        drop(self.consumer);
        end
    }

    /// Polls the group queue (serving callbacks), commits done offsets every [`COMMIT_EVERY`]
    /// and refreshes lag every [`LAG_EVERY`]; returns the lag refresh that may still run.
    fn serve(&self, lag_stop: &CancellationToken) -> (End, Option<JoinHandle<()>>) {
        let (mut last_commit, mut last_lag) = (Instant::now(), Instant::now());
        let mut lag: Option<JoinHandle<()>> = None;
        let end = loop {
            if self.stop.is_cancelled() {
                break End::Stopped;
            }
            match self.consumer.poll(POLL) {
                // Already reported through `ClientContext::error`.
                Some(Err(KafkaError::MessageConsumptionFatal(_))) => break End::Failed,
                Some(Err(_)) | None => {}
                // Only partitions without a queue of their own (and so without a worker, and
                // without commits) end up here; there are none unless a split failed.
                Some(Ok(m)) => tracing::error!(
                    trigger = self.consumer.context().trigger,
                    "record {}/{}@{} on the group queue; not delivered",
                    m.topic(),
                    m.partition(),
                    m.offset()
                ),
            }
            if last_commit.elapsed() >= COMMIT_EVERY {
                self.consumer.context().commit_done(&self.consumer);
                last_commit = Instant::now();
            }
            if last_lag.elapsed() >= LAG_EVERY && lag.as_ref().is_none_or(JoinHandle::is_finished) {
                // Blocking lookups, on a pool thread only for as long as they take.
                let (consumer, stop) = (self.consumer.clone(), lag_stop.clone());
                lag = Some(self.rt.spawn_blocking(move || consumer.context().refresh_lag(&consumer, &stop)));
                last_lag = Instant::now();
            }
        };
        (end, lag)
    }
}

/// Whether the broker is usable, mirrored to the trigger's state.
struct Health {
    ok: AtomicBool,
    status: Arc<TriggerStatus>,
}

impl Health {
    fn ok(&self) {
        if !self.ok.load(AtomicOrdering::Relaxed) && !self.ok.swap(true, AtomicOrdering::Relaxed) {
            self.status.running();
        }
    }

    fn failed(&self, error: impl std::fmt::Display) {
        self.ok.store(false, AtomicOrdering::Relaxed);
        self.status.failing(error);
    }
}

/// A partition this consumer owns, as the consumer thread sees it.
struct Owned {
    progress: Arc<Progress>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    /// The offset last sent in a commit, and the last the broker confirmed (-1: none).
    sent: i64,
    committed: i64,
}

/// What a partition worker has finished: every offset below `done` (-1: nothing yet).
struct Progress {
    done: AtomicI64,
}

impl Progress {
    fn done(&self) -> i64 {
        self.done.load(AtomicOrdering::Acquire)
    }
}

/// The consumer's context: what the group callbacks, the consumer thread and the lag thread share.
struct Shared {
    trigger: String,
    from: InitialOffset,
    health: Arc<Health>,
    rt: Handle,
    /// The trigger's stop; each partition's token is a child.
    stop: CancellationToken,
    drain: Duration,
    deliverer: Arc<Deliverer>,
    /// Unordered mode: the trigger-wide in-flight limit.
    unordered: Option<Arc<Semaphore>>,
    /// Set right after creation; partition queues are split from it.
    consumer: OnceLock<Weak<BaseConsumer<Shared>>>,
    partitions: Mutex<BTreeMap<Key, Owned>>,
}

impl Shared {
    /// Starts a worker per newly assigned partition, on a queue split off before librdkafka
    /// starts fetching it (so none of its records reach the group queue).
    fn assign(&self, tpl: &TopicPartitionList) {
        self.health.ok();
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else { return };
        let mut partitions = self.partitions.lock().unwrap();
        for elem in tpl.elements() {
            let key = (elem.topic().to_string(), elem.partition());
            if partitions.contains_key(&key) {
                continue;
            }
            match consumer.split_partition_queue(&key.0, key.1) {
                Some(queue) => {
                    let owned = self.start_worker(queue);
                    partitions.insert(key, owned);
                }
                None => self.health.failed(format!("kafka: cannot read partition {}/{} on its own", key.0, key.1)),
            }
        }
        tracing::info!(trigger = self.trigger, partitions = partitions.len(), "kafka partitions assigned");
    }

    fn start_worker(&self, mut queue: PartitionQueue<Shared>) -> Owned {
        let wake = Arc::new(Notify::new());
        let waker = wake.clone();
        // Called by librdkafka when the queue turns non-empty; `notify_one` keeps the wake-up
        // for a worker that is not waiting yet.
        queue.set_nonempty_callback(move || waker.notify_one());
        let progress = Arc::new(Progress { done: AtomicI64::new(-1) });
        let cancel = self.stop.child_token();
        let worker = Worker {
            queue,
            wake,
            progress: progress.clone(),
            deliverer: self.deliverer.clone(),
            health: self.health.clone(),
            cancel: cancel.clone(),
            limit: self.unordered.clone().unwrap_or_else(|| Arc::new(Semaphore::new(1))),
            windowed: self.unordered.is_some(),
            drain: self.drain,
        };
        let task = self.rt.spawn(worker.run());
        Owned { progress, cancel, task, sent: -1, committed: -1 }
    }

    /// Stops the workers of the partitions `which` picks (waiting for their in-flight deliveries
    /// up to the drain), commits what they finished, and forgets them: a delivery that finishes
    /// later cannot commit for a partition this consumer no longer owns.
    fn revoke(&self, consumer: &BaseConsumer<Shared>, which: impl Fn(&Key) -> bool) {
        let mut gone: Vec<(Key, Owned)> = {
            let mut partitions = self.partitions.lock().unwrap();
            let keys: Vec<Key> = partitions.keys().filter(|k| which(k)).cloned().collect();
            let gone = keys.into_iter().filter_map(|k| partitions.remove(&k).map(|o| (k, o))).collect();
            self.status().retain_lag(|t, p| partitions.contains_key(&(t.to_string(), p)));
            gone
        };
        if gone.is_empty() {
            return;
        }
        for (_, owned) in &gone {
            owned.cancel.cancel();
        }
        let within = self.drain + STOP_GRACE;
        self.rt.block_on(futures::future::join_all(gone.iter_mut().map(|(_, o)| finish(&mut o.task, within))));
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), owned) in &gone {
            let done = owned.progress.done();
            if done > owned.committed {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(done));
            }
        }
        if tpl.count() > 0
            && let Err(e) = consumer.commit(&tpl, CommitMode::Sync)
        {
            tracing::warn!(trigger = self.trigger, "kafka: commit of revoked partitions failed: {e}");
        }
        tracing::info!(trigger = self.trigger, partitions = gone.len(), "kafka partitions released");
    }

    /// Commits, asynchronously, every partition whose done offset moved since the last commit.
    fn commit_done(&self, consumer: &BaseConsumer<Shared>) {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), owned) in self.partitions.lock().unwrap().iter_mut() {
            let done = owned.progress.done();
            if done > owned.sent && tpl.add_partition_offset(topic, *partition, Offset::Offset(done)).is_ok() {
                owned.sent = done;
            }
        }
        if tpl.count() > 0
            && let Err(e) = consumer.commit(&tpl, CommitMode::Async)
        {
            self.commit_result(Err(e), &tpl);
        }
    }

    /// A commit's outcome: confirmed offsets count for lag; failed ones are sent again.
    fn commit_result(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = &result {
            tracing::warn!(trigger = self.trigger, "kafka: offset commit failed (retried): {e}");
        }
        let mut partitions = self.partitions.lock().unwrap();
        for elem in offsets.elements() {
            let (Some(owned), Offset::Offset(offset)) =
                (partitions.get_mut(&(elem.topic().to_string(), elem.partition())), elem.offset())
            else {
                continue;
            };
            if result.is_ok() && elem.error().is_ok() {
                owned.committed = owned.committed.max(offset);
            } else {
                owned.sent = owned.committed;
            }
        }
    }

    /// Sets every owned partition's lag: high watermark - committed offset. Blocking lookups.
    fn refresh_lag(&self, consumer: &BaseConsumer<Shared>, stop: &CancellationToken) {
        let owned: Vec<(Key, i64)> =
            self.partitions.lock().unwrap().iter().map(|(k, o)| (k.clone(), o.committed)).collect();
        for (key, committed) in owned {
            if stop.is_cancelled() {
                return;
            }
            let (low, high) = match consumer.fetch_watermarks(&key.0, key.1, LOOKUP_TIMEOUT) {
                Ok(marks) => marks,
                Err(e) => {
                    tracing::debug!(trigger = self.trigger, "kafka: watermarks of {}/{}: {e}", key.0, key.1);
                    continue;
                }
            };
            self.health.ok();
            let stored = if committed >= 0 { None } else { stored_offset(consumer, &key) };
            let base = match (committed, stored, self.from) {
                (0.., _, _) => committed,
                (_, Some(stored), _) => stored,
                (_, None, InitialOffset::Earliest) => low,
                (_, None, InitialOffset::Latest) => high,
            };
            // Only for a partition still owned (under the lock a revoke takes too).
            let mut partitions = self.partitions.lock().unwrap();
            if let Some(owned) = partitions.get_mut(&key) {
                owned.committed = owned.committed.max(stored.unwrap_or(-1));
                self.status().set_lag(&key.0, key.1, high - base);
            }
        }
    }

    fn status(&self) -> &TriggerStatus {
        &self.health.status
    }
}

/// The group's committed offset of one partition, if it has one.
fn stored_offset(consumer: &BaseConsumer<Shared>, (topic, partition): &Key) -> Option<i64> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, *partition);
    let stored = consumer.committed_offsets(tpl, LOOKUP_TIMEOUT).ok()?;
    match stored.find_partition(topic, *partition)?.offset() {
        Offset::Offset(offset) => Some(offset),
        _ => None,
    }
}

/// Waits for a stopping worker; one that overstays `within` is aborted (and waited for, so
/// nothing of it outlives the consumer it reads from).
async fn finish(task: &mut JoinHandle<()>, within: Duration) {
    if tokio::time::timeout(within, &mut *task).await.is_err() {
        task.abort();
        let _ = task.await;
    }
}

impl ClientContext for Shared {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        use RDKafkaLogLevel::*;
        match level {
            Emerg | Alert | Critical | Error | Warning => {
                tracing::warn!(trigger = self.trigger, "librdkafka {facility}: {message}")
            }
            Notice | Info | Debug => tracing::debug!(trigger = self.trigger, "librdkafka {facility}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.health.failed(format!("kafka: {error}: {reason}"));
    }
}

impl ConsumerContext for Shared {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.assign(tpl),
            Rebalance::Revoke(tpl) => {
                let gone: BTreeSet<Key> =
                    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                self.revoke(consumer, |k| gone.contains(k));
            }
            // rdkafka drops the whole assignment after a rebalance error.
            Rebalance::Error(e) => {
                tracing::warn!(trigger = self.trigger, "kafka rebalance failed: {e}");
                self.revoke(consumer, |_| true);
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        self.commit_result(result, offsets);
    }
}

/// Reads one partition's queue and delivers its records: one at a time in offset order
/// (ordered), or up to the trigger-wide limit at once (unordered).
struct Worker {
    queue: PartitionQueue<Shared>,
    wake: Arc<Notify>,
    progress: Arc<Progress>,
    deliverer: Arc<Deliverer>,
    health: Arc<Health>,
    cancel: CancellationToken,
    /// Ordered: this partition's own single permit; unordered: the trigger's shared limit.
    limit: Arc<Semaphore>,
    windowed: bool,
    drain: Duration,
}

/// A delivery's end: its offset, and whether it is done (delivered, dead-lettered or dropped).
type Finished = Result<(i64, bool), JoinError>;

impl Worker {
    async fn run(self) {
        let mut flights: JoinSet<(i64, bool)> = JoinSet::new();
        let mut track = Tracker::default();
        loop {
            let held = self.windowed && track.ahead() >= UNORDERED_WINDOW;
            let permit = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                Some(end) = flights.join_next() => { self.finished(&mut track, end); continue }
                permit = room(&self.limit, held) => permit,
            };
            let record = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                Some(end) = flights.join_next() => { self.finished(&mut track, end); continue }
                record = self.next() => record,
            };
            track.taken(record.offset);
            self.publish(&track);
            let (deliverer, stop) = (self.deliverer.clone(), self.cancel.clone());
            flights.spawn(async move {
                let done = deliverer.deliver(&record, &stop).await;
                drop(permit);
                (record.offset, done)
            });
        }
        self.wind_down(flights, track).await;
    }

    /// The next record of the partition.
    async fn next(&self) -> Record {
        loop {
            match self.queue.poll(Duration::ZERO) {
                Some(Ok(message)) => {
                    self.health.ok();
                    return Record::new(&self.deliverer.ctx.spec.name, &message);
                }
                // Reported through `ClientContext::error`.
                Some(Err(_)) => tokio::time::sleep(ERROR_PAUSE).await,
                None => {
                    let _ = tokio::time::timeout(REPOLL, self.wake.notified()).await;
                }
            }
        }
    }

    /// On stop: in-flight deliveries may finish until the drain ends; the rest are abandoned
    /// (not done, so not committed, so redelivered).
    async fn wind_down(&self, mut flights: JoinSet<(i64, bool)>, mut track: Tracker) {
        let deadline = tokio::time::Instant::now() + self.drain;
        while let Ok(Some(end)) = tokio::time::timeout_at(deadline, flights.join_next()).await {
            self.finished(&mut track, end);
        }
        flights.shutdown().await;
    }

    fn finished(&self, track: &mut Tracker, end: Finished) {
        match end {
            Ok((offset, true)) => track.done(offset),
            // Cancelled by stop: it stays unfinished, so the commit never passes it.
            Ok((_, false)) => {}
            Err(e) => tracing::error!(trigger = self.deliverer.ctx.spec.name, "kafka delivery task failed: {e}"),
        }
        self.publish(track);
    }

    fn publish(&self, track: &Tracker) {
        if let Some(done) = track.committable() {
            self.progress.done.store(done, AtomicOrdering::Release);
        }
    }
}

/// A permit to take one more record; never while `held`.
async fn room(limit: &Arc<Semaphore>, held: bool) -> OwnedSemaphorePermit {
    if !held && let Ok(permit) = limit.clone().acquire_owned().await {
        return permit;
    }
    // Held (or, never, a closed semaphore): wait for a delivery to finish instead.
    std::future::pending().await
}

/// One partition's taken but unfinished offsets. Records are taken in offset order, so
/// everything below the oldest unfinished one (or below the next to take) is done, gaps in the
/// offsets (compaction, transaction markers) included.
#[derive(Default)]
struct Tracker {
    unfinished: BTreeSet<i64>,
    next: Option<i64>,
}

impl Tracker {
    fn taken(&mut self, offset: i64) {
        self.unfinished.insert(offset);
        self.next = Some(offset + 1);
    }

    fn done(&mut self, offset: i64) {
        self.unfinished.remove(&offset);
    }

    /// The offset to commit.
    fn committable(&self) -> Option<i64> {
        self.unfinished.first().copied().or(self.next)
    }

    /// How far the next record is from the oldest unfinished one.
    fn ahead(&self) -> i64 {
        match (self.unfinished.first(), self.next) {
            (Some(first), Some(next)) => next - first,
            _ => 0,
        }
    }
}

/// A record as delivered: its event, and what the dead-letter copy needs.
struct Record {
    offset: i64,
    key: Option<Vec<u8>>,
    event: Event,
}

impl Record {
    fn new(trigger: &str, message: &impl Message) -> Record {
        Record { offset: message.offset(), key: message.key().map(<[u8]>::to_vec), event: to_event(trigger, message) }
    }
}

/// Knative's KafkaSource mapping: a record that already is a CloudEvent (binary `ce_` headers or
/// structured JSON) is forwarded; any other becomes a `dev.knative.kafka.event`. Every event gets
/// `knativekafkapartition` and `knativekafkaoffset`.
fn to_event(trigger: &str, message: &impl Message) -> Event {
    let headers: Vec<(&str, Cow<'_, str>)> = message
        .headers()
        .map(|h| h.iter().map(|h| (h.key, String::from_utf8_lossy(h.value.unwrap_or_default()))).collect())
        .unwrap_or_default();
    let content_type =
        headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.to_string());
    let data = Bytes::copy_from_slice(message.payload().unwrap_or_default());
    let mut event = forwarded(&headers, content_type.clone(), &data)
        .unwrap_or_else(|| converted(trigger, message, &headers, content_type, data));
    event.set_extension("knativekafkapartition", message.partition().to_string());
    event.set_extension("knativekafkaoffset", message.offset().to_string());
    event
}

/// The record as the CloudEvent it already is, if it is a complete one.
fn forwarded(headers: &[(&str, Cow<'_, str>)], content_type: Option<String>, data: &Bytes) -> Option<Event> {
    let structured = "application/cloudevents+json";
    if content_type
        .as_deref()
        .is_some_and(|c| c.get(..structured.len()).is_some_and(|c| c.eq_ignore_ascii_case(structured)))
    {
        return Event::from_structured(data);
    }
    let binary = headers.iter().any(|(name, _)| name.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("ce_")));
    if !binary {
        return None;
    }
    Event::from_binary("ce_", headers.iter().map(|(name, value)| (*name, value.as_ref())), content_type, data.clone())
}

fn converted(
    trigger: &str,
    message: &impl Message,
    headers: &[(&str, Cow<'_, str>)],
    content_type: Option<String>,
    data: Bytes,
) -> Event {
    let (partition, offset) = (message.partition(), message.offset());
    let mut event = Event {
        id: format!("partition:{partition}/offset:{offset}"),
        source: crate::ce_source("kafkasources", trigger, message.topic()),
        ty: "dev.knative.kafka.event".into(),
        subject: Some(format!("partition:{partition}#{offset}")),
        time: record_time(message.timestamp().to_millis()),
        content_type: content_type.map(|c| c.to_ascii_lowercase()),
        extensions: Vec::new(),
        data,
    };
    if let Some(key) = message.key() {
        let key = String::from_utf8_lossy(key);
        event.set_extension("key", key.clone());
        event.set_extension("partitionkey", key);
    }
    for (name, value) in headers {
        event.set_extension(&event::attribute_name("kafkaheader", name), value.clone());
    }
    event
}

/// A record timestamp (Unix ms) as RFC 3339; none outside what RFC 3339 can write (years 1970-9999).
fn record_time(millis: Option<i64>) -> Option<String> {
    const YEAR_10000_MS: i64 = 253_402_300_800_000;
    let millis = millis.filter(|ms| (0..YEAR_10000_MS).contains(ms))?;
    UNIX_EPOCH.checked_add(Duration::from_millis(millis as u64)).map(event::rfc3339)
}

/// Delivers records of one trigger, dead-lettering or dropping those that fail.
struct Deliverer {
    ctx: Context,
    dead_letter: Option<DeadLetter>,
}

impl Deliverer {
    /// Whether the record is done (may be committed).
    async fn deliver(&self, record: &Record, stop: &CancellationToken) -> bool {
        match self.ctx.dispatcher.deliver(&record.event, stop).await {
            Delivery::Delivered(_) => true,
            Delivery::Cancelled => false,
            Delivery::Failed(failure) => self.give_up(record, failure, stop).await,
        }
    }

    async fn give_up(&self, record: &Record, failure: Failure, stop: &CancellationToken) -> bool {
        let trigger = &self.ctx.spec.name;
        let Some(dead_letter) = &self.dead_letter else {
            tracing::warn!(
                trigger,
                event = record.event.id,
                status = failure.status,
                "kafka record dropped after {} attempts (no dead-letter topic): {}",
                failure.attempts,
                failure.data
            );
            self.ctx.status.dropped();
            return true;
        };
        let mut event = record.event.clone();
        failure.annotate(&mut event, &self.ctx.dispatcher.destination());
        if !dead_letter.send(&event, record.key.as_deref(), stop, &self.ctx.status).await {
            return false;
        }
        tracing::info!(trigger, event = record.event.id, topic = dead_letter.topic, "kafka record dead-lettered");
        self.ctx.status.dead_lettered();
        true
    }
}

/// The dead-letter topic and its producer.
struct DeadLetter {
    topic: String,
    producer: FutureProducer,
}

impl DeadLetter {
    /// Writes `event` in CloudEvents' Kafka binary mode, retrying with backoff until the broker
    /// acknowledged it (true) or `stop` (false).
    async fn send(&self, event: &Event, key: Option<&[u8]>, stop: &CancellationToken, status: &TriggerStatus) -> bool {
        let mut backoff = Backoff::default();
        loop {
            let mut record =
                FutureRecord::<[u8], [u8]>::to(&self.topic).payload(&event.data[..]).headers(binary_headers(event));
            if let Some(key) = key {
                record = record.key(key);
            }
            match self.producer.send(record, PRODUCE_QUEUE_TIMEOUT).await {
                Ok(_) => return true,
                Err((e, _)) => status.error(format!("kafka: dead-letter topic {}: {e} (retrying)", self.topic)),
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(backoff.next()) => {}
            }
        }
    }
}

/// An event's attributes as Kafka headers: `ce_<attribute>`, and `content-type` for `datacontenttype`.
fn binary_headers(event: &Event) -> OwnedHeaders {
    let mut attributes: Vec<(Cow<'_, str>, &str)> = vec![
        ("ce_specversion".into(), "1.0"),
        ("ce_id".into(), &event.id),
        ("ce_source".into(), &event.source),
        ("ce_type".into(), &event.ty),
    ];
    attributes.extend(event.subject.as_deref().map(|s| ("ce_subject".into(), s)));
    attributes.extend(event.time.as_deref().map(|t| ("ce_time".into(), t)));
    attributes.extend(event.content_type.as_deref().map(|c| ("content-type".into(), c)));
    attributes.extend(event.extensions.iter().map(|(name, value)| (format!("ce_{name}").into(), value.as_str())));
    attributes.iter().fold(OwnedHeaders::new_with_capacity(attributes.len()), |headers, (key, value)| {
        headers.insert(Header { key: key.as_ref(), value: Some(*value) })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedMessage, Timestamp};

    fn message(key: Option<&str>, value: &str, headers: &[(&str, &str)]) -> OwnedMessage {
        let headers =
            headers.iter().fold(OwnedHeaders::new(), |h, &(key, value)| h.insert(Header { key, value: Some(value) }));
        OwnedMessage::new(
            Some(value.as_bytes().to_vec()),
            key.map(|k| k.as_bytes().to_vec()),
            "orders".into(),
            Timestamp::CreateTime(1_700_000_000_123),
            3,
            564,
            Some(headers),
        )
    }

    #[test]
    fn kafka_records_become_knative_events() {
        let m = message(Some("k1"), "{}", &[("Content-Type", "Application/JSON"), ("X-Trace_Id", "t1")]);
        let e = to_event("shop", &m);
        assert_eq!(e.id, "partition:3/offset:564");
        assert_eq!(e.source, "/apis/v1/namespaces/default/kafkasources/shop#orders");
        assert_eq!(e.ty, "dev.knative.kafka.event");
        assert_eq!(e.subject.as_deref(), Some("partition:3#564"));
        assert_eq!(e.time.as_deref(), Some("2023-11-14T22:13:20.123Z"));
        assert_eq!(e.content_type.as_deref(), Some("application/json"));
        assert_eq!(&e.data[..], b"{}");
        for (name, value) in [
            ("key", "k1"),
            ("partitionkey", "k1"),
            ("kafkaheadercontenttype", "Application/JSON"),
            ("kafkaheaderxtraceid", "t1"),
            ("knativekafkapartition", "3"),
            ("knativekafkaoffset", "564"),
        ] {
            assert_eq!(e.extension(name), Some(value), "{name}");
        }
    }

    #[test]
    fn kafka_cloudevents_are_forwarded() {
        let ce = [("ce_specversion", "1.0"), ("ce_id", "a-1"), ("ce_source", "/s"), ("ce_type", "t"), ("ce_x", "y")];
        let e = to_event("shop", &message(None, "x", &ce));
        assert_eq!((e.id.as_str(), e.ty.as_str(), e.extension("x")), ("a-1", "t", Some("y")));
        assert_eq!(e.extension("knativekafkaoffset"), Some("564"));

        let json = r#"{"specversion":"1.0","id":"s-1","source":"/s","type":"t.s","data":{"a":1}}"#;
        let e = to_event("shop", &message(None, json, &[("content-type", "application/cloudevents+json")]));
        assert_eq!((e.id.as_str(), &e.data[..]), ("s-1", &br#"{"a":1}"#[..]));

        // Incomplete CloudEvents are converted like any record.
        let e = to_event("shop", &message(None, "x", &[("ce_id", "a-1")]));
        assert_eq!((e.id.as_str(), e.extension("kafkaheaderceid")), ("partition:3/offset:564", Some("a-1")));
    }

    #[test]
    fn kafka_commit_point_is_the_oldest_unfinished_offset() {
        let mut t = Tracker::default();
        assert_eq!(t.committable(), None);
        for offset in [5, 6, 9] {
            t.taken(offset);
        }
        assert_eq!((t.committable(), t.ahead()), (Some(5), 5));
        t.done(6);
        assert_eq!(t.committable(), Some(5));
        t.done(5);
        assert_eq!(t.committable(), Some(9));
        t.done(9);
        assert_eq!((t.committable(), t.ahead()), (Some(10), 0));
        assert_eq!(record_time(Some(-1)), None);
        assert_eq!(record_time(Some(i64::MAX)), None);
    }

    #[test]
    fn kafka_dead_letters_carry_every_attribute() {
        let mut e = to_event("shop", &message(Some("k1"), "v", &[("content-type", "text/plain")]));
        e.set_extension("knativeerrorcode", "500");
        let headers = binary_headers(&e);
        let find = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(find("ce_specversion").as_deref(), Some("1.0"));
        assert_eq!(find("ce_id").as_deref(), Some("partition:3/offset:564"));
        assert_eq!(find("content-type").as_deref(), Some("text/plain"));
        assert_eq!(find("ce_knativeerrorcode").as_deref(), Some("500"));
        assert_eq!(find("ce_partitionkey").as_deref(), Some("k1"));
    }
}

//! The activator: a revision's admission gate for `containerConcurrency`. While the revision has
//! capacity (ready replicas x containerConcurrency) a request passes at the cost of one
//! uncontended lock; past it (or at zero) the request waits in a bounded FIFO queue until a
//! slot frees or the autoscaler grants more replicas. Without a hard limit the gate is open and
//! costs one atomic load. Knative's semantics: overflow is 503 `pending request queue full`, a
//! wait beyond the revision's timeout is 504 `activator request timeout`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue is at its bound.
    QueueFull,
    /// Waited longer than the revision's timeout.
    Timeout,
}

pub(crate) struct Activator {
    /// No hard limit: every request passes.
    open: AtomicBool,
    state: Mutex<State>,
    queue_limit: usize,
}

struct State {
    capacity: usize,
    in_use: usize,
    waiters: VecDeque<oneshot::Sender<()>>,
}

/// A slot held by one request; released (or handed to the next waiter) on drop.
pub(crate) struct Slot<'a>(Option<&'a Activator>);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(activator) = self.0 {
            activator.release();
        }
    }
}

impl Activator {
    /// `capacity` None: no hard limit.
    pub(crate) fn new(capacity: Option<usize>, queue_limit: usize) -> Self {
        Self {
            open: AtomicBool::new(capacity.is_none()),
            state: Mutex::new(State { capacity: capacity.unwrap_or(0), in_use: 0, waiters: VecDeque::new() }),
            queue_limit,
        }
    }

    /// A slot now, or after waiting in the queue up to `timeout`. `on_queued` runs once if the
    /// request has to wait (the caller pokes the autoscaler there).
    pub(crate) async fn acquire(&self, timeout: Duration, on_queued: impl FnOnce()) -> Result<Slot<'_>, Refused> {
        if self.open.load(Ordering::Relaxed) {
            return Ok(Slot(None));
        }
        let receiver = {
            let mut state = self.state.lock().unwrap();
            if state.in_use < state.capacity && state.waiters.is_empty() {
                state.in_use += 1;
                return Ok(Slot(Some(self)));
            }
            if state.waiters.len() >= self.queue_limit {
                return Err(Refused::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            state.waiters.push_back(tx);
            rx
        };
        on_queued();
        let mut waiting = Waiting { activator: self, receiver, granted: false };
        match tokio::time::timeout(timeout, &mut waiting.receiver).await {
            Ok(Ok(())) => {
                waiting.granted = true;
                Ok(Slot(Some(self)))
            }
            // The sender is only dropped by `set_capacity(None)`: the gate opened.
            Ok(Err(_)) => {
                waiting.granted = true;
                Ok(Slot(None))
            }
            Err(_) => Err(Refused::Timeout),
        }
    }

    /// Sets the capacity (None: no hard limit) and lets queued requests in up to it.
    pub(crate) fn set_capacity(&self, capacity: Option<usize>) {
        let mut state = self.state.lock().unwrap();
        match capacity {
            None => {
                self.open.store(true, Ordering::Relaxed);
                // Dropping the senders lets every waiter through the open gate.
                state.waiters.clear();
            }
            Some(capacity) => {
                self.open.store(false, Ordering::Relaxed);
                state.capacity = capacity;
                state.hand_off();
            }
        }
    }

    /// Requests waiting now.
    pub(crate) fn queued(&self) -> usize {
        if self.open.load(Ordering::Relaxed) {
            return 0;
        }
        self.state.lock().unwrap().waiters.len()
    }

    fn release(&self) {
        let mut state = self.state.lock().unwrap();
        state.in_use -= 1;
        state.hand_off();
    }
}

impl State {
    /// Grants free slots to waiters in arrival order (skipping ones that gave up).
    fn hand_off(&mut self) {
        while self.in_use < self.capacity {
            let Some(waiter) = self.waiters.pop_front() else { return };
            if waiter.send(()).is_ok() {
                self.in_use += 1;
            }
        }
    }
}

/// A queued request; if it gives up after its slot was granted, the slot is released.
struct Waiting<'a> {
    activator: &'a Activator,
    receiver: oneshot::Receiver<()>,
    granted: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.granted {
            self.receiver.close();
            if let Ok(()) = self.receiver.try_recv() {
                self.activator.release();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn queues_past_capacity_and_hands_slots_over_in_order() {
        let a = Arc::new(Activator::new(Some(1), 2));
        let first = a.acquire(Duration::from_secs(5), || {}).await.unwrap();
        let (a2, a3) = (a.clone(), a.clone());
        let second = tokio::spawn(async move { a2.acquire(Duration::from_secs(5), || {}).await.map(|_| ()) });
        tokio::task::yield_now().await;
        let third = tokio::spawn(async move { a3.acquire(Duration::from_secs(5), || {}).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert_eq!(a.queued(), 2);
        assert_eq!(a.acquire(Duration::from_secs(5), || {}).await.err(), Some(Refused::QueueFull));
        drop(first);
        assert_eq!(second.await.unwrap(), Ok(()));
        assert_eq!(third.await.unwrap(), Ok(()));
        assert_eq!(a.state.lock().unwrap().in_use, 0);
    }

    #[tokio::test]
    async fn a_wait_past_the_timeout_is_refused_and_leaks_nothing() {
        let a = Activator::new(Some(0), 10);
        let mut poked = false;
        assert_eq!(a.acquire(Duration::from_millis(20), || poked = true).await.err(), Some(Refused::Timeout));
        assert!(poked);
        assert_eq!(a.queued(), 1, "the dead waiter is skipped at hand-off");
        a.set_capacity(Some(1));
        assert_eq!(a.state.lock().unwrap().in_use, 0);
        assert!(a.acquire(Duration::from_millis(20), || {}).await.is_ok());
    }

    #[tokio::test]
    async fn raising_capacity_or_opening_lets_waiters_in() {
        let a = Arc::new(Activator::new(Some(0), 10));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move { a.acquire(Duration::from_secs(5), || {}).await.is_ok() })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        a.set_capacity(Some(2));
        a.set_capacity(None);
        for w in waiters {
            assert!(w.await.unwrap());
        }
    }
}

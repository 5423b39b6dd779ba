//! [`Fanout`]: one request to replicas taken in order, with spares.
//!
//! A read asks only the replicas it needs up front. When one of them fails,
//! the next replica in the list is asked at once; when answers are still
//! missing after the speculative-retry delay, one more replica is asked for
//! each (Cassandra's speculative retry). Both the full-data gather and the
//! digest requests of a read use it.
//!
//! The requests are polled by the read that awaits them ([`Running`]), not
//! spawned as tasks of their own: a reply then wakes the read directly,
//! instead of waking a task that finishes and wakes the read, and a request
//! costs no task to spawn and tear down.

use crate::model::NodeId;
use crate::query::api::BoxFuture;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::Instant;

/// Requests in flight, each answering with a `T`, polled by whoever awaits
/// [`Running::next`] (they make progress only while someone does).
pub(super) struct Running<T> {
    pending: Vec<(NodeId, BoxFuture<'static, T>)>,
    /// Answers that came before anyone asked for them.
    ready: VecDeque<(NodeId, T)>,
}

impl<T> Running<T> {
    fn new() -> Self {
        Running {
            pending: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    /// Adds the request to `node` and polls it once at once, so that it is
    /// sent now rather than when the caller first awaits an answer (the
    /// caller may have other work first, such as its own replica's read).
    fn push(&mut self, node: NodeId, mut request: BoxFuture<'static, T>) {
        let mut cx = Context::from_waker(Waker::noop());
        match request.as_mut().poll(&mut cx) {
            Poll::Ready(answer) => self.ready.push_back((node, answer)),
            Poll::Pending => self.pending.push((node, request)),
        }
    }

    /// Requests not answered yet, or answered and not taken.
    pub(super) fn len(&self) -> usize {
        self.pending.len() + self.ready.len()
    }

    /// Whether every answer was taken.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next answer, in the order they come; `None` when none is left.
    pub(super) async fn next(&mut self) -> Option<(NodeId, T)> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(NodeId, T)>> {
        if let Some(answer) = self.ready.pop_front() {
            return Poll::Ready(Some(answer));
        }
        if self.pending.is_empty() {
            return Poll::Ready(None);
        }
        // A read has one to three requests out, so polling each is cheaper
        // than keeping track of which one was woken.
        for i in 0..self.pending.len() {
            if let Poll::Ready(answer) = self.pending[i].1.as_mut().poll(cx) {
                let (node, _) = self.pending.swap_remove(i);
                return Poll::Ready(Some((node, answer)));
            }
        }
        Poll::Pending
    }
}

/// Requests to `nodes` in their order; `send` makes the request to one.
pub(super) struct Fanout<'a, T, F> {
    nodes: &'a [NodeId],
    send: F,
    next: usize,
    running: Running<T>,
    delay: Duration,
    due: Instant,
    retries: &'a AtomicU64,
}

impl<'a, T, F> Fanout<'a, T, F>
where
    T: Send + 'static,
    F: Fn(NodeId) -> BoxFuture<'static, T>,
{
    /// Asks the first `initial` of `nodes` (at most all of them). `delay`
    /// is the speculative-retry delay (zero: none); every spare asked is
    /// counted in `retries`.
    pub(super) fn start(
        nodes: &'a [NodeId],
        initial: usize,
        delay: Duration,
        retries: &'a AtomicU64,
        send: F,
    ) -> Self {
        let mut fanout = Fanout {
            nodes,
            send,
            next: 0,
            running: Running::new(),
            delay,
            due: Instant::now() + delay,
            retries,
        };
        for _ in 0..initial.min(nodes.len()) {
            fanout.ask_next();
        }
        fanout
    }

    /// Asks the next node not asked yet; false when none is left.
    fn ask_next(&mut self) -> bool {
        let Some(&node) = self.nodes.get(self.next) else {
            return false;
        };
        self.next += 1;
        let request = (self.send)(node);
        self.running.push(node, request);
        true
    }

    /// Asks a spare node in place of one whose answer was no use.
    pub(super) fn replace(&mut self) {
        if self.ask_next() {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The next answer to come. While it waits, each time the delay passes
    /// it asks one more node for each of the `missing` answers still
    /// wanted. `None` when nothing is running and every node was asked.
    pub(super) async fn next(&mut self, missing: usize) -> Option<(NodeId, T)> {
        loop {
            if self.running.is_empty() {
                if !self.ask_next() {
                    return None;
                }
                continue;
            }
            let spare_left = self.next < self.nodes.len() && !self.delay.is_zero();
            tokio::select! {
                res = self.running.next() => {
                    if res.is_some() {
                        return res;
                    }
                }
                _ = tokio::time::sleep_until(self.due), if spare_left => {
                    for _ in 0..missing {
                        self.replace();
                    }
                    self.due = Instant::now() + self.delay;
                }
            }
        }
    }

    /// Answers that may still come: requests running (or answered and not
    /// taken) and nodes not asked yet.
    pub(super) fn left(&self) -> usize {
        self.running.len() + (self.nodes.len() - self.next)
    }

    /// The requests still running, for whoever collects late answers.
    pub(super) fn into_running(self) -> Running<T> {
        self.running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// Node 1 never answers, node 2 fails after 1 ms, node 3 answers after
    /// 1 ms; the asked nodes are recorded.
    fn send_with_log(
        asked: &Mutex<Vec<u64>>,
    ) -> impl Fn(NodeId) -> BoxFuture<'static, Result<u64, ()>> + '_ {
        move |n: NodeId| {
            asked.lock().push(n.0);
            Box::pin(async move {
                match n.0 {
                    1 => std::future::pending().await,
                    2 => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        Err(())
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        Ok(n.0)
                    }
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_node_is_covered_after_the_delay_and_a_failed_one_at_once() {
        let nodes = [NodeId(1), NodeId(2), NodeId(3)];
        let asked = Mutex::new(Vec::new());
        let retries = AtomicU64::new(0);
        let start = Instant::now();
        let mut fanout = Fanout::start(
            &nodes,
            1,
            Duration::from_millis(50),
            &retries,
            send_with_log(&asked),
        );
        assert_eq!(*asked.lock(), vec![1], "only the first node up front");
        assert_eq!(fanout.left(), 3, "one running, two not asked");
        // The delay passes: node 2 is asked, fails, and node 3 replaces it.
        let answer = loop {
            match fanout.next(1).await {
                Some((_, Ok(v))) => break v,
                Some((_, Err(()))) => fanout.replace(),
                None => panic!("ran out of nodes"),
            }
        };
        assert_eq!(answer, 3);
        assert_eq!(*asked.lock(), vec![1, 2, 3]);
        assert_eq!(retries.load(Ordering::Relaxed), 2);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_millis(60),
            "took {took:?}"
        );
        // Node 1 is still running; it is handed over.
        assert_eq!(fanout.into_running().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_delay_only_failures_ask_more_and_the_end_is_none() {
        let nodes = [NodeId(2), NodeId(2)];
        let asked = Mutex::new(Vec::new());
        let retries = AtomicU64::new(0);
        let mut fanout = Fanout::start(&nodes, 1, Duration::ZERO, &retries, send_with_log(&asked));
        assert!(matches!(fanout.next(1).await, Some((_, Err(())))));
        fanout.replace();
        assert!(matches!(fanout.next(1).await, Some((_, Err(())))));
        fanout.replace();
        assert_eq!(fanout.left(), 0);
        assert!(fanout.next(1).await.is_none(), "every node was asked");
        assert_eq!(asked.lock().len(), 2);
        assert_eq!(retries.load(Ordering::Relaxed), 1);
    }
}

//! Waiting for headroom instead of a 429 (`on_limit: queue`).
//!
//! A request rejected by a rule that queues joins that counter's queue and waits, for at
//! most the rule's `max_wait`, until it is admitted. Only the request at the head of a
//! queue asks the limiter again (when the rejection said headroom would be back, or after
//! a short poll for limits that free on release), so a queue costs one admission attempt at
//! a time, not one per waiter. The head is chosen fairly: consumers take turns, and each
//! consumer's requests go in arrival order, so a consumer with a thousand queued requests
//! delays another consumer's first request by at most one turn.
//!
//! Queues are per gateway instance; with the Redis policy the admission they retry is the
//! shared one, so instances share the headroom, each serving its own queue in order.

use super::admission::Check;
use super::rules::{Kind, QueueSpec, Scope};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// The queue a refused request may wait in: its counter (or its model's deployments) and
/// the rule that queues.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueTarget {
    pub key: Arc<str>,
    pub kind: Kind,
    pub scope: Scope,
    pub spec: QueueSpec,
    /// When the refusal said headroom would be back.
    pub retry_after_ms: u64,
}

impl QueueTarget {
    /// The queue of `check`'s rule under `key`, when the rule says `on_limit: queue`.
    pub fn of(check: &Check<'_>, key: Arc<str>, retry_after_ms: u64) -> Option<QueueTarget> {
        check.rule.queue.map(|spec| QueueTarget {
            key,
            kind: check.rule.algorithm(),
            scope: check.rule.scope,
            spec,
            retry_after_ms,
        })
    }

    /// How long the head of the queue waits before asking the limiter again: count and
    /// req limits say exactly when headroom is back; conn slots and token reservations
    /// come back when other requests end, so the head looks again within 25 ms.
    pub fn head_retry_in(&self) -> Duration {
        Duration::from_millis(match self.kind {
            Kind::Req | Kind::Count => self.retry_after_ms,
            Kind::Conn | Kind::Tokens | Kind::Spend => self.retry_after_ms.min(25),
        })
    }
}

/// Whether a newcomer joins a queue of `depth` waiters instead of trying first (so
/// headroom goes to the queue in order): someone waits and there is room.
pub fn join_instead_of_trying(depth: usize, spec: Option<QueueSpec>) -> bool {
    depth > 0 && spec.is_some_and(|s| depth < s.max_queue)
}

/// The key of the queue of requests waiting for any deployment of `model` (one queue per
/// model, whichever deployment's limit refused them).
pub fn deployments_key(model: &str) -> Arc<str> {
    format!("model:{model}/deployments").into()
}

/// All queues of this instance, by counter key.
#[derive(Default)]
pub struct Queues {
    map: Mutex<HashMap<Arc<str>, Arc<Queue>>>,
    ids: AtomicU64,
}

/// One counter's waiting requests.
#[derive(Default)]
pub struct Queue {
    state: Mutex<State>,
    /// Woken whenever the head changes.
    turn: Notify,
}

#[derive(Default)]
struct State {
    /// Consumers with waiting requests, in turn order.
    ring: VecDeque<Arc<str>>,
    waiting: HashMap<Arc<str>, VecDeque<u64>>,
    len: usize,
}

impl State {
    fn head(&self) -> Option<u64> {
        let c = self.ring.front()?;
        self.waiting.get(c)?.front().copied()
    }
}

/// A request's place in a queue; leaving (drop) hands the turn on.
pub struct Place {
    queue: Arc<Queue>,
    consumer: Arc<str>,
    id: u64,
}

impl Queues {
    /// Join the queue of `key` as `consumer`; `None` when `max_queue` requests already wait.
    /// Also returns the depth after joining.
    pub fn join(&self, key: &Arc<str>, consumer: Arc<str>, max_queue: usize) -> Option<Place> {
        let queue = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            // Forget idle queues now and then so that key churn cannot grow the map.
            if map.len() > 1024 {
                map.retain(|_, q| q.lock().len > 0);
            }
            map.entry(key.clone()).or_default().clone()
        };
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        {
            let mut s = queue.lock();
            if s.len >= max_queue {
                return None;
            }
            s.len += 1;
            let mine = s.waiting.entry(consumer.clone()).or_default();
            mine.push_back(id);
            if mine.len() == 1 {
                s.ring.push_back(consumer.clone());
            }
        }
        Some(Place {
            queue,
            consumer,
            id,
        })
    }
}

impl Queues {
    /// Requests waiting for `key` (a newcomer must queue behind them, not barge in).
    /// Every queue holding requests, with its depth.
    pub fn snapshot(&self) -> Vec<(Arc<str>, usize)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(k, q)| (k.clone(), q.lock().len))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub fn depth(&self, key: &str) -> usize {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).map_or(0, |q| q.lock().len)
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Place {
    /// Whether this request is the one to try next.
    pub fn is_head(&self) -> bool {
        self.queue.lock().head() == Some(self.id)
    }

    /// Requests waiting in this queue, this one included.
    pub fn depth(&self) -> usize {
        self.queue.lock().len
    }

    /// Wait until this request is at the head.
    pub async fn turn(&self) {
        loop {
            let notified = self.queue.turn.notified();
            if self.is_head() {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut s = self.queue.lock();
        let was_head = s.head() == Some(self.id);
        s.len -= 1;
        let now_empty = match s.waiting.get_mut(&self.consumer) {
            Some(mine) => {
                mine.retain(|id| *id != self.id);
                mine.is_empty()
            }
            None => false,
        };
        if now_empty {
            s.waiting.remove(&self.consumer);
            s.ring.retain(|c| *c != self.consumer);
        } else if was_head {
            // This consumer's turn is over: the next consumer goes first.
            s.ring.rotate_left(1);
        }
        drop(s);
        self.queue.turn.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_retries_when_headroom_is_due_or_polls_for_releases() {
        let t = |kind, retry_after_ms| QueueTarget {
            key: "k".into(),
            kind,
            scope: Scope::Route,
            spec: QueueSpec {
                max_wait: Duration::from_secs(1),
                max_queue: 4,
            },
            retry_after_ms,
        };
        assert_eq!(
            t(Kind::Count, 900).head_retry_in(),
            Duration::from_millis(900)
        );
        assert_eq!(t(Kind::Req, 40).head_retry_in(), Duration::from_millis(40));
        assert_eq!(
            t(Kind::Conn, 900).head_retry_in(),
            Duration::from_millis(25)
        );
        assert_eq!(t(Kind::Tokens, 5).head_retry_in(), Duration::from_millis(5));
        let spec = Some(t(Kind::Count, 0).spec);
        assert!(!join_instead_of_trying(0, spec), "nobody waits: try first");
        assert!(join_instead_of_trying(3, spec));
        assert!(
            !join_instead_of_trying(4, spec),
            "full: try, then be refused"
        );
        assert!(!join_instead_of_trying(3, None), "the rule does not queue");
        assert_eq!(&*deployments_key("gpt"), "model:gpt/deployments");
    }

    #[test]
    fn arrival_order_within_a_consumer_turns_across_consumers() {
        let qs = Queues::default();
        let key: Arc<str> = "model:m/rpm".into();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let a1 = qs.join(&key, a.clone(), 10).unwrap();
        let a2 = qs.join(&key, a.clone(), 10).unwrap();
        let a3 = qs.join(&key, a.clone(), 10).unwrap();
        let b1 = qs.join(&key, b.clone(), 10).unwrap();
        let b2 = qs.join(&key, b.clone(), 10).unwrap();
        assert_eq!(a1.depth(), 5);
        // Admission order: a1, b1, a2, b2, a3 (b does not wait for all of a's requests).
        let mut order = Vec::new();
        let mut places = vec![("a1", a1), ("a2", a2), ("a3", a3), ("b1", b1), ("b2", b2)];
        while !places.is_empty() {
            let heads: Vec<usize> = (0..places.len())
                .filter(|i| places[*i].1.is_head())
                .collect();
            assert_eq!(heads.len(), 1, "exactly one head");
            order.push(places.remove(heads[0]).0);
        }
        assert_eq!(order, vec!["a1", "b1", "a2", "b2", "a3"]);
    }

    #[test]
    fn bounded_and_leaving_early_keeps_order() {
        let qs = Queues::default();
        let key: Arc<str> = "k".into();
        let c: Arc<str> = "c".into();
        let p1 = qs.join(&key, c.clone(), 2).unwrap();
        let p2 = qs.join(&key, c.clone(), 2).unwrap();
        assert!(qs.join(&key, c.clone(), 2).is_none(), "max_queue 2");
        drop(p2); // timed out while waiting
        let p3 = qs.join(&key, c.clone(), 2).unwrap();
        assert!(p1.is_head() && !p3.is_head());
        drop(p1);
        assert!(p3.is_head());
    }

    #[tokio::test]
    async fn the_next_head_is_woken() {
        let qs = Queues::default();
        let key: Arc<str> = "k".into();
        let p1 = qs.join(&key, "x".into(), 5).unwrap();
        let p2 = qs.join(&key, "y".into(), 5).unwrap();
        let waiter = tokio::spawn(async move {
            p2.turn().await;
            p2.is_head()
        });
        tokio::task::yield_now().await;
        drop(p1);
        assert!(waiter.await.unwrap());
    }
}

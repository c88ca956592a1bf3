//! Group commit of admissions: one task per worker thread sends the admission calls,
//! at most [`MAX_IN_FLIGHT`] at a time, and admissions that arrive while they are all in
//! flight ride together in the next one. Under load a call carries many admissions, so
//! Redis pays the cost of entering the script, reading `TIME` and handling a command once
//! per call instead of once per request, and the gateway makes fewer round trips; when
//! idle, an admission goes out at once, alone. Several calls in flight keep a burst from
//! waiting behind one large call. On Redis Cluster (where each admission that reaches
//! here has every key on one node) the same holds per node ([`RedisStore::admit_loop_cluster`]):
//! each node has its own calls in flight and its own waiting admissions, so a node that
//! hangs holds back only the admissions of its keys. A node that answers that the map was
//! stale (`{-1}`, nothing changed) gives each admission of the call that answer, and each
//! is then retried slot by slot.
//!
//! Exactness is untouched: `admit.lua` decides the admissions of one call one after the
//! other, each exactly as if it had its own call, and the call is atomic.

use super::call::push_keys;
use super::*;
use tokio::sync::oneshot;

/// Admissions per call at most: a call's admissions all wait for its answer.
const MAX_PER_CALL: usize = 16;

/// Admission calls on their way at once (the connection pipelines them).
const MAX_IN_FLIGHT: usize = 4;

/// One admission waiting for a call: its arguments and keys in admit.lua's layout, and
/// whom to give its answer (its length first, then the answer).
pub(super) struct AdmitJob {
    args: Vec<Vec<u8>>,
    keys: Vec<String>,
    reply: oneshot::Sender<Result<Vec<i64>, RedisFault>>,
}

/// The queue of admissions waiting for the next call.
pub(super) type AdmitQueue = mpsc::UnboundedSender<AdmitJob>;

/// A cluster node's admissions: its calls on their way, and what waits for the next.
#[derive(Default)]
struct NodeQueue {
    in_flight: usize,
    waiting: Vec<AdmitJob>,
}

impl RedisStore {
    /// Decide one admission in the next call to Redis; its answer (length first).
    pub(super) async fn group_commit(
        &self,
        args: Vec<Vec<u8>>,
        keys: Vec<String>,
    ) -> Result<Vec<i64>, RedisFault> {
        let (reply, answer) = oneshot::channel();
        self.admission_queue()
            .ok_or_else(|| RedisFault("no admission lane on this thread".into()))?
            .send(AdmitJob { args, keys, reply })
            .map_err(|_| RedisFault("the admission queue is closed".into()))?;
        answer
            .await
            .map_err(|_| RedisFault("the admission queue dropped a request".into()))?
    }

    /// Send the queued admissions: at once while fewer than [`MAX_IN_FLIGHT`] calls are
    /// on their way, else together in the next call; on the lane's connection `via`.
    pub(super) async fn admit_loop(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<AdmitJob>,
        via: Conn,
    ) {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        while let Some(first) = rx.recv().await {
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return;
            };
            let mut jobs = vec![first];
            while jobs.len() < MAX_PER_CALL {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let (store, via) = (self.clone(), via.clone());
            tokio::spawn(async move {
                store.admit_run(&via, jobs).await;
                drop(permit);
            });
        }
    }

    /// [`Self::admit_loop`] on a cluster: per node (as the cluster map says), at once while
    /// fewer than [`MAX_IN_FLIGHT`] of its calls are on their way, else together in its
    /// next call. The cluster connection `via` routes each call to its node.
    pub(super) async fn admit_loop_cluster(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<AdmitJob>,
        via: Conn,
    ) {
        let (done, mut finished) = mpsc::unbounded_channel::<u32>();
        let mut nodes: HashMap<u32, NodeQueue> = HashMap::new();
        loop {
            tokio::select! {
                job = rx.recv() => {
                    let Some(job) = job else { return };
                    self.queue(&mut nodes, job);
                    while let Ok(job) = rx.try_recv() {
                        self.queue(&mut nodes, job);
                    }
                }
                Some(node) = finished.recv() => {
                    if let Some(q) = nodes.get_mut(&node) {
                        q.in_flight = q.in_flight.saturating_sub(1);
                    }
                }
            }
            for (&node, q) in nodes.iter_mut() {
                while q.in_flight < MAX_IN_FLIGHT && !q.waiting.is_empty() {
                    let n = q.waiting.len().min(MAX_PER_CALL);
                    let jobs: Vec<AdmitJob> = q.waiting.drain(..n).collect();
                    q.in_flight += 1;
                    let (store, via, done) = (self.clone(), via.clone(), done.clone());
                    tokio::spawn(async move {
                        store.admit_run(&via, jobs).await;
                        let _ = done.send(node);
                    });
                }
            }
            // Bounded by the nodes (and slots the map does not know) with work.
            nodes.retain(|_, q| q.in_flight > 0 || !q.waiting.is_empty());
        }
    }

    /// Queue `job` for the node of its keys.
    fn queue(&self, nodes: &mut HashMap<u32, NodeQueue>, job: AdmitJob) {
        let node = self.node_of(job.keys.first().map_or("", String::as_str));
        nodes.entry(node).or_default().waiting.push(job);
    }

    /// One call of admit.lua for `jobs`, with the token blocks and rate shares waiting for
    /// its node; each job gets its answer (or the call's fault).
    async fn admit_run(&self, via: &Conn, jobs: Vec<AdmitJob>) {
        let first = jobs.first().and_then(|j| j.keys.first());
        let riding = first.map_or_else(Vec::new, |k| self.riding(k));
        let mut inv = self.admit.prepare_invoke();
        if !riding.is_empty() {
            inv.arg("r").arg(riding.len());
            for r in &riding {
                inv.arg(r.kind).arg(&r.member).arg(r.window_ms).arg(r.used);
            }
        }
        inv.arg(jobs.len());
        for job in &jobs {
            for a in &job.args {
                inv.arg(a.as_slice());
            }
        }
        let keys = riding
            .iter()
            .flat_map(|r| [r.key.as_str(), r.zset.as_str()])
            .chain(jobs.iter().flat_map(|j| j.keys.iter().map(String::as_str)));
        push_keys(self.policy == LimitPolicy::RedisCluster, &mut inv, keys);
        let out = self.call_via::<Vec<i64>>(Some(via), "admit", &inv).await;
        if matches!(out.as_deref(), Ok([-1])) {
            // A key on another node than the map said: nothing was decided, nothing
            // given back (they go in a release call of their own).
            if !riding.is_empty() {
                self.send_release(ReleaseMsg::now(riding, None));
            }
            for job in jobs {
                let _ = job.reply.send(Ok(vec![-1]));
            }
            return;
        }
        if out.is_ok() && !riding.is_empty() {
            let returned = self
                .metrics
                .blocks_returned
                .with_label_values(&["admission"]);
            returned.inc_by(riding.iter().filter(|r| r.is_token_block()).count() as u64);
        }
        let answers = out.and_then(|out| {
            split(out, jobs.len())
                .ok_or_else(|| RedisFault("unexpected answer from admit.lua".into()))
        });
        match answers {
            Ok(answers) => {
                for (job, answer) in jobs.into_iter().zip(answers) {
                    let _ = job.reply.send(Ok(answer));
                }
            }
            Err(fault) => {
                for job in jobs {
                    let _ = job.reply.send(Err(fault.clone()));
                }
            }
        }
    }
}

/// Cut admit.lua's answer into the `n` admissions' answers, each with its length first.
fn split(out: Vec<i64>, n: usize) -> Option<Vec<Vec<i64>>> {
    let mut answers = Vec::with_capacity(n);
    let mut rest = out.as_slice();
    while let Some(&len) = rest.first() {
        let len = usize::try_from(len).ok()?;
        let one = rest.get(..=len)?;
        answers.push(one.to_vec());
        rest = &rest[len + 1..];
    }
    (answers.len() == n).then_some(answers)
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn answers_are_cut_at_their_lengths() {
        let out = vec![3, 0, 0, 1, 2, 5, 6];
        assert_eq!(split(out, 2), Some(vec![vec![3, 0, 0, 1], vec![2, 5, 6]]));
        // Too few, too many, a length past the end, a negative length.
        assert_eq!(split(vec![1, 9], 2), None);
        assert_eq!(split(vec![1, 9, 1, 8], 1), None);
        assert_eq!(split(vec![4, 1], 1), None);
        assert_eq!(split(vec![-1], 1), None);
    }
}

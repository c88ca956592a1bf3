//! The calls of one admission: one `EVALSHA` of `lua-compat/admit.lua` when every key of the
//! request lives in one slot (always on a single Redis), or — on Redis Cluster, where the
//! counters of unrelated consumers, models and deployments live on different slots — one
//! call per slot, in a fixed order, with compensation.
//!
//! ## Why the spread admission is exact
//!
//! Each counter is only ever read and written by `admit.lua` in one atomic call on the node
//! that owns it, so no counter ever admits past its limit: a request is admitted only when
//! every one of its calls admitted it. The calls follow `admit.lua`'s own order within a
//! group (every conn check, then tokens, count, req), checks of one slot sharing a call
//! where that order allows, so what a rejected request leaves behind is what the single
//! call leaves: the conn leases and token reservations it took are given back (the earlier
//! calls' ones through the release path, before the refusal is answered), and the counts
//! and leaky buckets that admitted it before the rejecting check keep it (APISIX's
//! semantics, where each limit plugin counts on its own). The checks keep the single
//! call's exact order, so the same checks have run when one refuses. Alternatives are
//! tried one after another, each exactly as above, and the first one admitted is chosen.
//!
//! What differs from one atomic call: between two calls of one request another request may
//! see the first call's lease or reservation, which is given back a round trip later if
//! the request is then rejected. That can refuse a request a single call would have
//! admitted (never the reverse), for one round trip, and only near a limit.

use super::topology::slot;
use super::*;

/// What one admission sends: the lease, the estimates, every check (in group order)
/// and its two keys, and the quota lease each check asks for (fixed-window counts only;
/// see [`crate::limits::lease`]).
pub(super) struct AdmitCall<'c, 'r> {
    pub(super) lease: &'c str,
    pub(super) estimate: Estimate,
    pub(super) checks: &'c [&'c Check<'r>],
    pub(super) keys: &'c [(String, String)],
    pub(super) wants: &'c [u64],
}

/// What an admitted check holds in Redis: a conn lease or a token reservation.
pub(super) struct LeaseOf {
    pub(super) kind: u8,
    pub(super) member: String,
    pub(super) window_ms: u64,
    pub(super) tokens: u64,
}

impl AdmitCall<'_, '_> {
    /// What check `c` holds once admitted, given its answer (`None`: count and req checks
    /// hold nothing).
    pub(super) fn lease_of(&self, c: &Check<'_>, answer: &CheckAnswer) -> Option<LeaseOf> {
        match c.kind {
            RuleKind::Conn(_) => Some(LeaseOf {
                kind: Release::CONN,
                member: self.lease.to_string(),
                window_ms: 0,
                tokens: 0,
            }),
            RuleKind::Tokens(l, _) | RuleKind::Spend(l) => {
                let tokens = self.own_tokens(c, answer);
                // With a block granted, the request's reservation is in the block's member
                // (admit.lua); held as the request's own only when the block is not kept
                // as a lease (see RedisStore::record_grants).
                let member = match answer.granted {
                    0 => format!("{}|{tokens}", self.lease),
                    w => format!("{}#t|{}", self.lease, w.saturating_add(tokens)),
                };
                Some(LeaseOf {
                    kind: Release::TOKENS,
                    member,
                    window_ms: l.window_ms,
                    tokens,
                })
            }
            _ => None,
        }
    }

    /// The tokens (or micro-dollars) token check `c` reserved for the request itself.
    /// `any_left` reserves what was left (the remaining it reports), up to the estimate;
    /// see TokenLimit::reserve.
    pub(super) fn own_tokens(&self, c: &Check<'_>, answer: &CheckAnswer) -> u64 {
        let (RuleKind::Tokens(l, _) | RuleKind::Spend(l)) = c.kind else {
            return 0;
        };
        let cap = match (l.any_left, answer.remaining) {
            (true, Some(left)) => left,
            _ => l.limit,
        };
        self.estimate.of(&c.kind).min(cap)
    }
}

impl RedisStore {
    /// Whether the keys of one admission live on several cluster slots.
    pub(super) fn spans_slots<'k>(&self, keys: impl Iterator<Item = &'k str>) -> bool {
        self.policy == LimitPolicy::RedisCluster && !one_slot(keys)
    }

    /// Whether the cluster map puts every key on one node.
    pub(super) fn one_node<'k>(&self, keys: impl Iterator<Item = &'k str>) -> bool {
        let map = self.topology.load();
        let mut nodes = keys.map(|k| map.node(slot(k)));
        let first = nodes.next().flatten();
        first.is_some() && nodes.all(|n| n == first)
    }

    /// Split `items` into runs whose keys share a cluster slot (one run off a cluster).
    pub(super) fn by_slot<T>(&self, items: Vec<T>, key: impl Fn(&T) -> &str) -> Vec<Vec<T>> {
        self.runs(items, |item| u32::from(slot(key(item))))
    }

    /// Split `items` into runs whose keys one node owns, as the cluster map says (a key of
    /// a slot the map does not know gets a run of its slot); one run off a cluster.
    pub(super) fn by_node<T>(&self, items: Vec<T>, key: impl Fn(&T) -> &str) -> Vec<Vec<T>> {
        self.runs(items, |item| self.node_of(key(item)))
    }

    /// The node that owns `key` as the cluster map says (a slot the map does not know: a
    /// number of its own, past every node's).
    pub(super) fn node_of(&self, key: &str) -> u32 {
        let s = slot(key);
        let map = self.topology.load();
        map.node(s).map_or(1 << 16 | u32::from(s), |n| n as u32)
    }

    fn runs<T>(&self, items: Vec<T>, owner: impl Fn(&T) -> u32) -> Vec<Vec<T>> {
        if self.policy != LimitPolicy::RedisCluster {
            return vec![items];
        }
        let mut runs: Vec<(u32, Vec<T>)> = Vec::new();
        for item in items {
            let o = owner(&item);
            match runs.iter_mut().find(|(r, _)| *r == o) {
                Some((_, run)) => run.push(item),
                None => runs.push((o, vec![item])),
            }
        }
        runs.into_iter().map(|(_, run)| run).collect()
    }

    /// One `EVALSHA` of admit.lua for `groups` (indexes into `call.checks`); `None` when
    /// the keys span slots and one of them is not on the node the cluster map said.
    pub(super) async fn admit_once(
        &self,
        call: &AdmitCall<'_, '_>,
        groups: &[Vec<usize>],
    ) -> Result<Option<AdmitAnswer>, RedisFault> {
        let n_checks: usize = groups.iter().map(Vec::len).sum();
        let mut args: Vec<Vec<u8>> = Vec::with_capacity(4 + groups.len() + 6 * n_checks);
        fn push<T: redis::ToRedisArgs>(args: &mut Vec<Vec<u8>>, v: T) {
            args.extend(v.to_redis_args());
        }
        push(&mut args, call.lease);
        push(&mut args, self.lease_life_ms);
        push(&mut args, call.estimate.tokens);
        push(&mut args, groups.len());
        for g in groups {
            push(&mut args, g.len());
        }
        for &i in groups.iter().flatten() {
            let c = call.checks[i];
            let a = &mut args;
            match c.kind {
                RuleKind::Req(l) => {
                    push(a, 1);
                    push(a, l.rate);
                    push(a, l.burst);
                    push(a, u8::from(l.nodelay));
                }
                RuleKind::Conn(l) => {
                    push(a, 2);
                    push(a, l.conn);
                    push(a, l.burst);
                    push(a, l.default_conn_delay_ms);
                }
                RuleKind::Count(l) => {
                    push(a, 3);
                    push(a, l.count);
                    push(a, l.window_ms);
                    push(a, u8::from(l.sliding));
                }
                RuleKind::Tokens(l, _) => {
                    push(a, 4);
                    push(a, l.limit);
                    push(a, l.window_ms);
                    push(a, u8::from(l.any_left));
                }
                RuleKind::Spend(l) => {
                    push(a, 5);
                    push(a, l.limit);
                    push(a, l.window_ms);
                    push(a, call.estimate.spend_micro_usd);
                }
            }
            push(&mut args, c.yield_to.unwrap_or(-1.0));
            push(&mut args, call.wants.get(i).copied().unwrap_or(0));
        }
        let keys = groups.iter().flatten().flat_map(|&i| {
            let (key, second) = &call.keys[i];
            [key.as_str(), second.as_str()]
        });
        let out = if self.policy == LimitPolicy::RedisCluster && self.admission_queue().is_none() {
            // No lane here: a call of its own to the node of its keys.
            let mut inv = self.admit.prepare_invoke();
            inv.arg(1);
            for a in &args {
                inv.arg(a.as_slice());
            }
            push_keys(true, &mut inv, keys);
            self.call::<Vec<i64>>("admit", &inv).await?
        } else {
            self.group_commit(args, keys.map(str::to_string).collect())
                .await?
        };
        if out == [-1] {
            // A key lives on another node than the cluster map said.
            self.topology_stale();
            return Ok(None);
        }
        // One admission's answer, after its length.
        out.get(1..)
            .filter(|answer| usize::try_from(out[0]).ok() == Some(answer.len()))
            .and_then(|answer| AdmitAnswer::decode(answer, groups.len(), n_checks))
            .map(|a| Some(a.globalize(groups, call.checks.len())))
            .ok_or_else(|| RedisFault("unexpected answer from admit.lua".into()))
    }

    /// The admission of checks spread over several slots (see the module's doc): the
    /// required group, then each alternative until one is admitted, each group in calls
    /// of one slot. The answer has the single call's shape.
    pub(super) async fn admit_spread(
        &self,
        call: &AdmitCall<'_, '_>,
        groups: &[Vec<usize>],
    ) -> Result<AdmitAnswer, RedisFault> {
        let mut answer = AdmitAnswer {
            chosen: 0,
            delay_ms: 0,
            groups: groups
                .iter()
                .map(|_| GroupAnswer {
                    passed: false,
                    rejected_by: None,
                    retry_after_ms: 1,
                })
                .collect(),
            checks: vec![CheckAnswer::NONE; call.checks.len()],
        };
        let Some(required) = groups.first() else {
            return Ok(answer);
        };
        let Some(delay) = self.group_spread(call, required, 0, &mut answer).await? else {
            return Ok(answer);
        };
        answer.delay_ms = delay;
        for (g, group) in groups.iter().enumerate().skip(1) {
            if let Some(d) = self.group_spread(call, group, g, &mut answer).await? {
                answer.chosen = g;
                answer.delay_ms = answer.delay_ms.max(d);
                break;
            }
        }
        Ok(answer)
    }

    /// One group over its slots: `Some(delay)` when admitted. Fills the group's verdict
    /// and its checks' answers in `answer`.
    async fn group_spread(
        &self,
        call: &AdmitCall<'_, '_>,
        group: &[usize],
        g: usize,
        answer: &mut AdmitAnswer,
    ) -> Result<Option<u64>, RedisFault> {
        let mut taken: Vec<Release> = Vec::new();
        let mut delay = 0;
        for chunk in slot_calls(call, group) {
            let one = match self.admit_once(call, std::slice::from_ref(&chunk)).await {
                Ok(Some(one)) => one,
                // A chunk's keys share a slot: the script never refuses them.
                Ok(None) => {
                    self.give_back(taken).await;
                    return Err(RedisFault("admit.lua refused keys of one slot".into()));
                }
                Err(fault) => {
                    self.give_back(taken).await;
                    return Err(fault);
                }
            };
            for &i in &chunk {
                answer.checks[i] = one.checks[i];
            }
            let verdict = &one.groups[0];
            if !verdict.passed {
                self.give_back(taken).await;
                answer.groups[g] = GroupAnswer {
                    passed: false,
                    rejected_by: verdict.rejected_by,
                    retry_after_ms: verdict.retry_after_ms,
                };
                return Ok(None);
            }
            delay = delay.max(one.delay_ms);
            for &i in &chunk {
                // A token block granted with the request's reservation in it stays a
                // lease of this instance (recorded whatever the group's verdict): only
                // the request's own share of it is given back, locally.
                let folded = answer.checks[i].granted > 0
                    && matches!(
                        call.checks[i].kind,
                        RuleKind::Tokens(..) | RuleKind::Spend(_)
                    );
                if folded {
                    continue;
                }
                if let Some(l) = call.lease_of(call.checks[i], &answer.checks[i]) {
                    let (key, zset) = &call.keys[i];
                    taken.push(Release {
                        kind: l.kind,
                        key: key.clone(),
                        zset: zset.clone(),
                        member: l.member,
                        window_ms: l.window_ms,
                        used: 0,
                    });
                }
            }
        }
        answer.groups[g] = GroupAnswer {
            passed: true,
            rejected_by: None,
            retry_after_ms: 1,
        };
        Ok(Some(delay))
    }

    /// Give back leases and reservations taken by the earlier calls of a rejected group,
    /// and wait until they are (one round trip): the client's next request sees them free.
    async fn give_back(&self, taken: Vec<Release>) {
        if !taken.is_empty() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.send_release(ReleaseMsg::now(taken, Some(tx)));
            // The release call has the Redis timeout; if it fails the leases expire.
            let _ = rx.await;
        }
    }
}

/// Whether `keys` share one cluster slot.
pub(super) fn one_slot<'k>(mut keys: impl Iterator<Item = &'k str>) -> bool {
    let first = keys.next().map(slot);
    keys.all(|k| Some(slot(k)) == first)
}

/// Pass `keys` to a script, after every other argument: declared off a cluster or when they
/// share a slot; else only the first is declared (it routes the call to its node) and all
/// of them follow the arguments, for the script to probe and use (keys of several slots
/// of one node).
pub(super) fn push_keys<'k>(
    cluster: bool,
    inv: &mut redis::ScriptInvocation<'_>,
    keys: impl Iterator<Item = &'k str> + Clone,
) {
    if !cluster || one_slot(keys.clone()) {
        for k in keys {
            inv.key(k);
        }
    } else {
        let mut all = keys.peekable();
        if let Some(first) = all.peek() {
            inv.key(*first);
        }
        for k in all {
            inv.arg(k);
        }
    }
}

/// The calls of one group: its checks in admit.lua's order (every conn check, then tokens,
/// count, req; in the group's order within each), consecutive checks of one slot in one
/// call. The order is kept exactly: a count that refuses stops the counts after it, as in
/// the single call.
fn slot_calls(call: &AdmitCall<'_, '_>, group: &[usize]) -> Vec<Vec<usize>> {
    plan_calls(
        group,
        |i| match call.checks[i].kind {
            RuleKind::Conn(_) => 0,
            RuleKind::Tokens(..) | RuleKind::Spend(_) => 1,
            RuleKind::Count(_) => 2,
            RuleKind::Req(_) => 3,
        },
        |i| slot(&call.keys[i].0),
    )
}

/// [`slot_calls`] over plain functions: `step` of a check in admit.lua's order, `slot` of
/// its keys.
fn plan_calls(
    group: &[usize],
    step: impl Fn(usize) -> u8,
    slot: impl Fn(usize) -> u16,
) -> Vec<Vec<usize>> {
    let mut ordered = group.to_vec();
    ordered.sort_by_key(|&i| step(i)); // stable: the group's order within a step
    let mut calls: Vec<(u16, Vec<usize>)> = Vec::new();
    for i in ordered {
        let slot = slot(i);
        match calls.last_mut() {
            Some((s, run)) if *s == slot => run.push(i),
            _ => calls.push((slot, vec![i])),
        }
    }
    calls.into_iter().map(|(_, run)| run).collect()
}

/// `admit.lua`'s answer, decoded: `{chosen, delay_ms, (passed, rejecting check,
/// retry_after_ms) per group, (remaining, reset_ms, lease granted) per check, Redis time}`.
pub(super) struct AdmitAnswer {
    /// The alternative admitted (1-based; 0: none, or no alternatives).
    pub(super) chosen: usize,
    pub(super) delay_ms: u64,
    pub(super) groups: Vec<GroupAnswer>,
    pub(super) checks: Vec<CheckAnswer>,
}

/// One group's verdict.
pub(super) struct GroupAnswer {
    pub(super) passed: bool,
    /// The check that refused it, when it did not pass: 0-based within the group as
    /// decoded, an index of `AdmitCall::checks` once [`AdmitAnswer::globalize`]d.
    pub(super) rejected_by: Option<usize>,
    pub(super) retry_after_ms: u64,
}

/// One check's quota, when it has one (count and token rules).
#[derive(Clone, Copy)]
pub(super) struct CheckAnswer {
    pub(super) remaining: Option<u64>,
    pub(super) reset_ms: u64,
    /// The quota lease granted with it (see [`crate::limits::lease`]).
    pub(super) granted: u64,
    /// Redis time (ms) of the call that decided it: `+ reset_ms` is its window's end.
    pub(super) redis_now: u64,
}

impl CheckAnswer {
    /// The answer of a check the call did not carry.
    pub(super) const NONE: CheckAnswer = CheckAnswer {
        remaining: None,
        reset_ms: 0,
        granted: 0,
        redis_now: 0,
    };
}

impl AdmitAnswer {
    /// The answer to the call's `groups` (indexes of `n` checks; a call may leave some
    /// out) indexed as the call's checks: each check's answer at its index (unsent ones
    /// answered [`CheckAnswer::NONE`]), each refusing check by its index.
    pub(super) fn globalize(mut self, groups: &[Vec<usize>], n: usize) -> AdmitAnswer {
        let mut checks = vec![CheckAnswer::NONE; n];
        for (&i, a) in groups.iter().flatten().zip(&self.checks) {
            checks[i] = *a;
        }
        self.checks = checks;
        for (verdict, group) in self.groups.iter_mut().zip(groups) {
            verdict.rejected_by = verdict.rejected_by.and_then(|j| group.get(j).copied());
        }
        self
    }

    /// Decode the flat array; `None` when its shape is not the expected one.
    pub(super) fn decode(out: &[i64], n_groups: usize, n_checks: usize) -> Option<AdmitAnswer> {
        if out.len() != 3 + 3 * n_groups + 3 * n_checks {
            return None;
        }
        let (&redis_now, out) = out.split_last()?;
        let groups = out[2..2 + 3 * n_groups]
            .chunks_exact(3)
            .map(|g| GroupAnswer {
                passed: g[0] != 0,
                rejected_by: usize::try_from(g[1]).ok().and_then(|i| i.checked_sub(1)),
                retry_after_ms: g[2].max(1) as u64,
            })
            .collect();
        let checks = out[2 + 3 * n_groups..]
            .chunks_exact(3)
            .map(|c| CheckAnswer {
                remaining: u64::try_from(c[0]).ok(),
                reset_ms: c[1].max(0) as u64,
                granted: c[2].max(0) as u64,
                redis_now: redis_now.max(0) as u64,
            })
            .collect();
        let chosen = usize::try_from(out[0])
            .ok()
            .filter(|c| *c < n_groups.max(1))?;
        Some(AdmitAnswer {
            chosen,
            delay_ms: out[1].max(0) as u64,
            groups,
            checks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_keep_admit_lua_order_and_share_a_call_per_slot_run() {
        // (step, key) per check: a consumer count, a model conn + tokens + count, a
        // consumer req; keys tagged by entity.
        let checks = [
            (2, "{x:consumer:a}c"),
            (0, "{x:model:m}n"),
            (1, "{x:model:m}t"),
            (2, "{x:model:m}c"),
            (3, "{x:consumer:a}r"),
        ];
        let plan = plan_calls(&[0, 1, 2, 3, 4], |i| checks[i].0, |i| slot(checks[i].1));
        // conn, tokens (model) | count (consumer) | count (model) | req (consumer): the
        // consumer's count still runs before the model's, as in one call.
        assert_eq!(plan, vec![vec![1, 2], vec![0], vec![3], vec![4]]);
        // One slot: one call, in admit.lua's order.
        let same = plan_calls(&[0, 4], |i| checks[i].0, |_| slot("{k}"));
        assert_eq!(same, vec![vec![0, 4]]);
    }

    #[test]
    fn entities_hash_to_their_own_slots() {
        // Same tag, same slot, whatever follows the tag.
        assert_eq!(
            slot("{ai-rate-limiter:model:m}limit_conn:model:m/c"),
            slot("{ai-rate-limiter:model:m}plugin-limit-count:v1:model:m/rpm")
        );
        // Unrelated entities hash apart.
        assert_ne!(
            slot("{ai-rate-limiter:model:m}limit_conn:model:m/c"),
            slot("{ai-rate-limiter:consumer:a}limit_conn:consumer:a/c")
        );
    }
}

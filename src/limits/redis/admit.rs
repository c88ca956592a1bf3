//! The admission call in Redis: one `EVALSHA` of `lua-compat/admit.lua` for every rule of
//! a request, its answer decoded into named structs; and the usage read for the status
//! page.

use super::lease_hold::LeaseHold;
use super::*;

impl RedisStore {
    /// Evaluate one admission call in Redis (see `lua-compat/admit.lua`).
    pub async fn admit(
        self: &Arc<Self>,
        required: &[Check<'_>],
        alternatives: &[Vec<Check<'_>>],
        estimate: Estimate,
    ) -> Result<Result<Admitted, Denied>, RedisFault> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let lease = format!("{}:{seq}", self.instance);
        let groups: Vec<&[Check<'_>]> = std::iter::once(required)
            .chain(alternatives.iter().map(Vec::as_slice))
            .collect();
        // Every check once, in group order; a group is the indexes of its checks.
        let checks: Vec<&Check<'_>> = groups.iter().flat_map(|g| g.iter()).collect();
        let keys: Vec<(String, String)> = checks
            .iter()
            .map(|c| {
                let key = self.key(c.rule, &c.kind, &c.key);
                let second = match c.kind {
                    RuleKind::Tokens(..) | RuleKind::Spend(_) => format!("{key}:r"),
                    // The bucket's rate shares (see crate::limits::lease).
                    RuleKind::Req(_) => format!("{key}:s"),
                    _ => key.clone(),
                };
                (key, second)
            })
            .collect();
        let now = self.lease_now();
        if let Some(admitted) = self.admit_leased(required, alternatives, &keys, estimate, now) {
            return Ok(Ok(admitted));
        }
        let (wants, held) = self.lease_wants(&checks, &keys, estimate, now);
        if wants.iter().all(|w| *w == 0) {
            let waited = self.wait_for_lease(required, alternatives, &keys, estimate);
            if let Some(admitted) = waited.await {
                return Ok(Ok(admitted));
            }
        }
        let first = alternatives.first().map_or(0, Vec::len);
        let eligible = (required.len(), required.len() + first);
        let mut slots = self.take_free_slots(&checks, &keys, estimate, eligible);
        // Per check, whether its slot came from a block (the call leaves it out).
        let unsent = slots.as_mut().map(|s| std::mem::take(&mut s.checks));
        let sent = |i: &usize| unsent.as_ref().is_none_or(|u| !u[*i]);
        let mut members = Vec::with_capacity(groups.len());
        let mut next = 0;
        for g in &groups {
            members.push((next..next + g.len()).filter(sent).collect::<Vec<usize>>());
            next += g.len();
        }
        let call = AdmitCall {
            lease: &lease,
            estimate,
            checks: &checks,
            keys: &keys,
            wants: &wants,
        };
        // One atomic call when one node owns every key sent (always off a cluster); else,
        // or when the cluster map was stale, one call per slot.
        let sent_keys = || members.iter().flatten().map(|&i| keys[i].0.as_str());
        let once = match !self.spans_slots(sent_keys()) || self.one_node(sent_keys()) {
            true => self.admit_once(&call, &members).await?,
            false => None,
        };
        let mut answer = match once {
            Some(answer) => answer,
            None => self.admit_spread(&call, &members).await?,
        };
        let passed = answer.groups.first().is_some_and(|g| g.passed);
        let mut parts = slots.map_or_else(Vec::new, |s| s.keep(passed, answer.chosen == 1));
        // Per check, whether the request holds what it took there: the required group's
        // once it passed, and the chosen alternative's.
        let mut in_hold = vec![None; checks.len()];
        if passed {
            for (g, group) in members.iter().enumerate() {
                if g == 0 || g == answer.chosen {
                    group.iter().for_each(|&i| in_hold[i] = Some(g > 0));
                }
            }
        }
        let mut leased = self.record_grants(&call, &answer.checks, &in_hold, now);
        for (a, units) in answer.checks.iter_mut().zip(held) {
            if let Some(r) = a.remaining.as_mut() {
                *r = r.saturating_add(units);
            }
        }
        let bad = || RedisFault("unexpected answer from admit.lua".into());
        let n_groups = groups.len();
        let chosen = answer.chosen;
        let delay_ms = answer.delay_ms;
        // Quotas of a group, in the order the local store reports them (tokens, count).
        let quotas_of = |g: usize, base: usize| -> Vec<Quota> {
            let mut q = Vec::new();
            for want_tokens in [true, false] {
                for (i, c) in groups[g].iter().enumerate() {
                    let CheckAnswer {
                        remaining: Some(remaining),
                        reset_ms,
                        ..
                    } = answer.checks[base + i]
                    else {
                        continue;
                    };
                    let (budget, limit, header) = match c.kind {
                        RuleKind::Tokens(l, _) if want_tokens => {
                            (Budget::Tokens, l.limit, c.rule.answer.quota_header.clone())
                        }
                        RuleKind::Spend(l) if want_tokens => (Budget::Spend, l.limit, None),
                        RuleKind::Count(l) if !want_tokens => (
                            Budget::Requests,
                            l.count,
                            c.rule.answer.quota_header.clone(),
                        ),
                        _ => continue,
                    };
                    q.push(Quota {
                        budget,
                        limit,
                        remaining,
                        reset_ms,
                        apisix_header: header,
                    });
                }
            }
            q
        };
        let mut bases = Vec::with_capacity(n_groups);
        let mut b = 0;
        for g in &groups {
            bases.push(b);
            b += g.len();
        }
        let rejection = |g: usize| -> Result<Rejection, RedisFault> {
            let verdict = &answer.groups[g];
            let c = verdict
                .rejected_by
                .and_then(|i| checks.get(i).copied())
                .ok_or_else(bad)?;
            Ok(Rejection {
                rule: c.rule.id.clone(),
                budget: match c.kind {
                    RuleKind::Conn(_) => Budget::Concurrency,
                    RuleKind::Tokens(..) => Budget::Tokens,
                    RuleKind::Spend(_) => Budget::Spend,
                    _ => Budget::Requests,
                },
                retry_after_ms: verdict.retry_after_ms,
                quotas: quotas_of(g, bases[g]),
                alternative: g.checked_sub(1),
            })
        };
        if !answer.groups[0].passed {
            return Ok(Err(Denied::Limited(rejection(0)?)));
        }
        let mut quotas = quotas_of(0, 0);
        if chosen > 0 {
            quotas.extend(quotas_of(chosen, bases[chosen]));
        }
        // What the admitted groups hold: their conn leases and token reservations.
        let mut hold = RedisHold {
            store: self.clone(),
            seq,
            held: Vec::new(),
            leased: None,
        };
        let admitted: &[usize] = if chosen > 0 { &[0, chosen] } else { &[0] };
        for &g in admitted {
            for (i, c) in groups[g].iter().enumerate() {
                let (key, zset) = &keys[bases[g] + i];
                // Its reservation in a token block this instance keeps.
                if let Some(part) = leased.get_mut(bases[g] + i).and_then(Option::take) {
                    parts.push(part);
                    continue;
                }
                // A slot taken from a block: in `parts` already.
                if !sent(&(bases[g] + i)) {
                    continue;
                }
                let Some(lease_of) = call.lease_of(c, &answer.checks[bases[g] + i]) else {
                    continue;
                };
                let LeaseOf {
                    kind,
                    member,
                    window_ms,
                    tokens,
                } = lease_of;
                hold.held.push(Held {
                    alternative: g > 0,
                    kind,
                    key: key.clone(),
                    zset: zset.clone(),
                    member,
                    window_ms,
                    tokens,
                    charge: c.rule.charge(),
                });
            }
        }
        if !parts.is_empty() {
            hold.leased = Some(LeaseHold::new(self.clone(), parts));
        }
        if !hold.held.is_empty() {
            let live = hold
                .held
                .iter()
                .map(|h| (h.zset.clone(), h.member.clone()))
                .collect();
            self.lock_leases().insert(seq, live);
        }
        let ticket = Ticket {
            delay_ms,
            quotas,
            hold: Some(Box::new(hold)),
        };
        if n_groups > 1 && chosen == 0 {
            // Every alternative rejected: report the one that frees first; the required
            // group's part stays held by the caller.
            let mut best: Option<Rejection> = None;
            for g in 1..n_groups {
                let r = rejection(g)?;
                if best
                    .as_ref()
                    .is_none_or(|b| r.retry_after_ms < b.retry_after_ms)
                {
                    best = Some(r);
                }
            }
            let best = best.ok_or_else(bad)?;
            return Ok(Err(Denied::NoAlternative(best, Box::new(ticket))));
        }
        let mut skipped = Vec::new();
        for g in 1..chosen {
            skipped.push(rejection(g)?.rule);
        }
        Ok(Ok(Admitted {
            skipped,
            ticket,
            choice: if n_groups > 1 { Some(chosen - 1) } else { None },
        }))
    }

    /// How much of each scope-wide rule is in use now, read from Redis (for the status
    /// page): in the rule's unit (bucket excess in requests, slots, requests or tokens of
    /// the window). One pipelined round trip.
    pub async fn usage(&self, rules: &[&Rule]) -> Result<Vec<f64>, RedisFault> {
        let conn = self
            .conn
            .get()
            .ok_or_else(|| RedisFault("not connected yet".into()))?;
        let mut p = redis::pipe();
        p.cmd("TIME");
        for r in rules {
            let key = self.key(r, &r.kind, &r.id);
            match r.kind {
                RuleKind::Req(_) => p.cmd("HMGET").arg(&key).arg("excess").arg("last"),
                RuleKind::Conn(_) => p.cmd("ZRANGE").arg(&key).arg(0).arg(-1).arg("WITHSCORES"),
                // A sliding window shows its current window's count.
                RuleKind::Count(l) if l.sliding => p.cmd("HGET").arg(&key).arg("cur"),
                RuleKind::Count(_) => p.cmd("GET").arg(&key),
                RuleKind::Tokens(..) | RuleKind::Spend(_) => {
                    p.cmd("HMGET").arg(&key).arg("c").arg("e")
                }
            };
            if let RuleKind::Tokens(..) | RuleKind::Spend(_) = r.kind {
                p.cmd("ZRANGE")
                    .arg(format!("{key}:r"))
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES");
            }
        }
        let no_answer = |_| RedisFault("no answer".into());
        let out: Vec<redis::Value> = if self.policy == LimitPolicy::RedisCluster {
            // The keys live on several slots: one command at a time, each to its node.
            let mut out = Vec::with_capacity(p.len());
            for cmd in p.cmd_iter() {
                let v = tokio::time::timeout(self.timeout, conn.query(cmd))
                    .await
                    .map_err(no_answer)?
                    .map_err(|e| RedisFault(e.to_string()))?;
                out.push(v);
            }
            out
        } else {
            tokio::time::timeout(self.timeout, conn.pipe(&p))
                .await
                .map_err(no_answer)?
                .map_err(|e| RedisFault(e.to_string()))?
        };
        let mut it = out.into_iter();
        let (secs, micros): (i64, i64) = it
            .next()
            .and_then(|v| redis::from_redis_value(v).ok())
            .ok_or_else(|| RedisFault("TIME".into()))?;
        let now = (secs * 1000 + micros / 1000) as f64;
        let num = |v: Option<redis::Value>| -> Option<f64> {
            v.and_then(|v| redis::from_redis_value::<Option<String>>(v).ok().flatten())
                .and_then(|s| s.parse().ok())
        };
        // (member, score) pairs still live at `now`.
        let live = |v: Option<redis::Value>| -> Vec<(String, f64)> {
            v.and_then(|v| redis::from_redis_value::<Vec<(String, f64)>>(v).ok())
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, score)| *score > now)
                .collect()
        };
        // The two fields of an HMGET, as numbers.
        let two = |v: Option<redis::Value>| -> (Option<f64>, Option<f64>) {
            let pair: Vec<Option<String>> = v
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or_default();
            let get = |i: usize| {
                pair.get(i)
                    .cloned()
                    .flatten()
                    .and_then(|s| s.parse::<f64>().ok())
            };
            (get(0), get(1))
        };
        let mut used = Vec::with_capacity(rules.len());
        for r in rules {
            let u = match r.kind {
                RuleKind::Req(l) => match two(it.next()) {
                    (Some(e), Some(last)) => {
                        (e - l.rate * 1000.0 * (now - last).max(0.0) / 1000.0).max(0.0) / 1000.0
                    }
                    _ => 0.0,
                },
                RuleKind::Conn(_) => live(it.next()).len() as f64,
                RuleKind::Count(_) => num(it.next()).unwrap_or(0.0),
                RuleKind::Tokens(..) | RuleKind::Spend(_) => {
                    let committed = match two(it.next()) {
                        (Some(c), Some(end)) if end > now => c,
                        _ => 0.0,
                    };
                    let reserved: f64 = live(it.next())
                        .iter()
                        .filter_map(|(m, _)| m.rsplit('|').next()?.parse::<f64>().ok())
                        .sum();
                    committed + reserved
                }
            };
            used.push(u);
        }
        Ok(used)
    }
}

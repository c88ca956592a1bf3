//! Quota leases (src/limits/lease/) against a real redis-server: eight gateways spending
//! slices of one shared window admit exactly its count, with far fewer Redis calls than
//! requests; blocks of conn slots never let more requests run at once than the limit;
//! token blocks never let the fleet use more than the window's tokens; a gateway that
//! shuts down gives its unused units back to the window; a token block carries the
//! reservation of the request that asked for it; requests that miss while a lease is asked
//! for wait for it; a request decided in Redis takes its conn slot from the block.

mod common;
use common::redis::Redis;
use common::upstream::CountingUpstream;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "sk-lease";

fn yaml(redis: &Redis, count: u64) -> String {
    format!(
        r#"
server: {{threads: 1}}
logging: {{access_log: false}}
limits:
  policy: redis
  redis: {{url: "{url}", timeout: 300ms}}
  lease_ttl: 1s
consumers: [{{name: c, keys: ["{KEY}"]}}]
providers: [{{name: mock, kind: mock}}]
models:
  - {{name: m, deployments: [{{provider: mock}}], limits: [{{name: rpm, count: {{count: {count}, time_window: 60s}}}}]}}
"#,
        url = redis.url()
    )
}

/// Requests from `threads` threads, round robin over `gws`, for `secs`; the statuses.
fn traffic(gws: &[&Gw], threads: usize, secs: f64) -> Vec<u16> {
    answers(gws, "m", threads, secs, 0)
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

/// Requests for `model` (at most 16 completion tokens) from `threads` threads, round robin
/// over `gws`, for `secs`, each thread pausing `pace_ms` after each; each answer's status
/// and total tokens.
fn answers(gws: &[&Gw], model: &str, threads: usize, secs: f64, pace_ms: u64) -> Vec<(u16, u64)> {
    let urls: Vec<String> = gws.iter().map(|g| g.url("/v1/chat/completions")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (urls, stop) = (urls.clone(), stop.clone());
            let body = format!(
                r#"{{"model":"{model}","max_tokens":16,"messages":[{{"role":"user","content":"hi"}}]}}"#
            );
            std::thread::spawn(move || {
                let agent = agent();
                let mut out = Vec::new();
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let r = post_on(&agent, &urls[i % urls.len()], Some(KEY), &body);
                    let tokens = match r.status {
                        200 => r.json()["usage"]["total_tokens"].as_u64().unwrap_or(0),
                        _ => 0,
                    };
                    out.push((r.status, tokens));
                    i += 1;
                    std::thread::sleep(Duration::from_millis(pace_ms));
                }
                out
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

fn total(gws: &[&Gw], name: &str, labels: &[(&str, &str)]) -> f64 {
    gws.iter().map(|g| g.metric(name, labels)).sum()
}

#[test]
fn eight_gateways_spending_leases_admit_exactly_the_window() {
    let redis = Redis::start();
    // Large enough that the window lasts past the first second (leases are sized from the
    // previous second's traffic), small enough to be reached within the run.
    let limit = 2500;
    let cfg = yaml(&redis, limit);
    let gws: Vec<Gw> = (0..8).map(|_| Gw::start(&cfg)).collect();
    let all: Vec<&Gw> = gws.iter().collect();
    let started = Instant::now();
    let mut statuses = Vec::new();
    // Until the window is spent, then two more seconds in which every gateway keeps
    // getting requests (so every unit leased is spent or refused by its holder).
    while count(&statuses, 200) < limit as usize && started.elapsed() < Duration::from_secs(40) {
        statuses.extend(traffic(&all, 16, 1.0));
    }
    statuses.extend(traffic(&all, 16, 2.0));
    let admitted = count(&statuses, 200);
    assert_eq!(
        admitted,
        limit as usize,
        "{} requests, {} refused",
        statuses.len(),
        count(&statuses, 429)
    );
    assert_eq!(
        count(&statuses, 200) + count(&statuses, 429),
        statuses.len()
    );
    let leased = total(&all, "gateway_limiter_leased_total", &[]);
    let calls = total(
        &all,
        "gateway_redis_duration_seconds_count",
        &[("op", "admit")],
    );
    eprintln!(
        "{} requests in {:.1} s: {admitted} admitted, {leased} from leases, {calls} admission calls",
        statuses.len(),
        started.elapsed().as_secs_f64()
    );
    // Leases are in use. How many admissions they serve depends on how fast the traffic
    // runs (a key leases after a second of it): 26-32% here alone, 14.6% once under a
    // parallel CI. Only their absence is a failure.
    assert!(
        leased >= 0.05 * limit as f64,
        "{leased} admissions from leases"
    );
    // The counter in Redis is exactly what was admitted and what is still leased (nothing
    // once every holder has spent its units).
    for g in &all {
        g.wait_metric("gateway_limiter_lease_units", &[], 0.0);
    }
}

#[test]
fn a_gateway_that_stops_gives_its_unused_units_back() {
    let redis = Redis::start();
    let mut gw = Gw::start(&yaml(&redis, 1_000_000));
    let mut statuses = traffic(&[&gw], 4, 2.5);
    // The last grant may just have been spent: a request more takes the next one (the
    // counter is still hot).
    for _ in 0..20 {
        if gw.metric("gateway_limiter_lease_units", &[]) > 0.0 {
            break;
        }
        statuses.push(
            post(
                &gw.url("/v1/chat/completions"),
                Some(KEY),
                &chat_body("m", "hi", false),
            )
            .status,
        );
    }
    assert_eq!(count(&statuses, 200), statuses.len());
    let held = gw.metric("gateway_limiter_lease_units", &[]);
    assert!(
        held > 0.0,
        "a hot counter holds a lease ({} requests)",
        statuses.len()
    );
    // Counted in Redis: every admitted request and the units still held.
    assert!(redis.count_counter() > statuses.len() as u64);
    gw.signal(15); // SIGTERM: graceful shutdown
    assert!(gw.wait_exit(Duration::from_secs(15)).is_some());
    assert_eq!(redis.count_counter(), statuses.len() as u64);
}

#[test]
fn slot_blocks_never_run_more_requests_at_once_than_the_limit() {
    let redis = Redis::start();
    let up = CountingUpstream::start(Duration::from_millis(40));
    let cfg = with_counted(yaml(&redis, 1_000_000_000), &up).replace(
        "models:\n",
        "models:\n  - {name: c, deployments: [{provider: counted}], \
             limits: [{name: conc, conn: {conn: 24}}]}\n",
    );
    let gws: Vec<Gw> = (0..8).map(|_| Gw::start(&cfg)).collect();
    let all: Vec<&Gw> = gws.iter().collect();
    let out = answers(&all, "c", 40, 3.0, 0);
    let ok = out.iter().filter(|(s, _)| *s == 200).count();
    assert!(
        up.max_in_flight() <= 24,
        "{} requests ran at once upstream",
        up.max_in_flight()
    );
    assert!(out.iter().all(|(s, _)| [200, 429].contains(s)));
    assert_eq!(up.total(), ok);
    let leased = total(&all, "gateway_limiter_leased_total", &[]);
    eprintln!(
        "{} requests, {ok} admitted, {leased} from leases, at most {} at once",
        out.len(),
        up.max_in_flight()
    );
    assert!(leased > 0.0, "slot blocks served requests");
    // Idle blocks go back: every slot is free in Redis again.
    wait_every_slot_free(&redis);
    for g in &all {
        g.wait_metric("gateway_limiter_lease_units", &[], 0.0);
    }
}

/// `cfg` with a provider `counted` that sends to `up`, beside the mock.
fn with_counted(cfg: String, up: &CountingUpstream) -> String {
    cfg.replace(
        "providers: [{name: mock, kind: mock}]",
        &format!(
            "providers: [{{name: mock, kind: mock}}, {{name: counted, \
             kind: openai-compatible, base_url: \"{}\", api_key: sk-up}}]",
            up.base_url()
        ),
    )
}

/// The `slide` sliding window (of any entity) full: Redis refuses its next requests.
fn fill_the_sliding_window(redis: &Redis) {
    let window = redis.cmd(&["KEYS", "*slide*"]).unwrap_or_default();
    let window = window
        .lines()
        .find(|l| l.contains("slide"))
        .expect("the window's key");
    redis.cmd(&["HSET", window, "cur", "2000000000"]).unwrap();
}

/// Wait until every conn slot is free in Redis (idle slot blocks given back).
fn wait_every_slot_free(redis: &Redis) {
    wait_until("every slot given back", || {
        let keys = redis.cmd(&["KEYS", "*limit_conn:*"]).unwrap_or_default();
        keys.lines()
            .filter(|l| l.contains("limit_conn"))
            .all(|k| redis.cmd(&["ZCARD", k]).as_deref() == Some(":0\r\n"))
    });
}

/// Redis round trips of `op` the gateways made so far.
fn round_trips(gws: &[&Gw], op: &str) -> f64 {
    total(gws, "gateway_redis_duration_seconds_count", &[("op", op)])
}

#[test]
fn requests_decided_in_redis_take_their_conn_slot_from_the_block() {
    // A sliding window, which leases cannot serve, sends every request to Redis; the conn
    // limit beside it has a slot block. The call leaves the conn check out and the request
    // runs on a slot of the block: when it ends there is nothing to release in Redis.
    let redis = Redis::start();
    let up = CountingUpstream::start(Duration::from_millis(10));
    let cfg = with_counted(yaml(&redis, 1_000_000_000), &up).replace(
        "deployments: [{provider: mock}], limits: [{name: rpm, count: {count: 1000000000, \
             time_window: 60s}}]",
        "deployments: [{provider: counted}], limits: [{name: conc, conn: {conn: 64}}, \
             {name: slide, count: {count: 1000000000, time_window: 60s, window_type: sliding}}]",
    );
    assert!(cfg.contains("window_type: sliding"), "{cfg}");
    let gws: Vec<Gw> = (0..2).map(|_| Gw::start(&cfg)).collect();
    let all: Vec<&Gw> = gws.iter().collect();
    // The conn key turns hot and its block grows.
    let warm = answers(&all, "m", 8, 2.0, 0);
    assert!(warm.iter().all(|(s, _)| *s == 200));
    let (admits, releases) = (round_trips(&all, "admit"), round_trips(&all, "release"));
    let out = answers(&all, "m", 8, 2.0, 0);
    assert!(out.iter().all(|(s, _)| *s == 200));
    let admits = round_trips(&all, "admit") - admits;
    let releases = round_trips(&all, "release") - releases;
    eprintln!(
        "{} requests: {admits} admission calls, {releases} release calls",
        out.len()
    );
    assert!(admits > 100.0, "every request went to Redis");
    // Before, a release call for almost every request; what is left is blocks trimmed at
    // each tidy (every lease_ttl / 3 here) and requests that found their block full.
    assert!(
        releases * 3.0 < admits,
        "{releases} release calls for {admits} admission calls"
    );
    assert!(up.max_in_flight() <= 64);
    // The window full: Redis refuses the requests, and the slots they took from the block
    // go back to it. Idle blocks then go back to Redis: every slot free there again.
    fill_the_sliding_window(&redis);
    let refused = answers(&all, "m", 8, 1.0, 0);
    assert!(refused.iter().filter(|(s, _)| *s == 429).count() > 20);
    wait_every_slot_free(&redis);
}

#[test]
fn a_slot_taken_for_a_deployment_redis_passes_over_goes_back_to_its_block() {
    // The first deployment's conn check is served from its block while its sliding window
    // goes to Redis; once that window is full Redis chooses the second deployment, and
    // the slot taken for the first goes back.
    let redis = Redis::start();
    let up = CountingUpstream::start(Duration::from_millis(10));
    let cfg = with_counted(yaml(&redis, 1), &up).replace(
        "models:\n",
        "models:\n  - name: f\n    fallback: {on: [rate_limiting]}\n    deployments:\n      \
         - {provider: counted, priority: 1, limits: [{name: conc, conn: {conn: 64}}, {name: \
         slide, count: {count: 1000000000, time_window: 60s, window_type: sliding}}]}\n      \
         - {provider: counted, api_key: sk-other}\n",
    );
    assert!(cfg.contains("window_type: sliding"), "{cfg}");
    let gw = Gw::start(&cfg);
    let out = answers(&[&gw], "f", 8, 2.0, 0);
    assert!(out.iter().all(|(s, _)| *s == 200));
    let releases = round_trips(&[&gw], "release");
    let out = answers(&[&gw], "f", 8, 1.0, 0);
    assert!(out.iter().all(|(s, _)| *s == 200));
    let releases = round_trips(&[&gw], "release") - releases;
    assert!(
        releases * 3.0 < out.len() as f64,
        "{releases} release calls for {} requests",
        out.len()
    );
    fill_the_sliding_window(&redis);
    let out = answers(&[&gw], "f", 8, 1.0, 0);
    assert!(
        out.iter().all(|(s, _)| *s == 200),
        "the second deployment served"
    );
    wait_every_slot_free(&redis);
}

#[test]
fn token_blocks_never_let_the_fleet_use_more_than_the_window() {
    let redis = Redis::start();
    let limit = 120_000;
    // The route's request count (never reached) and token window, a deployment's conn
    // limit (never reached): leased admissions serve all three kinds at once.
    let cfg = yaml(&redis, 1_000_000_000)
        .replace(
            "limits: [{name: rpm, count: {count: 1000000000, time_window: 60s}}]",
            &format!(
                "limits: [{{name: rpm, count: {{count: 1000000000, time_window: 60s}}}}, \
             {{name: tpm, tokens: {{limit: {limit}, time_window: 60s}}}}]"
            ),
        )
        .replace(
            "deployments: [{provider: mock}]",
            "deployments: [{provider: mock, limits: [{name: conc, conn: {conn: 100000}}]}]",
        )
        .replace("kind: mock}", "kind: mock, mock: {completion_tokens: 16}}");
    let gws: Vec<Gw> = (0..8).map(|_| Gw::start(&cfg)).collect();
    let all: Vec<&Gw> = gws.iter().collect();
    let started = Instant::now();
    let mut out = Vec::new();
    while out.iter().all(|(s, _)| *s == 200) && started.elapsed() < Duration::from_secs(40) {
        out.extend(answers(&all, "m", 16, 1.0, 0));
    }
    out.extend(answers(&all, "m", 16, 1.0, 0));
    let used: u64 = out.iter().map(|(_, t)| t).sum();
    let leased = total(&all, "gateway_limiter_leased_total", &[]);
    eprintln!(
        "{} requests, {} admitted, {used} tokens used of {limit}, {leased} from leases",
        out.len(),
        out.iter().filter(|(s, _)| *s == 200).count()
    );
    assert!(
        used <= limit,
        "{used} tokens used past the limit of {limit}"
    );
    assert!(used >= limit / 2, "only {used} of {limit} tokens used");
    assert!(leased > 0.0, "token blocks served requests");
    for g in &all {
        g.wait_metric("gateway_limiter_lease_units", &[], 0.0);
    }
    // Blocks given back while requests kept coming rode their admission calls.
    let [riding, alone] = ["admission", "release"].map(|via| {
        total(
            &all,
            "gateway_limiter_blocks_returned_total",
            &[("via", via)],
        )
    });
    eprintln!("blocks back: {riding} riding admissions, {alone} in release calls");
    let [waited, sent] = ["leased", "redis"]
        .map(|o| total(&all, "gateway_limiter_lease_waits_total", &[("outcome", o)]));
    eprintln!("waits: {waited} leased, {sent} to redis");
    // Requests that missed while their key's lease ask was in flight waited for its
    // answer and were admitted from it, without a call of their own.
    assert!(
        waited > 0.0,
        "no request was admitted from a lease it waited for"
    );
    assert!(riding > 0.0, "no token block rode an admission call");
    // Every block back: the window has charged exactly what the answers used (the requests
    // that asked for blocks included: they were charged through them).
    let key = redis.cmd(&["KEYS", "*tpm"]).unwrap();
    let key = key.lines().last().unwrap().to_string();
    let committed = || -> u64 {
        let v = redis.cmd(&["HGET", &key, "c"]).unwrap();
        v.lines().last().unwrap().parse().unwrap()
    };
    let until = Instant::now() + Duration::from_secs(10);
    while committed() != used && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(committed(), used, "{key}");
}

#[test]
fn rate_shares_keep_the_fleet_within_the_bucket() {
    let redis = Redis::start();
    let (rate, burst) = (1000.0, 200.0);
    let cfg = yaml(&redis, 1_000_000_000).replace(
        "limits: [{name: rpm, count: {count: 1000000000, time_window: 60s}}]",
        &format!("limits: [{{name: rps, req: {{rate: {rate}, burst: {burst}, nodelay: true}}}}]"),
    );
    let gws: Vec<Gw> = (0..8).map(|_| Gw::start(&cfg)).collect();
    let all: Vec<&Gw> = gws.iter().collect();
    // Below the rate (16 threads, a request each 20 ms at most): the bucket has room and
    // hot gateways take shares of it. For 6 s: long enough that shares held unevenly (the
    // first to ask get the large ones) would spend the shared burst on the others'
    // overflow and refuse requests; shares used under half go back at tidy to even out.
    let calm = answers(&all, "m", 16, 6.0, 20);
    let refused: Vec<u16> = calm.iter().map(|a| a.0).filter(|s| *s != 200).collect();
    assert!(
        refused.is_empty(),
        "{} of {} answers below the rate were not 200: {refused:?}",
        refused.len(),
        calm.len()
    );
    let shared = total(&all, "gateway_limiter_leased_total", &[]);
    assert!(shared > 0.0, "rate shares served requests");
    // Then as fast as the clients go (above the rate): every bucket together stays within
    // the rule's, over any stretch of time.
    let started = Instant::now();
    let out = traffic(&all, 16, 3.0);
    let secs = started.elapsed().as_secs_f64();
    let admitted = count(&out, 200) as f64;
    let leased = total(&all, "gateway_limiter_leased_total", &[]) - shared;
    eprintln!(
        "calm: {} requests, {shared} from shares; then {} requests in {secs:.2} s: {admitted} \
         admitted (bound {:.0}), {leased} from shares",
        calm.len(),
        out.len(),
        burst + 1.0 + rate * secs
    );
    assert!(
        admitted <= burst + 1.0 + rate * secs,
        "{admitted} admitted in {secs} s"
    );
    // Not starved: half the rate, or (on a machine too busy for the clients to reach the
    // rate) nearly all that was sent.
    let floor = (0.5 * rate * secs).min(0.9 * out.len() as f64);
    assert!(
        admitted >= floor,
        "only {admitted} of {} admitted in {secs} s",
        out.len()
    );
    assert_eq!(count(&out, 200) + count(&out, 429), out.len());
}

/// admit.lua as the gateway loads it.
const ADMIT: &str = concat!(
    include_str!("../lua-compat/common.lua"),
    include_str!("../lua-compat/admit.lua")
);

/// A token check of 100,000 per minute asking for a block of 1,000.
const TOKEN_CHECK: [&str; 6] = ["4", "100000", "60000", "0", "-1", "1000"];

/// A Redis where admission `L1` (estimate 30) took a token block of 1,000 of `tpm`.
fn redis_with_a_block() -> Redis {
    let redis = Redis::start();
    let mut args = vec![
        "EVAL", ADMIT, "2", "tpm", "tpm:r", "1", "L1", "16000", "30", "1", "1",
    ];
    args.extend(TOKEN_CHECK);
    redis.cmd(&args).unwrap();
    redis
}

#[test]
fn a_token_block_carries_the_reservation_of_the_request_that_asked_for_it() {
    // admit.lua: a token check that asks for a block of 1000 (the request's estimate 30)
    // writes one member for both, so the asking request needs no release of its own; a
    // later check of its group that refuses gives all of it back.
    let redis = redis_with_a_block();
    let (admit, token_check) = (ADMIT, TOKEN_CHECK);
    let members = |redis: &Redis| redis.cmd(&["ZRANGE", "tpm:r", "0", "-1"]).unwrap();
    assert_eq!(members(&redis), "*1\r\n$9\r\nL1#t|1030\r\n");
    assert_eq!(redis.cmd(&["HGET", "tpm", "r"]).unwrap(), "$4\r\n1030\r\n");
    // The same, then a count of 0 that refuses the request.
    let mut args = vec![
        "EVAL", admit, "4", "tpm", "tpm:r", "cnt", "cnt", "1", "L2", "16000", "30", "1", "2",
    ];
    args.extend(token_check);
    args.extend(["3", "0", "60000", "0", "-1", "0"]);
    let out = redis.cmd(&args).unwrap();
    // No alternative, no delay, the group refused by its second check.
    assert!(out.contains(":0\r\n:0\r\n:0\r\n:2\r\n"), "{out}");
    assert_eq!(members(&redis), "*1\r\n$9\r\nL1#t|1030\r\n");
    assert_eq!(redis.cmd(&["HGET", "tpm", "r"]).unwrap(), "$4\r\n1030\r\n");
    // Without a block the request's reservation is its own member.
    let mut args = vec![
        "EVAL", admit, "2", "tpm", "tpm:r", "1", "L3", "16000", "30", "1", "1",
    ];
    args.extend(["4", "100000", "60000", "0", "-1", "0"]);
    redis.cmd(&args).unwrap();
    assert!(members(&redis).contains("L3|30"), "{}", members(&redis));
    assert_eq!(redis.cmd(&["HGET", "tpm", "r"]).unwrap(), "$4\r\n1060\r\n");
}

#[test]
fn token_blocks_given_back_ride_an_admission_call() {
    // admit.lua with release.lua's entries in front ('r', k, entries; their keys first):
    // the block goes back (its member gone, the running sum less its tokens, what it used
    // charged) before the call's admission is decided, in the same atomic call.
    let redis = redis_with_a_block();
    let admit = ADMIT;
    assert_eq!(redis.cmd(&["HGET", "tpm", "r"]).unwrap(), "$4\r\n1030\r\n");
    // L1's block back having used 500 tokens, and L2 admitted without a block.
    let mut args = vec![
        "EVAL",
        admit,
        "4",
        "tpm",
        "tpm:r",
        "tpm",
        "tpm:r",
        "r",
        "1",
        "4",
        "L1#t|1030",
        "60000",
        "500",
        "1",
        "L2",
        "16000",
        "30",
        "1",
        "1",
    ];
    args.extend(["4", "100000", "60000", "0", "-1", "0"]);
    let out = redis.cmd(&args).unwrap();
    // One admission: its length, then chosen 0, delay 0, the group admitted.
    assert!(out.contains(":0\r\n:0\r\n:1\r\n:0\r\n:0\r\n"), "{out}");
    let members = redis.cmd(&["ZRANGE", "tpm:r", "0", "-1"]).unwrap();
    assert_eq!(members, "*1\r\n$5\r\nL2|30\r\n");
    assert_eq!(redis.cmd(&["HGET", "tpm", "r"]).unwrap(), "$2\r\n30\r\n");
    assert_eq!(redis.cmd(&["HGET", "tpm", "c"]).unwrap(), "$3\r\n500\r\n");
    // The quota the admission reports counts the block's usage, not its reservation:
    // 100000 - 500 - 30.
    assert!(out.contains(":99470\r\n"), "{out}");
}

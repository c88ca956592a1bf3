//! The APISIX conformance suite: take the APISIX fixtures of `lua-compat/fixtures`,
//! import them with the real binary, start the gateway on the result and replay request
//! sequences whose statuses and headers follow APISIX's documented behaviour
//! (`shared/reference/limits-semantics.md`) — once with the plugins' `policy: local`, once
//! with `policy: redis` against a real redis-server.

mod common;
use common::apisix::import;
use common::fixture_server::{recording, Reply};
use common::redis::Redis;
use common::*;
use std::time::{Duration, Instant};

fn call(gw: &Gw, path: &str, key: Option<&str>) -> Resp {
    let mut req = agent().get(&gw.url(path));
    if let Some(k) = key {
        req = req.set("apikey", k);
    }
    match req.call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            let headers = r
                .headers_names()
                .iter()
                .map(|n| (n.clone(), r.header(n).unwrap_or("").to_string()))
                .collect();
            Resp {
                status,
                headers,
                body: r.into_string().unwrap_or_default(),
            }
        }
        Err(e) => panic!("{path}: {e}"),
    }
}

fn statuses(gw: &Gw, paths: &[&str], key: Option<&str>) -> Vec<u16> {
    paths.iter().map(|p| call(gw, p, key).status).collect()
}

/// Send `n` requests to `path` at once; (status, seconds) each, sorted by time.
fn at_once(gw: &Gw, path: &str, n: usize) -> Vec<(u16, f64)> {
    let url = gw.url(path);
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let status = match agent().get(&url).call() {
                    Ok(r) => r.status(),
                    Err(ureq::Error::Status(s, _)) => s,
                    Err(e) => panic!("{e}"),
                };
                (status, t.elapsed().as_secs_f64())
            })
        })
        .collect();
    let mut out: Vec<(u16, f64)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    out.sort_by(|a, b| a.1.total_cmp(&b.1));
    out
}

fn limit_plugins(redis: Option<&Redis>) {
    // The backend: /conn answers after 1 s, everything else at once.
    let (port, _) = recording(|r| {
        if r.target.starts_with("/conn") {
            std::thread::sleep(Duration::from_secs(1));
        }
        Reply::json("200 OK", "{\"ok\":true}")
    });
    let yaml = import("limits.apisix.yaml", redis);
    let gw = Gw::start_with_env(&yaml, &[("UPSTREAM", &format!("127.0.0.1:{port}"))]);

    // limit-req, nodelay (rate 1, burst 1): the burst is used at once, then APISIX's
    // rejection with rejected_msg and the default 503.
    let r: Vec<Resp> = (0..3).map(|_| call(&gw, "/req/nodelay", None)).collect();
    assert_eq!(
        r.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200, 503]
    );
    assert_eq!(r[2].body, "{\"error_msg\":\"slow down\"}\n");

    // limit-req with delays (rate 2, burst 2): 4 at once → 3 admitted, delayed 0, 0.5 and
    // 1 s (excess / rate), the 4th rejected at once.
    let d = at_once(&gw, "/req/delay", 4);
    assert_eq!(d.iter().filter(|(s, _)| *s == 503).count(), 1, "{d:?}");
    let admitted: Vec<f64> = d.iter().filter(|(s, _)| *s == 200).map(|x| x.1).collect();
    assert!(admitted[0] < 0.4, "{d:?}");
    assert!((0.4..1.5).contains(&admitted[1]), "{d:?}");
    assert!(admitted[2] >= 0.9, "{d:?}");

    // limit-conn (conn 1, burst 1, delay 0.3 s) with a 1 s backend: 3 at once → one at
    // once, one after the delay band's 0.3 s, one rejected.
    let c = at_once(&gw, "/conn", 3);
    assert_eq!(c[0].0, 503, "the third is rejected at once: {c:?}");
    assert_eq!((c[1].0, c[2].0), (200, 200), "{c:?}");
    assert!(
        c[2].1 >= 1.25,
        "the second waits the delay, then 1 s: {c:?}"
    );

    // limit-count (2 per 60 s) with its quota headers.
    let r: Vec<Resp> = (0..3).map(|_| call(&gw, "/count", None)).collect();
    assert_eq!(
        r.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200, 503]
    );
    assert_eq!(r[0].header("x-ratelimit-limit"), Some("2"));
    assert_eq!(r[0].header("x-ratelimit-remaining"), Some("1"));
    assert_eq!(r[0].header("x-ratelimit-reset"), Some("60"));
    assert_eq!(r[1].header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r[2].header("x-ratelimit-remaining"), Some("0"));
    let reset: f64 = r[2].header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!(reset > 0.0 && reset <= 60.0);
    // Without rejected_msg: the OpenAI error body (APISIX sends an HTML page), status as
    // configured (APISIX's 503 default kept by the import).
    assert_eq!(
        r[2].json()["error"]["code"],
        "rate_limit_exceeded",
        "{}",
        r[2].body
    );
    assert!(r[2].header("retry-after").is_some());

    // group: two routes, one counter (APISIX's /hello + /hello_chunked example).
    assert_eq!(
        statuses(&gw, &["/group/a", "/group/b", "/group/a", "/group/b"], None),
        [200, 200, 503, 503]
    );

    // A service's limit-count is one counter for the routes using it.
    assert_eq!(
        statuses(&gw, &["/svc/a", "/svc/b", "/svc/a", "/svc/b"], None),
        [200, 200, 200, 429]
    );

    // A consumer's limit-req counts across every route it calls (jack: rate 1, burst 1,
    // nodelay, 429): /hello, /hello, /hello1 → 200, 200, 429.
    assert_eq!(
        statuses(&gw, &["/hello", "/hello", "/hello1"], Some("jack-key")),
        [200, 200, 429]
    );
    assert_eq!(
        call(&gw, "/hello", None).status,
        401,
        "key-auth on the route"
    );

    // rules [2 per 2 s, 3 per 5 s]: r3 is rejected by rule 1 (rule 2 stays at 2); after
    // 2 s, r4 passes (rule 2 reaches 3) and r5 is rejected by rule 2.
    // Each rule names its headers: X-<index>-RateLimit-* or X-<header_prefix>-…; a rule
    // that rejects ends evaluation, so the later rule sends none.
    let first = call(&gw, "/rules", None);
    let h = |r: &Resp, n: &str| r.header(n).map(str::to_string);
    assert_eq!(
        (
            h(&first, "x-1-ratelimit-limit"),
            h(&first, "x-1-ratelimit-remaining")
        ),
        (Some("2".into()), Some("1".into()))
    );
    assert_eq!(
        (
            h(&first, "x-jack-ratelimit-limit"),
            h(&first, "x-jack-ratelimit-remaining")
        ),
        (Some("3".into()), Some("2".into()))
    );
    assert_eq!(h(&first, "x-ratelimit-limit"), None, "no unprefixed trio");
    assert_eq!(statuses(&gw, &["/rules"], None), [200]);
    let third = call(&gw, "/rules", None);
    assert_eq!(third.status, 503);
    assert_eq!(h(&third, "x-1-ratelimit-remaining"), Some("0".into()));
    assert_eq!(h(&third, "x-jack-ratelimit-limit"), None);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(statuses(&gw, &["/rules", "/rules"], None), [200, 503]);
    templates(&gw);
    templated_rules(&gw);
}

/// limit-count-rules.t with templates (imported from APISIX, issue 22): a rule key of two
/// variables with text between them applies when either resolves and is skipped when
/// neither does; a templated count read per request from a header shares one counter;
/// `${remote_addr}_2s` keys a rule; `??` defaults in count and time_window.
fn templated_rules(gw: &Gw) {
    let send_as =
        |headers: &[(&str, &str)]| send("GET", &gw.url("/rules-templated"), headers, None);
    let h = |r: &Resp, n: &str| r.header(n).map(str::to_string);
    let seen = |r: &Resp| {
        (
            r.status,
            h(r, "x-user-ratelimit-limit"),
            h(r, "x-user-ratelimit-remaining"),
            h(r, "x-2-ratelimit-remaining"),
        )
    };
    let s = |v: &str| Some(v.to_string());
    let jack = |count: &str| send_as(&[("user", "jack"), ("jack-count", count)]);
    assert_eq!(seen(&jack("2")), (200, s("2"), s("1"), s("9")));
    // No user and no org: the first rule is skipped; the second counts. The third's key
    // has a default, which counts as resolved: it always applies ("apisix").
    let r = send_as(&[]);
    assert_eq!(seen(&r), (200, None, None, s("8")));
    assert_eq!(h(&r, "x-project-ratelimit-remaining"), s("98"));
    let r = send_as(&[("project", "kubernetes")]);
    assert_eq!(h(&r, "x-project-ratelimit-remaining"), s("99"));
    assert_eq!(seen(&jack("2")), (200, s("2"), s("0"), s("6")));
    // Another count, the same counter (APISIX keys the rule by its resolved key only).
    assert_eq!(seen(&jack("5")), (200, s("5"), s("2"), s("5")));
    // Over the client's count: rejected by the first rule, the second untouched.
    let r = jack("2");
    assert_eq!((r.status, h(&r, "x-2-ratelimit-remaining")), (503, None));
    // Only the org resolves: its own key ("/acme").
    let r = send_as(&[("org", "acme"), ("jack-count", "1")]);
    assert_eq!(seen(&r), (200, s("1"), s("0"), s("4")));
    // A count that resolves to nothing is APISIX's 500.
    assert_eq!(send_as(&[("user", "jack")]).status, 500);
    // The second rule's count from its header: 7, of which 6 were used.
    let r = send_as(&[("addr-count", "7")]);
    assert_eq!(
        (
            r.status,
            h(&r, "x-2-ratelimit-limit"),
            h(&r, "x-2-ratelimit-remaining")
        ),
        (200, s("7"), s("0"))
    );
    assert_eq!(send_as(&[("addr-count", "7")]).status, 503);
}

/// limit-count-variable.t: `count`/`time_window` templates with `??` defaults, resolved
/// per request; one counter whatever count a client sends; a bad value is a 500.
fn templates(gw: &Gw) {
    let with = |count: Option<&str>| {
        let headers: Vec<(&str, &str)> = count.map(|c| ("count", c)).into_iter().collect();
        send("GET", &gw.url("/template"), &headers, None)
    };
    let h = |r: &Resp, n: &str| r.header(n).map(str::to_string);
    let r = with(Some("3"));
    assert_eq!(r.status, 200);
    assert_eq!(h(&r, "x-ratelimit-limit").as_deref(), Some("3"));
    assert_eq!(h(&r, "x-ratelimit-remaining").as_deref(), Some("2"));
    let r = with(Some("2"));
    assert_eq!(
        (r.status, h(&r, "x-ratelimit-remaining")),
        (200, Some("0".into()))
    );
    let r = with(Some("5"));
    assert_eq!(
        (r.status, h(&r, "x-ratelimit-remaining")),
        (200, Some("2".into()))
    );
    // No header: the default, 2, which 4 requests are over.
    let r = with(None);
    assert_eq!(
        (r.status, h(&r, "x-ratelimit-limit")),
        (503, Some("2".into()))
    );
    for bad in ["0", "1.5", "9999999999999999"] {
        assert_eq!(with(Some(bad)).status, 500, "count {bad}");
    }
}

fn ai_rate_limiting(redis: Option<&Redis>) {
    let usage = r#"{"id":"c","object":"chat.completion","created":1,"model":"m",
        "choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":8,"completion_tokens":2,"total_tokens":10}}"#;
    let (primary, seen_primary) = recording(move |_| Reply::json("200 OK", usage));
    let (backup, seen_backup) = recording(move |_| Reply::json("200 OK", usage));
    let yaml = import("ai.apisix.yaml", redis);
    let gw = Gw::start_with_env(
        &yaml,
        &[
            ("LLM", &format!("http://127.0.0.1:{primary}")),
            ("LLM_BACKUP", &format!("http://127.0.0.1:{backup}")),
        ],
    );
    let chat = |model: &str| {
        post(
            &gw.url("/v1/chat/completions"),
            Some("app-key"),
            &format!(
                r#"{{"model":"{model}","max_tokens":2,"messages":[{{"role":"user","content":"hi"}}]}}"#
            ),
        )
    };
    // limit 30 per 60 s, 10 tokens a response: 200, 200, 200, then the configured 429.
    let s: Vec<u16> = (0..4).map(|_| chat("small").status).collect();
    assert_eq!(s, [200, 200, 200, 429]);
    // ai-proxy-multi (its own URI): the primary instance (priority 1) has 20 tokens; once
    // they are used the backup instance serves (the rate-limit pre-check).
    let pool = |_| {
        post(
            &gw.url("/pool/v1/chat/completions"),
            Some("app-key"),
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .status
    };
    let s: Vec<u16> = (0..3).map(pool).collect();
    assert_eq!(s, [200, 200, 200]);
    let small_calls = 3; // the `small` route's upstream is the primary's server too
    assert_eq!(seen_primary.lock().unwrap().len(), small_calls + 2);
    assert_eq!(seen_backup.lock().unwrap().len(), 1);
}

#[test]
fn limit_plugins_local_policy() {
    limit_plugins(None);
}

#[test]
fn limit_plugins_redis_policy() {
    let redis = Redis::start();
    limit_plugins(Some(&redis));
}

#[test]
fn ai_rate_limiting_local_policy() {
    ai_rate_limiting(None);
}

#[test]
fn ai_rate_limiting_redis_policy() {
    let redis = Redis::start();
    ai_rate_limiting(Some(&redis));
}

fn access_plugins(redis: Option<&Redis>) {
    let usage = r#"{"id":"c","object":"chat.completion","created":1,"model":"m",
        "choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":8,"completion_tokens":2,"total_tokens":10}}"#;
    let (port, _) = recording(move |r| {
        if r.target.starts_with("/v1/chat") {
            Reply::json("200 OK", usage)
        } else {
            Reply::json("200 OK", "{\"ok\":true}")
        }
    });
    let yaml = import("access.apisix.yaml", redis);
    let gw = Gw::start_with_env(
        &yaml,
        &[
            ("UPSTREAM", &format!("127.0.0.1:{port}")),
            ("LLM", &format!("http://127.0.0.1:{port}")),
        ],
    );
    let basic = |user: &str, password: &str| {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let r = agent()
            .get(&gw.url("/hello"))
            .set("authorization", &format!("Basic {token}"))
            .call();
        let r = match r {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        (r.status(), r.into_string().unwrap_or_default())
    };
    // basic-auth + consumer-restriction (whitelist jack) + limit-count 2 per consumer.
    let jack: Vec<u16> = (0..3).map(|_| basic("jack", "jack-secret").0).collect();
    assert_eq!(jack, [200, 200, 429]);
    // plugin_metadata's header names.
    let r = agent()
        .get(&gw.url("/hello"))
        .set("apikey", "jack-key")
        .call();
    let r = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(r.header("apisix-ratelimit-quota"), Some("2"));
    assert_eq!(r.header("apisix-ratelimit-remaining"), Some("0"));
    assert!(r.header("x-ratelimit-limit").is_none());
    assert_eq!(
        basic("rose", "rose-secret"),
        (
            403,
            r#"{"message":"The consumer_name is forbidden."}"#.to_string()
        )
    );
    assert_eq!(basic("jack", "wrong").0, 401);
    assert_eq!(call(&gw, "/hello", None).status, 401);
    // The AI route: key-auth, rose on the blacklist with APISIX's configured message.
    let ask = |key: &str| {
        let r = agent()
            .post(&gw.url("/v1/chat/completions"))
            .set("apikey", key)
            .send_string(r#"{"model":"small","messages":[{"role":"user","content":"hi"}]}"#);
        let r = match r {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        (r.status(), r.into_string().unwrap_or_default())
    };
    assert_eq!(
        ask("rose-key"),
        (403, r#"{"message":"not for you"}"#.to_string())
    );
    assert_eq!(ask("jack-key").0, 200);
}

#[test]
fn access_plugins_local_policy() {
    access_plugins(None);
}

#[test]
fn access_plugins_redis_policy() {
    let redis = Redis::start();
    access_plugins(Some(&redis));
}

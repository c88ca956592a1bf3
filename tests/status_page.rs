//! The status page on the metrics listener: behind the admin key, and in headless Chromium
//! (Debian's `chromium`) it loads, shows live numbers that change under load, and a
//! screenshot is written to `target/status-page.png`.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const ADMIN: &str = "adm-1";

fn gateway(extra: &str) -> Gw {
    Gw::start(&format!(
        r#"
server: {{threads: 2}}
consumers: [{{name: c, keys: [sk-c], limits: [{{name: rpm, count: {{count: 1000, time_window: 60s}}}}, {{name: daily, spend: {{limit_usd: 5, time_window: 24h}}}}]}}]
providers: [{{name: mock, kind: mock, mock: {{latency_ms: 20}}}}]
models:
  - name: m
    price: {{input: 100, output: 400}}
    deployments: [{{provider: mock, limits: [{{name: key-rpm, count: {{count: 500, time_window: 60s}}}}, {{name: key-conn, conn: {{conn: 8}}}}]}}]
admin: {{key: {ADMIN}}}
{extra}
"#
    ))
}

/// Run headless Chromium on `url` (its scripts get 4 s of virtual time); stdout.
fn chromium(url: &str, extra: &[&str]) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=4000",
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium is needed (apt-get install chromium)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page's DOM after its script has run.
fn dom(url: &str) -> String {
    chromium(url, &["--dump-dom"])
}

/// The text of the element with `id`.
fn text_of(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {dom}"));
    let rest = &dom[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest[open..].find('<').unwrap();
    rest[open..open + close].to_string()
}

#[test]
fn status_page_needs_the_admin_key_and_shows_live_numbers_in_chromium() {
    let gw = gateway("");
    let status = |q: &str| get(&gw.admin_url(&format!("/status{q}")), None);
    assert_eq!(status("").status, 401);
    assert_eq!(status("?key=wrong").status, 401);
    let page = status(&format!("?key={ADMIN}"));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>ai-rate-limiter status</title>"));
    let json = get(&gw.admin_url("/status.json"), Some(ADMIN)).json();
    assert_eq!(json["models"][0]["name"], "m");
    let d = &json["models"][0]["deployments"][0];
    assert_eq!(d["provider"], "mock");
    assert!(
        !json.to_string().contains("sk-c"),
        "no consumer key in the status"
    );

    let url = gw.admin_url(&format!("/status?key={ADMIN}"));
    let before = dom(&url);
    let n0: u64 = text_of(&before, "requests-total")
        .parse()
        .expect("a number");
    for _ in 0..25 {
        let r = post(
            &gw.url("/v1/chat/completions"),
            Some("sk-c"),
            &chat_body("m", "hi", false),
        );
        assert_eq!(r.status, 200);
    }
    std::thread::sleep(Duration::from_millis(100));
    let after = dom(&url);
    let n1: u64 = text_of(&after, "requests-total").parse().expect("a number");
    assert!(n1 >= n0 + 25, "live numbers: {n0} → {n1}");
    assert!(after.contains("key-rpm"), "deployment limits shown");
    assert!(
        after.contains("25 / 500"),
        "usage of the key's window: {after}"
    );
    // The charts of the last 15 minutes moved with the load: the requests line left the
    // baseline, and the figures of the newest slot are the load's.
    let line = |dom: &str, chart: &str, name: &str| -> Vec<f64> {
        let svg = &dom[dom.find(&format!("id=\"chart-{chart}\"")).unwrap()..];
        let at = svg
            .find(&format!("data-line=\"{name}\""))
            .unwrap_or_else(|| panic!("no {name} line in chart {chart}"));
        let pts = &svg[at..];
        let pts = &pts[pts.find("points=\"").unwrap() + 8..];
        pts[..pts.find('"').unwrap()]
            .split(' ')
            .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
            .collect()
    };
    let (was, now) = (
        line(&before, "requests", "total"),
        line(&after, "requests", "total"),
    );
    assert_eq!(was.len(), 180, "one point per 5 s");
    assert!(
        was.iter().all(|y| *y == was[0]),
        "no traffic before: {was:?}"
    );
    assert!(now.iter().any(|y| *y < was[0]), "the line rose: {now:?}");
    assert_ne!(was, now);
    let now_rps: f64 = text_of(&after, "now-requests").parse().expect("a rate");
    // The newest slot's rate, unless a 5 s boundary passed between the load and the
    // page's render (then the load is the slot before it, and the newest is empty).
    let boundary_passed = now[now.len() - 2] < was[0];
    assert!(now_rps > 0.0 || boundary_passed, "{now_rps}: {now:?}");
    for (chart, name) in [
        ("tokens", "m"),
        ("spend", "c"),
        ("p95", "m"),
        ("consumers", "c"),
    ] {
        let l = line(&after, chart, name);
        assert!(l.iter().any(|y| *y < l[0]), "{chart}/{name} moved: {l:?}");
    }
    // Each chart says what it plots.
    assert!(after.contains("p95 latency, ms, per 5 s slot (log-linear histogram"));
    assert_eq!(
        after.matches(" 5 s slot").count(),
        6,
        "every chart but the spend's (USD per 5 s)"
    );
    // The consumer's budget: its spend against its limit, in USD.
    let budget = &after[after.find("id=\"consumers\"").unwrap()..];
    assert!(
        budget.contains("consumer:c/daily") && budget.contains("/ $5</span> USD this window"),
        "{budget}"
    );

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../status-page.png");
    chromium(
        &url,
        &[
            "--window-size=1200,900",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}

#[test]
fn with_the_redis_policy_usage_is_read_from_the_shared_counters() {
    let redis = redis::Redis::start();
    let a = gateway(&format!(
        "limits: {{policy: redis, redis: {{url: \"{}\"}}}}",
        redis.url()
    ));
    let b = gateway(&format!(
        "limits: {{policy: redis, redis: {{url: \"{}\"}}}}",
        redis.url()
    ));
    for gw in [&a, &b, &a] {
        for _ in 0..5 {
            let r = post(
                &gw.url("/v1/chat/completions"),
                Some("sk-c"),
                &chat_body("m", "hi", false),
            );
            assert_eq!(r.status, 200);
        }
    }
    // Either instance shows the fleet's usage of the key's window. The last request's
    // concurrency slot is given back just after its answer (in the logging phase): read
    // until it is, for at most 5 s.
    for gw in [&a, &b] {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let json = loop {
            let json = get(&gw.admin_url("/status.json"), Some(ADMIN)).json();
            let in_flight = &json["models"][0]["deployments"][0]["limits"][1]["used"];
            if *in_flight == 0.0 || std::time::Instant::now() > deadline {
                break json;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let limits = &json["models"][0]["deployments"][0]["limits"];
        assert_eq!(
            limits[0]["rule"], "deployment:mock:m:nokey/key-rpm",
            "{json}"
        );
        assert_eq!(limits[0]["used"], 15.0, "{json}");
        assert_eq!(limits[1]["used"], 0.0, "no request in flight: {json}");
        assert_eq!(json["policy"], "redis");
    }
}

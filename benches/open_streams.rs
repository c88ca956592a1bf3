//! Many open slow streams through one gateway (issue 27, goals 3 and 4): how much memory
//! each open stream holds, how late each event arrives, whether every event arrives, what
//! the gateway's user-space CPU per relayed event is, and whether the memory goes back
//! when the streams end.
//!
//! One process plays both ends, on loopback only: a slow upstream that answers every
//! request with a server-sent-event stream (OpenAI chat chunks, or Anthropic Messages
//! events for a translated stream), one event each `INTERVAL_MS`, every content event
//! stamped with the time it was written; and `STREAMS` clients opened over `SPREAD_S`
//! seconds that ask the gateway for a streamed chat completion and read each event's stamp
//! as it arrives. The gateway's resident memory and CPU come from `/proc/GW_PID`.
//!
//!   cargo build --release --example open_streams
//!   target/release/examples/open_streams GATEWAY UPSTREAM_LISTEN GW_PID STREAMS EVENTS \
//!       INTERVAL_MS SPREAD_S openai|anthropic
//!
//! Prints one JSON object. `benches/streams.sh` runs it (pass-through and translated) and
//! prints the table.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    OpenAi,
    Anthropic,
}

#[derive(Clone)]
struct Plan {
    events: usize,
    interval: Duration,
    dialect: Dialect,
    start: Instant,
}

/// Shared by the clients of one round: streams open now (their first event read), streams
/// ended, and data events read so far.
#[derive(Default)]
struct Counters {
    open: AtomicUsize,
    ended: AtomicUsize,
    events: AtomicUsize,
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    events: usize,
    stamped: usize,
    delays_us: Vec<u32>,
    done: bool,
    error: Option<String>,
}

fn stamp(plan: &Plan) -> u128 {
    plan.start.elapsed().as_micros()
}

/// The SSE events of one upstream answer, stamped as they are written.
fn event(plan: &Plan, i: usize) -> String {
    let s = stamp(plan);
    match plan.dialect {
        Dialect::OpenAi => format!(
            "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\
             \"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"@{s};\"}},\"finish_reason\":null}}]}}\n\n{}",
            if i + 1 == plan.events {
                "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\
                 \"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\
                 \"usage\":{\"prompt_tokens\":9,\"completion_tokens\":8,\"total_tokens\":17}}\n\n\
                 data: [DONE]\n\n"
            } else {
                ""
            }
        ),
        Dialect::Anthropic => format!(
            "{}event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\
             \"delta\":{{\"type\":\"text_delta\",\"text\":\"@{s};\"}}}}\n\n{}",
            if i == 0 {
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\
                 \"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\
                 \"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n\
                 event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\
                 \"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
            } else {
                ""
            },
            if i + 1 == plan.events {
                "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
                 event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\
                 \"stop_sequence\":null},\"usage\":{\"output_tokens\":8}}\n\n\
                 event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
            } else {
                ""
            }
        ),
    }
}

/// Read one request (head and `content-length` body); false at end of connection.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    loop {
        if let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 4096];
                let n = sock.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(false);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(true);
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The slow upstream: every request on a connection gets one stream, chunked.
async fn upstream(listener: TcpListener, plan: Plan) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let plan = plan.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Ok(true) = read_request(&mut sock, &mut buf).await {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                            transfer-encoding: chunked\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let begun = tokio::time::Instant::now();
                for i in 0..plan.events {
                    tokio::time::sleep_until(begun + plan.interval * i as u32).await;
                    let e = event(&plan, i);
                    let chunk = format!("{:x}\r\n{e}\r\n", e.len());
                    if sock.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                if sock.write_all(b"0\r\n\r\n").await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Decode as much of a chunked body as `raw` holds into `out`; true once the last chunk
/// has been read.
fn dechunk(raw: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
    loop {
        let Some(eol) = memchr::memmem::find(raw, b"\r\n") else {
            return false;
        };
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if raw.len() < eol + 2 + size + 2 {
            return false;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw.drain(..eol + 2 + size + 2);
        if size == 0 {
            return true;
        }
    }
}

/// Take the complete SSE lines out of `body`, counting events and stamps.
fn take_events(plan: &Plan, body: &mut Vec<u8>, seen: &mut Seen) {
    let Some(last) = memchr::memrchr(b'\n', body) else {
        return;
    };
    let now = stamp(plan);
    for line in body[..last].split(|b| *b == b'\n') {
        if !line.starts_with(b"data:") {
            continue;
        }
        seen.events += 1;
        if line.ends_with(b"[DONE]") {
            seen.done = true;
        }
        if let Some(at) = memchr::memchr(b'@', line) {
            let digits = &line[at + 1..];
            let end = memchr::memchr(b';', digits).unwrap_or(0);
            if let Some(s) = std::str::from_utf8(&digits[..end])
                .ok()
                .and_then(|d| d.parse::<u128>().ok())
            {
                seen.stamped += 1;
                seen.delays_us
                    .push(now.saturating_sub(s).min(u32::MAX as u128) as u32);
            }
        }
    }
    body.drain(..=last);
}

/// One client stream through the gateway.
async fn client(gateway: String, plan: Plan, counters: Arc<Counters>) -> Seen {
    let mut seen = Seen::default();
    let body = r#"{"model":"bench","stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":64}"#;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer sk-bench\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut sock = match TcpStream::connect(&gateway).await {
        Ok(s) => s,
        Err(e) => {
            seen.error = Some(format!("connect: {e}"));
            return seen;
        }
    };
    if let Err(e) = sock.write_all(req.as_bytes()).await {
        seen.error = Some(format!("write: {e}"));
        return seen;
    }
    let (mut raw, mut text) = (Vec::new(), Vec::new());
    let (mut head_done, mut chunked) = (false, false);
    let mut counted = false;
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match sock.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                seen.error = Some(format!("read: {e}"));
                break;
            }
        };
        raw.extend_from_slice(&chunk[..n]);
        if !head_done {
            let Some(end) = memchr::memmem::find(&raw, b"\r\n\r\n") else {
                continue;
            };
            if !raw.starts_with(b"HTTP/1.1 200") {
                seen.error = Some(String::from_utf8_lossy(&raw[..end]).into_owned());
                break;
            }
            chunked = String::from_utf8_lossy(&raw[..end])
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked");
            raw.drain(..end + 4);
            head_done = true;
        }
        // A body without chunks ends with the connection.
        let last = if chunked {
            dechunk(&mut raw, &mut text)
        } else {
            text.append(&mut raw);
            false
        };
        let before = seen.events;
        take_events(&plan, &mut text, &mut seen);
        counters.events.fetch_add(seen.events - before, Relaxed);
        if !counted && seen.stamped > 0 {
            counted = true;
            counters.open.fetch_add(1, Relaxed);
        }
        if last {
            break;
        }
    }
    if counted {
        counters.open.fetch_sub(1, Relaxed);
    }
    counters.ended.fetch_add(1, Relaxed);
    if !seen.done && seen.error.is_none() {
        seen.error = Some("stream ended before [DONE]".into());
    }
    seen
}

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User and system CPU of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (
        f.get(11).copied().unwrap_or(0),
        f.get(12).copied().unwrap_or(0),
    )
}

fn pct(v: &[u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)] as f64 / 1000.0
}

async fn run_round(
    gateway: &str,
    plan: &Plan,
    streams: usize,
    spread: Duration,
    counters: &Arc<Counters>,
) -> Vec<Seen> {
    let mut tasks = Vec::with_capacity(streams);
    let t0 = tokio::time::Instant::now();
    for i in 0..streams {
        tokio::time::sleep_until(t0 + spread.mul_f64(i as f64 / streams as f64)).await;
        tasks.push(tokio::spawn(client(
            gateway.to_string(),
            plan.clone(),
            counters.clone(),
        )));
    }
    let mut out = Vec::with_capacity(streams);
    for t in tasks {
        out.push(t.await.unwrap_or_default());
    }
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 9 {
        eprintln!("usage: open_streams GATEWAY UPSTREAM_LISTEN GW_PID STREAMS EVENTS INTERVAL_MS SPREAD_S openai|anthropic");
        std::process::exit(2);
    }
    let num = |i: usize| a[i].parse::<u64>().expect("a number");
    let (gateway, pid, streams) = (a[1].clone(), num(3) as u32, num(4) as usize);
    let plan = Plan {
        events: num(5) as usize,
        interval: Duration::from_millis(num(6)),
        dialect: if a[8] == "anthropic" {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        },
        start: Instant::now(),
    };
    let spread = Duration::from_secs_f64(a[7].parse().expect("seconds"));
    let listener = TcpListener::bind(&a[2]).await.expect("upstream listen");
    tokio::spawn(upstream(listener, plan.clone()));

    // Warm-up: the gateway's pools, arenas and caches for a stream, not counted.
    let quick = Plan {
        events: 2,
        interval: Duration::from_millis(10),
        ..plan.clone()
    };
    run_round(
        &gateway,
        &quick,
        64,
        Duration::from_millis(200),
        &Arc::default(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = rss_kib(pid);
    let cpu0 = cpu_ticks(pid);

    // The measured round, with the gateway's RSS sampled while every stream is open, and
    // its CPU and the events read taken when the last stream opens and when the first one
    // ends: the steady part, with no stream's setup in it.
    let open_peak = Arc::new(AtomicUsize::new(0));
    let counters = Arc::new(Counters::default());
    type Mark = ((u64, u64), usize);
    let steady: Arc<std::sync::Mutex<(Option<Mark>, Option<Mark>)>> = Arc::default();
    let sampler = {
        let (open_peak, counters, steady) = (open_peak.clone(), counters.clone(), steady.clone());
        tokio::spawn(async move {
            let mut peak = 0;
            for tick in 0u64.. {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if tick % 5 == 0 {
                    peak = peak.max(rss_kib(pid));
                    open_peak.store(peak as usize, Relaxed);
                }
                let mark = || (cpu_ticks(pid), counters.events.load(Relaxed));
                let mut st = steady.lock().unwrap_or_else(|e| e.into_inner());
                if st.0.is_none() && counters.open.load(Relaxed) == streams {
                    st.0 = Some(mark());
                } else if st.0.is_some() && st.1.is_none() && counters.ended.load(Relaxed) > 0 {
                    st.1 = Some(mark());
                }
            }
        })
    };
    let seen = run_round(&gateway, &plan, streams, spread, &counters).await;
    sampler.abort();
    let cpu1 = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid);

    let peak = open_peak.load(Relaxed) as u64;
    let (steady_user, steady_sys) = match *steady.lock().unwrap_or_else(|e| e.into_inner()) {
        (Some(((u0, s0), e0)), Some(((u1, s1), e1))) if e1 > e0 => {
            let n = (e1 - e0) as f64;
            ((u1 - u0) as f64 * 1e4 / n, (s1 - s0) as f64 * 1e4 / n)
        }
        _ => (0.0, 0.0),
    };
    let mut delays: Vec<u32> = seen
        .iter()
        .flat_map(|s| s.delays_us.iter().copied())
        .collect();
    delays.sort_unstable();
    let events: usize = seen.iter().map(|s| s.events).sum();
    let stamped: usize = seen.iter().map(|s| s.stamped).sum();
    let failed: Vec<&String> = seen.iter().filter_map(|s| s.error.as_ref()).collect();
    let tck = 100.0; // USER_HZ on Linux
    let user_s = (cpu1.0 - cpu0.0) as f64 / tck;
    let sys_s = (cpu1.1 - cpu0.1) as f64 / tck;
    println!(
        "{{\"streams\":{streams},\"events_expected\":{},\"events_stamped\":{stamped},\
         \"events_relayed\":{events},\"failed\":{},\"first_error\":{:?},\
         \"delay_p50_ms\":{:.2},\"delay_p99_ms\":{:.2},\"delay_max_ms\":{:.2},\
         \"rss_base_kib\":{base},\"rss_peak_kib\":{peak},\"rss_after_kib\":{after},\
         \"kib_per_stream\":{:.1},\"user_us_per_event\":{:.2},\"sys_us_per_event\":{:.2},\
         \"steady_user_us_per_event\":{steady_user:.2},\"steady_sys_us_per_event\":{steady_sys:.2}}}",
        streams * plan.events,
        failed.len(),
        failed.first().map(|s| s.as_str()).unwrap_or(""),
        pct(&delays, 0.5),
        pct(&delays, 0.99),
        pct(&delays, 1.0),
        peak.saturating_sub(base) as f64 / streams.max(1) as f64,
        user_s * 1e6 / events.max(1) as f64,
        sys_s * 1e6 / events.max(1) as f64,
    );
}

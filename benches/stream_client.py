#!/usr/bin/env python3
"""Streaming load generator for benches/stream.sh: STREAMS chat completion streams, started
evenly over SPREAD seconds, against one target; each event is timestamped as it arrives.
Prints one JSON line: time-to-first-token (ms) per stream, events per stream, stalls (the
longest gap between two events of a stream, ms) and failures.

Raw sockets and asyncio, no HTTP library: an event is a `data: ` in the byte stream (the
servers write whole events, so chunk framing never splits one).
SURFACE `messages` sends Anthropic Messages streams instead (`/v1/messages`, ended by
`message_stop`): a surface the gateway translates from the chat stream.
MODEL (default `bench`) is the model asked for.
Usage: stream_client.py HOST PORT STREAMS SPREAD [chat|messages] [MODEL]"""
import asyncio, json, sys, time

HOST, PORT, STREAMS, SPREAD = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
SURFACE = sys.argv[5] if len(sys.argv) > 5 else "chat"
PATH, END = ("/v1/messages", b"message_stop") if SURFACE == "messages" else ("/v1/chat/completions", b"[DONE]")
MODEL = sys.argv[6] if len(sys.argv) > 6 else "bench"
BODY = json.dumps({"model": MODEL, "stream": True, "max_tokens": 256,
                   "messages": [{"role": "user", "content": "Hello, how are you today?"}]}).encode()
REQ = (f"POST {PATH} HTTP/1.1\r\nHost: {HOST}:{PORT}\r\n"
       f"Authorization: Bearer sk-bench\r\nContent-Type: application/json\r\n"
       f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY


async def one(delay, out):
    await asyncio.sleep(delay)
    start = time.perf_counter()
    try:
        r, w = await asyncio.open_connection(HOST, PORT)
        w.write(REQ)
        await w.drain()
        buf, first, last, events, gap = b"", None, None, 0, 0.0
        while True:
            chunk = await asyncio.wait_for(r.read(65536), 30)
            if not chunk:
                break
            now = time.perf_counter()
            buf += chunk
            n = buf.count(b"data: ")
            if n:
                if first is None:
                    first = now
                if last is not None:
                    gap = max(gap, now - last)
                last = now
                events += n
                buf = buf[buf.rfind(b"data: ") + 6:]
            if END in chunk:
                break
        w.close()
        out.append({"ttft": (first - start) * 1e3 if first else None, "events": events,
                    "gap": gap * 1e3})
    except Exception as e:  # counted, not raised: the report says how many failed
        out.append({"error": repr(e)})


async def main():
    out = []
    await asyncio.gather(*(one(i * SPREAD / STREAMS, out) for i in range(STREAMS)))
    print(json.dumps(out))

asyncio.run(main())

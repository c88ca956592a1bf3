// The newest official Node SDKs (openai, @anthropic-ai/sdk; versions pinned in
// package.json) against the real gateway binary, on the built-in mock (translated in
// process) and on an OpenAI-compatible upstream over HTTP (the gateway itself): the
// Responses API (create, stream helper, function calling round trip, retrieve, delete,
// previous_response_id, input items) and Anthropic Messages (create, stream helper, tool use).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = process.env.GATEWAY_BIN ?? join(ROOT, "target", "debug", "ai-rate-limiter");
const KEY = "sk-node-test";
const MODELS = ["mock-chat", "via-http"];
const TOOLS = [{ type: "function", name: "get_weather", description: "Weather of a city", strict: true,
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false } }];
const CLAUDE_TOOLS = [{ name: "get_weather", description: "Weather of a city",
  input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } }];

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

let gateway, dir, openai, claude;

/** Start the gateway on fresh ports: { port } when ready, { log } when it exited first. */
async function startGateway() {
  const [port, mport] = [await freePort(), await freePort()];
  writeFileSync(join(dir, "gateway.yaml"), `
consumers: [{name: node, keys: ["${KEY}"]}]
providers:
  - {name: mock, kind: mock}
  - {name: loop, kind: openai-compatible, base_url: "http://127.0.0.1:${port}/v1", api_key: "${KEY}"}
models:
  - {name: mock-chat, deployments: [{provider: mock}]}
  - {name: via-http, deployments: [{provider: loop, model: mock-chat}]}
responses: {data_dir: "${dir}/data"}
batch: {data_dir: "${dir}/data"}
reload: {watch: false}
`);
  gateway = spawn(BIN, ["run", "--config", join(dir, "gateway.yaml"), "--listen", `127.0.0.1:${port}`,
    "--metrics-listen", `127.0.0.1:${mport}`], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  gateway.stderr.on("data", (d) => { log += d; });
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${mport}/ready`);
      if (r.ok) return { port };
    } catch { /* not yet listening */ }
    if (gateway.exitCode !== null) return { log };
    assert.ok(Date.now() < deadline, `gateway did not start:\n${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  assert.ok(existsSync(BIN), `gateway binary not found at ${BIN}: run cargo build first`);
  dir = mkdtempSync(join(tmpdir(), "gw-node-"));
  // A free port can be taken before the gateway binds it: it then exits saying the address
  // is in use, and starts again on fresh ports (up to five times).
  let started;
  for (let i = 0; i < 5; i++) {
    started = await startGateway();
    if (started.port) break;
    assert.ok(started.log.includes("in use"), `gateway did not start:\n${started.log}`);
  }
  assert.ok(started.port, `gateway could not bind free ports five times:\n${started.log}`);
  const { port } = started;
  openai = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: KEY, maxRetries: 0 });
  claude = new Anthropic({ baseURL: `http://127.0.0.1:${port}`, apiKey: KEY, maxRetries: 0 });
});

after(() => gateway?.kill("SIGTERM"));

test("the SDK versions are the pinned ones", () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, "tests", "node", "package.json"), "utf8"));
  const installed = (name) => JSON.parse(readFileSync(join(ROOT, "tests", "node", "node_modules", name, "package.json"), "utf8")).version;
  assert.equal(installed("openai"), pkg.dependencies.openai);
  assert.equal(installed("@anthropic-ai/sdk"), pkg.dependencies["@anthropic-ai/sdk"]);
});

for (const model of MODELS) {
  test(`responses: create, retrieve, input items, delete (${model})`, async () => {
    const r = await openai.responses.create({ model, input: "Hi", instructions: "Be brief." });
    assert.equal(r.object, "response");
    assert.match(r.id, /^resp_/);
    assert.equal(r.status, "completed");
    assert.ok(r.output_text.length > 0, "the SDK's output_text (needs object: response)");
    assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
    const again = await openai.responses.retrieve(r.id);
    assert.equal(again.output_text, r.output_text);
    const items = await openai.responses.inputItems.list(r.id);
    assert.equal(items.data[0].type, "message");
    await openai.responses.delete(r.id);
    await assert.rejects(openai.responses.retrieve(r.id), OpenAI.NotFoundError);
  });

  test(`responses: stream helper keeps its invariants (${model})`, async () => {
    const stream = openai.responses.stream({ model, input: "Stream, please" });
    const snapshots = [];
    stream.on("response.output_text.delta", (e) => snapshots.push(e.snapshot));
    const final = await stream.finalResponse();
    assert.ok(snapshots.length > 1);
    assert.equal(final.output_text, snapshots.at(-1));
    assert.ok(final.usage.output_tokens > 0);
  });

  test(`responses: function calling round trip with previous_response_id (${model})`, async () => {
    const r = await openai.responses.create({ model, input: "Weather in Oslo?", tools: TOOLS,
      tool_choice: { type: "function", name: "get_weather" } });
    const call = r.output.find((o) => o.type === "function_call");
    assert.equal(call.name, "get_weather");
    assert.deepEqual(JSON.parse(call.arguments), { city: "mock" });
    const r2 = await openai.responses.create({ model, previous_response_id: r.id, tools: TOOLS,
      input: [{ type: "function_call_output", call_id: call.call_id, output: "-3C" }] });
    assert.equal(r2.status, "completed");
    assert.equal(r2.previous_response_id, r.id);
    assert.ok(r2.output_text.length > 0);
    // Streamed with the helper: the call's arguments arrive whole.
    const s = openai.responses.stream({ model, input: "Weather?", tools: TOOLS, tool_choice: "required" });
    const final = await s.finalResponse();
    const streamed = final.output.find((o) => o.type === "function_call");
    assert.deepEqual(JSON.parse(streamed.arguments), { city: "mock" });
  });

  test(`messages: create, stream helper, tool use (${model})`, async () => {
    const m = await claude.messages.create({ model, max_tokens: 64, system: "Be brief.",
      messages: [{ role: "user", content: "Hi" }] });
    assert.equal(m.type, "message");
    assert.equal(m.content[0].type, "text");
    assert.equal(m.stop_reason, "end_turn");
    const s = claude.messages.stream({ model, max_tokens: 64, messages: [{ role: "user", content: "Hi" }] });
    let text = "";
    s.on("text", (t) => { text += t; });
    const final = await s.finalMessage();
    assert.equal(final.content[0].text, text);
    const t = await claude.messages.create({ model, max_tokens: 64, tools: CLAUDE_TOOLS,
      tool_choice: { type: "any" }, messages: [{ role: "user", content: "Weather in Oslo?" }] });
    const use = t.content.find((b) => b.type === "tool_use");
    assert.equal(t.stop_reason, "tool_use");
    assert.deepEqual(use.input, { city: "mock" });
    const ts = claude.messages.stream({ model, max_tokens: 64, tools: CLAUDE_TOOLS,
      tool_choice: { type: "tool", name: "get_weather" }, messages: [{ role: "user", content: "Weather?" }] });
    const tf = await ts.finalMessage();
    assert.deepEqual(tf.content.find((b) => b.type === "tool_use").input, { city: "mock" });
    const after = await claude.messages.create({ model, max_tokens: 64, tools: CLAUDE_TOOLS, messages: [
      { role: "user", content: "Weather in Oslo?" },
      { role: "assistant", content: t.content },
      { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: "-3C" }] }] });
    assert.equal(after.stop_reason, "end_turn");
  });
}

test("errors come in each API's shape", async () => {
  await assert.rejects(
    openai.responses.create({ model: "mock-chat", input: "x", previous_response_id: "resp_unknown" }),
    (e) => e instanceof OpenAI.BadRequestError && e.code === "previous_response_not_found");
  await assert.rejects(
    claude.messages.create({ model: "nope", max_tokens: 5, messages: [{ role: "user", content: "x" }] }),
    (e) => e instanceof Anthropic.NotFoundError && e.error.error.type === "not_found_error");
});

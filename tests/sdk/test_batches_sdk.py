"""The official OpenAI SDK against the gateway's Files and Batches API, end to end."""
import io
import json
import time

import openai
import pytest
from openai import OpenAI

from conftest import KEY


@pytest.fixture(scope="module")
def client(gateway):
    return OpenAI(base_url=gateway, api_key=KEY, max_retries=0)


def jsonl(rows):
    return io.BytesIO("".join(json.dumps(r) + "\n" for r in rows).encode())


def request(i, model="gpt-4o-mini"):
    return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"Say {i}"}], "max_tokens": 5}}


def wait(client, batch_id, statuses, timeout=30):
    deadline = time.time() + timeout
    while True:
        b = client.batches.retrieve(batch_id)
        if b.status in statuses:
            return b
        assert time.time() < deadline, b
        time.sleep(0.1)


def test_upload_create_poll_download(client):
    rows = [request(i) for i in range(12)] + [request(99, model="no-such-model")]
    f = client.files.create(file=("in.jsonl", jsonl(rows), "application/jsonl"), purpose="batch")
    assert f.purpose == "batch" and f.bytes > 0 and f.status == "processed"
    assert client.files.retrieve(f.id).filename == "in.jsonl"
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                              completion_window="24h", metadata={"job": "nightly"})
    assert b.status == "validating" and b.request_counts.total == 0
    b = wait(client, b.id, {"completed"})
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (13, 12, 1)
    assert b.metadata == {"job": "nightly"} and b.completed_at and b.in_progress_at
    out = [json.loads(l) for l in client.files.content(b.output_file_id).text.splitlines()]
    err = [json.loads(l) for l in client.files.content(b.error_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == sorted(f"req-{i}" for i in range(12))
    assert all(o["response"]["status_code"] == 200 and o["error"] is None for o in out)
    assert out[0]["response"]["body"]["usage"]["completion_tokens"] == 5
    assert err[0]["custom_id"] == "req-99" and err[0]["response"]["status_code"] == 404
    assert client.files.retrieve(b.output_file_id).purpose == "batch_output"
    assert client.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_list_with_pagination(client):
    f = client.files.create(file=("p.jsonl", jsonl([request(1)]), "application/jsonl"), purpose="batch")
    ids = [client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                 completion_window="24h").id for _ in range(3)]
    first = client.batches.list(limit=2)
    assert len(first.data) == 2 and first.has_more
    seen = [b.id for b in client.batches.list(limit=2)]  # auto-paging follows `after`
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))
    files = [x.id for x in client.files.list(purpose="batch")]
    assert f.id in files


def test_cancel_ends_pending_requests_with_cancelled_lines(client):
    rows = [request(i, model="slow-batch") for i in range(60)]
    f = client.files.create(file=("slow.jsonl", jsonl(rows), "application/jsonl"), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait(client, b.id, {"in_progress"})
    c = client.batches.cancel(b.id)
    assert c.status == "cancelling" and c.cancelling_at
    c = wait(client, b.id, {"cancelled"})
    assert c.request_counts.completed + c.request_counts.failed == 60
    assert c.request_counts.failed > 0
    err = [json.loads(l) for l in client.files.content(c.error_file_id).text.splitlines()]
    assert all(e["error"]["code"] == "batch_cancelled" and e["response"] is None for e in err)
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(b.id)


def test_failed_validation(client):
    f = client.files.create(file=("bad.jsonl", io.BytesIO(b"{oops\n"), "application/jsonl"), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b = wait(client, b.id, {"failed"})
    assert b.errors.data[0].code == "invalid_json_line" and b.errors.data[0].line == 1 and b.failed_at


def test_batch_of_responses_requests(client):
    rows = [{"custom_id": "q-1", "method": "POST", "url": "/v1/responses",
             "body": {"model": "gpt-4o-mini", "instructions": "One word.", "input": "Capital of Norway?",
                      "max_output_tokens": 16}},
            {"custom_id": "q-2", "method": "POST", "url": "/v1/responses",
             "body": {"model": "via-http", "input": [{"role": "user", "content": [{"type": "input_text", "text": "2+2?"}]}],
                      "text": {"format": {"type": "json_schema", "name": "n", "strict": True,
                                          "schema": {"type": "object", "properties": {"v": {"type": "integer"}},
                                                     "required": ["v"], "additionalProperties": False}}}}},
            {"custom_id": "q-3", "method": "POST", "url": "/v1/responses",
             "body": {"model": "gpt-4o-mini", "input": "x", "previous_response_id": "resp_1"}}]
    f = client.files.create(file=("r.jsonl", jsonl(rows), "application/jsonl"), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/responses", completion_window="24h")
    b = wait(client, b.id, {"completed"})
    assert (b.request_counts.completed, b.request_counts.failed) == (2, 1)
    out = {o["custom_id"]: o for o in map(json.loads, client.files.content(b.output_file_id).text.splitlines())}
    one = out["q-1"]["response"]["body"]
    assert one["object"] == "response" and one["status"] == "completed" and one["instructions"] == "One word."
    assert one["output"][0]["content"][0]["text"] and one["usage"]["output_tokens"] > 0
    two = out["q-2"]["response"]["body"]
    assert json.loads(two["output"][0]["content"][0]["text"]) == {"v": 1}
    err = json.loads(client.files.content(b.error_file_id).text.splitlines()[0])
    assert err["custom_id"] == "q-3" and err["response"]["status_code"] == 400

"""The official OpenAI Python SDK (pinned in requirements.txt) against the gateway."""
import re
import time

import openai
import pytest
from openai import OpenAI

from conftest import KEY, LIMITED_KEY, QUEUED_KEY

MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def client(gateway):
    return OpenAI(base_url=gateway, api_key=KEY, max_retries=0)


def test_sdk_version_is_pinned():
    assert openai.__version__ == "3.54.0"


def test_chat_non_stream(client):
    c = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi"}])
    assert c.object == "chat.completion" and c.choices[0].finish_reason in ("stop", "length")
    assert c.choices[0].message.role == "assistant" and c.choices[0].message.content
    assert c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens
    assert c._request_id and c._request_id.startswith("req_")


def test_chat_stream_with_include_usage(client):
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count to 3"}],
        stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert all(ch.usage is None for ch in chunks[:-1])
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"


def test_chat_stream_without_usage_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert all(ch.choices for ch in chunks)
    assert all(ch.usage is None for ch in chunks)


def test_stream_helper_accumulates(client):
    with client.chat.completions.stream(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                        stream_options={"include_usage": True}) as s:
        for _ in s:
            pass
        final = s.get_final_completion()
    assert final.choices[0].message.content and final.usage.total_tokens > 0


def test_legacy_completions(client):
    t = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this is a test", max_tokens=7)
    assert t.object == "text_completion" and t.choices[0].text
    assert t.usage.completion_tokens == 7


def test_embeddings_default_base64_and_float(client):
    e = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(e.data) == 2 and isinstance(e.data[0].embedding[0], float)
    f = client.embeddings.create(model="text-embedding-3-small", input="a", encoding_format="float")
    assert len(f.data[0].embedding) == len(e.data[0].embedding)
    assert max(abs(x - y) for x, y in zip(e.data[0].embedding, f.data[0].embedding)) < 1e-6
    d = client.embeddings.create(model="text-embedding-3-small", input="a", dimensions=8)
    assert len(d.data[0].embedding) == 8


def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids and "meta-llama/Llama-3-8B" in ids
    m = client.models.retrieve(MODEL)
    assert m.object == "model" and m.id == MODEL and m.owned_by
    assert client.models.retrieve("meta-llama/Llama-3-8B").id == "meta-llama/Llama-3-8B"
    assert client.models.retrieve("ft:gpt-4o:org:x:abc").id == "ft:gpt-4o:org:x:abc"


def test_not_found_errors(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.status_code == 404 and e.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found" and e.value.request_id


def test_authentication_error(gateway):
    bad = OpenAI(base_url=gateway, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 401 and e.value.type and e.value.body["message"] and e.value.request_id
    assert e.value.code == "invalid_api_key"


def test_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[])
    assert e.value.status_code == 400 and e.value.body["type"] == "invalid_request_error"


def test_with_raw_response_headers(client):
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert re.fullmatch(r"req_[0-9a-f]{32}", raw.headers["x-request-id"])
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.parse().choices and raw.retries_taken == 0


def test_mid_stream_error_raises_api_error(client):
    with pytest.raises(openai.APIError) as e:
        for _ in client.chat.completions.create(model="fault-inject-midstream",
                                                messages=[{"role": "user", "content": "x"}], stream=True):
            pass
    assert "ended" in e.value.message


def test_rate_limit_error_then_sdk_retries_succeed(gateway):
    msg = [{"role": "user", "content": "x"}]
    c0 = OpenAI(base_url=gateway, api_key=LIMITED_KEY, max_retries=0)
    raw = c0.chat.completions.with_raw_response.create(model=MODEL, messages=msg)
    for h in ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
              "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens", "x-request-id"):
        assert raw.headers.get(h) is not None, h
    assert re.fullmatch(r"(\d+h)?(\d+m)?(\d+(\.\d+)?s)?|\d+ms", raw.headers["x-ratelimit-reset-tokens"])
    with pytest.raises(openai.RateLimitError) as e:
        c0.chat.completions.create(model=MODEL, messages=msg)
    h = e.value.response.headers
    assert e.value.code == "rate_limit_exceeded" and h.get("retry-after") and h.get("retry-after-ms")
    assert float(h["retry-after-ms"]) <= 60_000 and 1 <= int(h["retry-after"]) <= 60
    c2 = OpenAI(base_url=gateway, api_key=LIMITED_KEY, max_retries=2)
    c2.chat.completions.create(model=MODEL, messages=msg)  # may itself have waited
    raw = c2.chat.completions.with_raw_response.create(model=MODEL, messages=msg)
    assert raw.retries_taken >= 1 and raw.parse().choices


def test_an_exhausted_budget_is_insufficient_quota_and_the_sdk_does_not_retry(gateway):
    import httpx2 as httpx  # the HTTP client this openai version is built on
    from conftest import BUDGET_KEY
    sent = []
    http = httpx.Client(event_hooks={"request": [lambda r: sent.append(r.url.path)]})
    client = OpenAI(base_url=gateway, api_key=BUDGET_KEY, max_retries=2, http_client=http)
    msg = [{"role": "user", "content": "x"}]
    # Five completion tokens at $1000 per million: half a cent each; the budget is a cent.
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="priced", messages=msg, max_tokens=5)
        assert float(raw.headers["x-gateway-cost-usd"]) == 0.005
    assert raw.headers["x-gateway-budget-remaining-usd"] == "0"
    sent.clear()
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="priced", messages=msg, max_tokens=5)
    assert e.value.code == "insufficient_quota" and e.value.type == "insufficient_quota"
    assert e.value.response.headers["x-should-retry"] == "false"
    assert int(e.value.response.headers["retry-after"]) > 3600
    assert len(sent) == 1, "the SDK did not retry a budget that frees in a day"


def _burst(gateway, key, n=8):
    """n concurrent chat requests without SDK retries; returns the exceptions raised."""
    from concurrent.futures import ThreadPoolExecutor
    client = OpenAI(base_url=gateway, api_key=key, max_retries=0)

    def one(_):
        try:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
            return None
        except openai.APIError as e:
            return e

    with ThreadPoolExecutor(max_workers=n) as pool:
        return [e for e in pool.map(one, range(n)) if e is not None]


def test_same_burst_rate_limited_then_queued_without_error(gateway):
    errors = _burst(gateway, LIMITED_KEY)
    assert errors and all(isinstance(e, openai.RateLimitError) for e in errors)
    started = time.time()
    assert _burst(gateway, QUEUED_KEY) == []
    assert time.time() - started >= 1.5  # 8 requests at 4/s: they waited their turn

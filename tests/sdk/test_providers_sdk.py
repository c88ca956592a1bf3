"""The official SDKs against providers behind the gateway: the OpenAI SDK on a model served
by Anthropic (translated both ways), and the Anthropic SDK on the native /v1/messages."""
import json

import anthropic
import openai
import pytest
from openai import OpenAI

from conftest import KEY

MSG = [{"role": "user", "content": "Hi"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def test_anthropic_sdk_version_is_pinned():
    assert anthropic.__version__ == "2.12.0"


@pytest.fixture(scope="module")
def oai(gateway):
    return OpenAI(base_url=gateway, api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def claude(gateway):
    return anthropic.Anthropic(base_url=gateway.rsplit("/v1", 1)[0], api_key=KEY, max_retries=0)


def test_openai_sdk_non_stream_on_anthropic(oai):
    c = oai.chat.completions.create(model="claude-text", messages=MSG)
    assert c.choices[0].message.content == "Hello! How can I help?"
    assert c.choices[0].finish_reason == "stop"
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (20, 9)


def test_openai_sdk_stream_with_usage_on_anthropic(oai):
    chunks = list(oai.chat.completions.create(model="claude-text", messages=MSG, stream=True,
                                              stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "Hello!"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 15
    with oai.chat.completions.stream(model="claude-text", messages=MSG) as s:
        for _ in s:
            pass
        assert s.get_final_completion().choices[0].message.content == "Hello!"


def test_openai_sdk_tool_call_on_anthropic(oai):
    c = oai.chat.completions.create(model="claude-tool", messages=MSG, tools=TOOLS)
    call = c.choices[0].message.tool_calls[0]
    assert c.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    chunks = list(oai.chat.completions.create(model="claude-tool", messages=MSG, tools=TOOLS, stream=True))
    args = "".join(tc.function.arguments or "" for ch in chunks if ch.choices
                   for tc in (ch.choices[0].delta.tool_calls or []))
    assert json.loads(args) == {"city": "Paris"}


def test_openai_sdk_error_classes_on_anthropic(oai):
    with pytest.raises(openai.InternalServerError) as e:
        oai.chat.completions.create(model="claude-overloaded", messages=MSG)
    assert e.value.status_code == 503
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model="claude-ratelimited", messages=MSG)
    with pytest.raises(openai.APIError, match="Overloaded"):
        for _ in oai.chat.completions.create(model="claude-overloaded", messages=MSG, stream=True):
            pass


def test_anthropic_sdk_on_native_messages(claude):
    m = claude.messages.create(model="claude-text", max_tokens=50, messages=MSG)
    assert m.content[0].text == "Hello! How can I help?" and m.usage.output_tokens == 9
    with claude.messages.stream(model="claude-text", max_tokens=50, messages=MSG) as s:
        assert "".join(s.text_stream) == "Hello!"
        assert s.get_final_message().usage.output_tokens == 15
    t = claude.messages.create(model="claude-tool", max_tokens=50, messages=MSG,
                               tools=[{"name": "get_weather", "input_schema": {"type": "object"}}])
    assert t.stop_reason == "tool_use" and t.content[1].input == {"city": "Paris"}


def test_anthropic_sdk_error_classes(claude, gateway):
    with pytest.raises(anthropic.APIStatusError) as e:
        claude.messages.create(model="claude-overloaded", max_tokens=5, messages=MSG)
    assert e.value.status_code == 529
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model="claude-ratelimited", max_tokens=5, messages=MSG)
    bad = anthropic.Anthropic(base_url=gateway.rsplit("/v1", 1)[0], api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="claude-text", max_tokens=5, messages=MSG)

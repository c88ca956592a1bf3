"""The Anthropic SDK on models whose provider does not speak the Messages API (the
built-in mock here): requests are translated to chat and answers back, streams included."""
import anthropic
import pytest

from conftest import KEY

MODEL = "gpt-4o-mini"  # served by the mock provider
# The mock in process, and an OpenAI-compatible upstream over HTTP (the gateway itself).
MODELS = ["gpt-4o-mini", "via-http"]
TOOLS = [{"name": "get_weather", "description": "Weather of a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"},
                                                             "unit": {"enum": ["c", "f"]}},
                           "required": ["city", "unit"]}}]


@pytest.fixture(scope="module")
def claude(gateway):
    return anthropic.Anthropic(base_url=gateway.rsplit("/v1", 1)[0], api_key=KEY, max_retries=0)


@pytest.mark.parametrize("model", MODELS)
def test_messages_create_on_the_mock(claude, model):
    m = claude.messages.create(model=model, max_tokens=64, system="Be brief.",
                               messages=[{"role": "user", "content": "Hi"}])
    assert m.type == "message" and m.role == "assistant" and m.model == model
    assert m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0
    short = claude.messages.create(model=model, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 2


@pytest.mark.parametrize("model", MODELS)
def test_messages_stream_helper_on_the_mock(claude, model):
    with claude.messages.stream(model=model, max_tokens=64,
                                messages=[{"role": "user", "content": "Stream"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and final.content[0].text == text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_messages_tool_use_round_trip_on_the_mock(claude, model):
    m = claude.messages.create(model=model, max_tokens=64, tools=TOOLS, tool_choice={"type": "any"},
                               messages=[{"role": "user", "content": "Weather in Oslo?"}])
    assert m.stop_reason == "tool_use"
    call = next(b for b in m.content if b.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"city": "mock", "unit": "c"}
    # Streamed, the helper assembles the same input from the JSON deltas.
    with claude.messages.stream(model=model, max_tokens=64, tools=TOOLS,
                                tool_choice={"type": "tool", "name": "get_weather"},
                                messages=[{"role": "user", "content": "Weather in Oslo?"}]) as s:
        final = s.get_final_message()
    streamed = next(b for b in final.content if b.type == "tool_use")
    assert streamed.input == {"city": "mock", "unit": "c"} and final.stop_reason == "tool_use"
    # The result goes back; with no call required the mock answers text.
    after = claude.messages.create(model=model, max_tokens=64, tools=TOOLS, messages=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": [b.model_dump() for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "-3C"}]}])
    assert after.stop_reason == "end_turn" and after.content[0].type == "text"


def test_count_tokens_and_errors_in_anthropic_shape(claude):
    n = claude.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hello there"}])
    assert n.input_tokens > 0
    with pytest.raises(anthropic.NotFoundError) as e:
        claude.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error"
    # An unknown role is a 400 in Anthropic's words (clients' fallbacks look for them); a
    # system message inside the conversation (Claude Code's mid-conversation beta) is not.
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "tool", "content": "x"}])
    assert "Unexpected role" in e.value.body["error"]["message"]
    ok = claude.messages.create(model=MODEL, max_tokens=5, messages=[
        {"role": "user", "content": "hi"}, {"role": "system", "content": "be brief"},
        {"role": "user", "content": "go"}])
    assert ok.content[0].type == "text"

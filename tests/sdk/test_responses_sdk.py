"""The OpenAI SDK's Responses API through the gateway, on the mock (translated in
process) and on an OpenAI-compatible upstream over HTTP (the gateway itself): create,
stream helper, raw events, function calling round trip, structured output, stored
responses (retrieve, input items, delete, previous_response_id)."""
import json

import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel

from conftest import KEY

MODELS = ["gpt-4o-mini", "via-http"]
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
          "strict": True}]


@pytest.fixture(scope="module")
def client(gateway):
    return OpenAI(base_url=gateway, api_key=KEY, max_retries=0)


@pytest.mark.parametrize("model", MODELS)
def test_create_and_retrieve(client, model):
    r = client.responses.create(model=model, input="Hi", instructions="Be brief.")
    assert r.object == "response" and r.id.startswith("resp_") and r.status == "completed"
    assert r.output_text and r.model == model
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    again = client.responses.retrieve(r.id)
    assert again.id == r.id and again.output_text == r.output_text
    short = client.responses.create(model=model, input="Hi", max_output_tokens=2)
    assert short.status == "incomplete" and short.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize("model", MODELS)
def test_stream_events_and_helper(client, model):
    events = list(client.responses.create(model=model, input="Stream", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and events[-1].response.output_text == deltas
    with client.responses.stream(model=model, input="Stream") as s:
        text = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()
    assert final.output_text == text and final.usage is not None


@pytest.mark.parametrize("model", MODELS)
def test_function_calling_round_trip_with_previous_response_id(client, model):
    r = client.responses.create(model=model, input="Weather in Oslo?", tools=TOOLS,
                                tool_choice={"type": "function", "name": "get_weather"})
    call = next(o for o in r.output if o.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "mock"}
    r2 = client.responses.create(model=model, previous_response_id=r.id, tools=TOOLS,
                                 input=[{"type": "function_call_output", "call_id": call.call_id,
                                         "output": "-3C"}])
    assert r2.status == "completed" and r2.output_text and r2.previous_response_id == r.id
    items = client.responses.input_items.list(r2.id, order="asc")
    kinds = [i.type for i in items.data]
    assert kinds == ["message", "function_call", "function_call_output"]
    # Streamed, the call's arguments arrive whole in the done event.
    with client.responses.stream(model=model, input="Weather?", tools=TOOLS, tool_choice="required") as s:
        final = s.get_final_response()
    streamed = next(o for o in final.output if o.type == "function_call")
    assert json.loads(streamed.arguments) == {"city": "mock"}


class Answer(BaseModel):
    city: str
    degrees: int


@pytest.mark.parametrize("model", MODELS)
def test_structured_output_parse(client, model):
    r = client.responses.parse(model=model, input="Weather in Oslo as JSON", text_format=Answer)
    assert r.output_parsed == Answer(city="mock", degrees=1)


def test_delete_and_errors(client):
    r = client.responses.create(model="gpt-4o-mini", input="Hi")
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="gpt-4o-mini", input="x", previous_response_id="resp_unknown")
    assert e.value.code == "previous_response_not_found"
    unstored = client.responses.create(model="gpt-4o-mini", input="Hi", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)

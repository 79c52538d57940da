#!/usr/bin/env python3
"""Checks `hearth serve` with the official `openai` Python package.

Usage: openai_conformance.py BASE_URL [MODEL [THINKING_BASE_URL]]

BASE_URL is the API root (e.g. http://127.0.0.1:8080/v1); MODEL the id the server should list
(default: the first one it lists). The key comes from HEARTH_API_KEY (any value when the server
has none). Greedy answers are compared whole against streamed; the errors must surface as the
package's typed exceptions. Tools (a required call, whole and streamed, then the round trip with a
`tool` message) and `response_format` (json_schema, json_object, a bad schema) are checked on the
same server; THINKING_BASE_URL, if given, serves a model whose template opens `<think>`, and its
answers must come as `reasoning_content`, never inside `content`. Prints "openai conformance: ok"
and exits 0, or fails an assertion. The server should run with a small context (--ctx 512) so the
context-overflow case is quick.
"""

import json
import os
import sys

import openai
from openai import OpenAI

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def check_models(client, want):
    listing = client.models.list()
    ids = [m.id for m in listing.data]
    assert ids, "no models listed"
    model = want or ids[0]
    assert model in ids, f"{model} not in {ids}"
    for m in listing.data:
        assert m.object == "model" and m.owned_by == "hearth", m
    assert client.models.retrieve(model).id == model
    return model


def check_chat(client, model):
    whole = client.chat.completions.create(
        model=model, messages=QUESTION, temperature=0, max_tokens=8
    )
    assert whole.object == "chat.completion", whole
    assert whole.id.startswith("chatcmpl-"), whole.id
    assert len(whole.choices) == 1
    choice = whole.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content, "empty answer"
    assert choice.finish_reason in ("stop", "length"), choice.finish_reason
    u = whole.usage
    assert u.prompt_tokens > 0 and 1 <= u.completion_tokens <= 8, u
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, u
    if choice.finish_reason == "length":
        assert u.completion_tokens == 8, u

    stream = client.chat.completions.create(
        model=model,
        messages=QUESTION,
        temperature=0,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finishes, roles, usage, ids = "", [], [], None, set()
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk", chunk
        ids.add(chunk.id)
        if chunk.usage is not None:
            assert chunk.choices == [], chunk
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            if c.delta.content:
                text += c.delta.content
            if c.finish_reason:
                finishes.append(c.finish_reason)
    assert len(ids) == 1, ids
    assert roles == ["assistant"], roles
    assert text == choice.message.content, (text, choice.message.content)
    assert finishes == [choice.finish_reason], finishes
    assert usage is not None, "no usage chunk"
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        u.prompt_tokens,
        u.completion_tokens,
    ), usage

    # max_completion_tokens, seed, top_p and a list of stop strings are accepted.
    short = client.chat.completions.create(
        model=model,
        messages=QUESTION,
        max_completion_tokens=3,
        seed=42,
        top_p=0.9,
        stop=["\n\n", "###"],
    )
    assert short.usage.completion_tokens <= 3, short.usage


def check_completions(client, model):
    whole = client.completions.create(
        model=model, prompt="Once upon a time", temperature=0, max_tokens=8
    )
    assert whole.object == "text_completion", whole
    text = whole.choices[0].text
    assert text, "empty completion"
    assert whole.choices[0].finish_reason in ("stop", "length")
    streamed = ""
    usage = None
    for chunk in client.completions.create(
        model=model,
        prompt="Once upon a time",
        temperature=0,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            streamed += c.text
    assert streamed == text, (streamed, text)
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def expect_bad_request(call, code=None):
    try:
        call()
    except openai.BadRequestError as e:
        assert e.status_code == 400, e
        if code is not None:
            assert e.code == code, (e.code, e.body)
        return e
    raise AssertionError("expected openai.BadRequestError")


def check_errors(client, model):
    expect_bad_request(
        lambda: client.chat.completions.create(model=model, messages=[], max_tokens=4)
    )
    expect_bad_request(
        lambda: client.chat.completions.create(
            model=model, messages=[{"role": "wizard", "content": "hi"}], max_tokens=4
        )
    )
    long = [{"role": "user", "content": "Tell me about the sea. " * 200}]
    for stream in (False, True):
        expect_bad_request(
            lambda: client.chat.completions.create(
                model=model, messages=long, max_tokens=4, stream=stream
            ),
            code="context_length_exceeded",
        )
    try:
        client.models.retrieve("no-such-model")
    except openai.NotFoundError:
        pass
    else:
        raise AssertionError("expected openai.NotFoundError")


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


def check_call_arguments(name, arguments):
    assert name == "get_weather", name
    args = json.loads(arguments)
    assert set(args) == {"city", "unit"}, args
    assert isinstance(args["city"], str) and len(args["city"]) <= 30, args
    assert args["unit"] in ("celsius", "fahrenheit"), args


def check_tools(client, model):
    whole = client.chat.completions.create(
        model=model,
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
        max_tokens=80,
    )
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1, choice.message
    call = calls[0]
    assert call.type == "function" and call.id, call
    check_call_arguments(call.function.name, call.function.arguments)
    assert not choice.message.content, choice.message.content

    # Streamed: the call comes as a tool_calls delta, the same call.
    parts, finishes, text = {}, [], ""
    for chunk in client.chat.completions.create(
        model=model,
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=80,
        stream=True,
    ):
        for c in chunk.choices:
            text += c.delta.content or ""
            for d in c.delta.tool_calls or []:
                p = parts.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                p["id"] += d.id or ""
                if d.function:
                    p["name"] += d.function.name or ""
                    p["arguments"] += d.function.arguments or ""
            if c.finish_reason:
                finishes.append(c.finish_reason)
    assert finishes == ["tool_calls"], finishes
    assert list(parts) == [0], parts
    check_call_arguments(parts[0]["name"], parts[0]["arguments"])
    assert parts[0]["arguments"] == call.function.arguments, (parts, call)
    assert not text, text

    # The round trip: the assistant's call and the tool's result go back.
    back = client.chat.completions.create(
        model=model,
        messages=ASK_WEATHER
        + [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {
                            "name": call.function.name,
                            "arguments": call.function.arguments,
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
        ],
        tools=[WEATHER],
        temperature=0,
        max_tokens=16,
    )
    assert back.choices[0].message.content, back
    assert back.choices[0].finish_reason in ("stop", "length"), back
    # A tool message without its call id, and a tool_choice naming no tool, are refused.
    expect_bad_request(
        lambda: client.chat.completions.create(
            model=model,
            messages=ASK_WEATHER + [{"role": "tool", "content": "21"}],
            max_tokens=4,
        )
    )
    expect_bad_request(
        lambda: client.chat.completions.create(
            model=model,
            messages=ASK_WEATHER,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
            max_tokens=4,
        )
    )


CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "country": {"type": "string", "maxLength": 20},
        "population": {"type": "integer", "minimum": 0, "maximum": 100000000},
    },
    "required": ["city", "country", "population"],
    "additionalProperties": False,
}


def check_response_format(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Tell me about Paris."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": CITY, "strict": True},
        },
        temperature=0,
        max_tokens=100,
    )
    assert r.choices[0].finish_reason == "stop", r
    v = json.loads(r.choices[0].message.content)
    assert set(v) == {"city", "country", "population"}, v
    assert isinstance(v["city"], str) and isinstance(v["country"], str), v
    assert isinstance(v["population"], int) and v["population"] >= 0, v
    streamed = ""
    for chunk in client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Tell me about Paris."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": CITY},
        },
        temperature=0,
        max_tokens=100,
        stream=True,
    ):
        for c in chunk.choices:
            streamed += c.delta.content or ""
    assert streamed == r.choices[0].message.content, (streamed, r)

    obj = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Describe a cat in JSON."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=120,
    )
    if obj.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(obj.choices[0].message.content), dict), obj
    else:
        assert obj.choices[0].message.content.startswith("{"), obj

    e = expect_bad_request(
        lambda: client.chat.completions.create(
            model=model,
            messages=QUESTION,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "bad", "schema": {"type": "no-such-type"}},
            },
            max_tokens=4,
        )
    )
    assert "schema" in str(e), e


def check_reasoning(client):
    model = client.models.list().data[0].id
    whole = client.chat.completions.create(
        model=model, messages=QUESTION, temperature=0, max_tokens=12
    )
    message = whole.choices[0].message
    reasoning = (message.model_extra or {}).get("reasoning_content")
    assert reasoning, message
    assert not message.content, message
    assert "<think>" not in reasoning, reasoning
    details = whole.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens == whole.usage.completion_tokens, (
        whole.usage
    )
    streamed, content = "", ""
    for chunk in client.chat.completions.create(
        model=model, messages=QUESTION, temperature=0, max_tokens=12, stream=True
    ):
        for c in chunk.choices:
            streamed += (c.delta.model_extra or {}).get("reasoning_content") or ""
            content += c.delta.content or ""
    assert streamed == reasoning, (streamed, reasoning)
    assert content == "", content


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    client = OpenAI(
        base_url=sys.argv[1],
        api_key=os.environ.get("HEARTH_API_KEY") or "no-key",
        max_retries=0,
        timeout=300,
    )
    model = check_models(client, sys.argv[2] if len(sys.argv) > 2 else None)
    check_chat(client, model)
    check_completions(client, model)
    check_errors(client, model)
    check_tools(client, model)
    check_response_format(client, model)
    checked = "chat, completions, errors, tools, response_format"
    if len(sys.argv) > 3:
        thinking = OpenAI(
            base_url=sys.argv[3],
            api_key=os.environ.get("HEARTH_API_KEY") or "no-key",
            max_retries=0,
            timeout=300,
        )
        check_reasoning(thinking)
        checked += ", reasoning_content"
    print(f"checked: {checked}")
    print(f"openai conformance: ok (openai {openai.__version__}, model {model})")


if __name__ == "__main__":
    main()

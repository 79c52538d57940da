#!/usr/bin/env python3
"""Checks `hearth serve` with the official `openai` Python package.

Usage: openai_conformance.py BASE_URL [MODEL]

BASE_URL is the API root (e.g. http://127.0.0.1:8080/v1); MODEL the id the server should list
(default: the first one it lists). The key comes from HEARTH_API_KEY (any value when the server
has none). Greedy answers are compared whole against streamed; the errors must surface as the
package's typed exceptions. Prints "openai conformance: ok" and exits 0, or fails an assertion.
The server should run with a small context (--ctx 256) so the context-overflow case is quick.
"""

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
    print(f"openai conformance: ok (openai {openai.__version__}, model {model})")


if __name__ == "__main__":
    main()

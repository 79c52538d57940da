#!/usr/bin/env python3
"""Records what llama.cpp's `llama-server /apply-template` renders for each chat template here,
paired with the reference model file of its family (for the BOS/EOS texts), on three
conversations: a system message and a question, a multi-turn chat, and a question without a
generation prompt. (A chat ending with the assistant's turn is not a template test here:
llama-server cuts it after the answer's text, to let the model continue it.) Writes applied.json beside this script.

Usage: record.py LLAMA_SERVER ARCH_DIR    (ARCH_DIR: engine/tests/data/arch)
"""

import json
import os
import subprocess
import sys
import time
import urllib.request

PAIRS = [
    ("Qwen3.5-4B.jinja", "qwen35.gguf"),
    ("google-gemma-4-31B-it.jinja", "gemma4.gguf"),
    ("mistralai-Ministral-3-14B-Reasoning-2512.jinja", "mistral3.gguf"),
    ("HuggingFaceTB-SmolLM3-3B.jinja", "smollm3.gguf"),
    ("ibm-granite-granite-4.0.jinja", "granite.gguf"),
    ("microsoft-Phi-3.5-mini-instruct.jinja", "phi3.gguf"),
    ("openai-gpt-oss-120b.jinja", "gpt-oss.gguf"),
]

CONVERSATIONS = [
    (
        "system and question",
        [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        True,
    ),
    (
        "multi-turn",
        [
            {"role": "system", "content": "Answer in one sentence."},
            {"role": "user", "content": "Name a prime number."},
            {"role": "assistant", "content": "Seven is a prime number."},
            {"role": "user", "content": "And an even one?"},
        ],
        True,
    ),
    (
        "no generation prompt",
        [
            {"role": "user", "content": "Say hello."},
        ],
        False,
    ),
]


def post(port, body):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/apply-template",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    return json.loads(urllib.request.urlopen(req, timeout=30).read())


def main():
    server, arch = sys.argv[1], sys.argv[2]
    here = os.path.dirname(os.path.abspath(__file__))
    out = []
    for i, (template, model) in enumerate(PAIRS):
        port = 18300 + i
        proc = subprocess.Popen(
            [server, "-m", os.path.join(arch, model), "--jinja", "--chat-template-file",
             os.path.join(here, template), "--port", str(port), "-c", "256", "-t", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                    break
                except Exception:
                    time.sleep(0.2)
            for name, messages, gen in CONVERSATIONS:
                try:
                    rendered = post(port, {"messages": messages, "add_generation_prompt": gen})["prompt"]
                except Exception as e:  # a template that refuses a conversation
                    rendered = None
                    print(f"{template} / {name}: {e}", file=sys.stderr)
                out.append({"template": template, "model": model, "conversation": name,
                            "messages": messages, "add_generation_prompt": gen,
                            "rendered": rendered})
        finally:
            proc.terminate()
            proc.wait()
    with open(os.path.join(here, "applied.json"), "w") as f:
        json.dump({"llama_cpp": "b11434 llama-server /apply-template", "cases": out}, f,
                  indent=1, ensure_ascii=False)
    print(f"{len(out)} cases")


if __name__ == "__main__":
    main()

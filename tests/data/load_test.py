#!/usr/bin/env python3
"""Load test for an OpenAI-compatible server such as `hearth serve`.

N clients each stream chat completions back to back for D seconds (a request running at the
deadline is finished and counted). Prints one JSON object:

  requests_completed    streams that ended with a finish reason, the usage chunk and [DONE]
  errors                requests that failed (HTTP error, connection error, error event)
  incomplete            streams that ended without a finish reason or usage
  completion_tokens     sum of the usage chunks' completion_tokens
  completion_tokens_per_s  that over the wall time
  ttft_p50_ms, ttft_p99_ms  time from sending to the first content delta
  peak_rss_mib          with --pid: the server's peak resident memory (VmHWM from /proc), and
  max_sampled_rss_mib   the largest VmRSS sampled every 100 ms during the run

Example: load_test.py --base-url http://127.0.0.1:8080/v1 --clients 32 --duration 60 --pid 1234
Needs the `openai` package (pip install openai).
"""

import argparse
import asyncio
import json
import os
import random
import sys
import time

import openai
from openai import AsyncOpenAI

TOPICS = [
    "the sea",
    "a lighthouse keeper",
    "bread baking",
    "a mountain village",
    "the first snow",
    "a lost cat",
    "an old bicycle",
    "the night sky",
]


def rss_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


class Totals:
    def __init__(self):
        self.completed = 0
        self.errors = 0
        self.incomplete = 0
        self.tokens = 0
        self.ttft = []
        self.error_samples = []

    def error(self, what):
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)


async def one_request(client, args, totals, rng):
    topic = rng.choice(TOPICS)
    start = time.perf_counter()
    first = None
    finish = None
    usage = None
    try:
        stream = await client.chat.completions.create(
            model=args.model,
            messages=[{"role": "user", "content": f"Write a short story about {topic}."}],
            max_tokens=args.max_tokens,
            temperature=0.8,
            seed=rng.randrange(1 << 31),
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for c in chunk.choices:
                if c.delta.content and first is None:
                    first = time.perf_counter()
                if c.finish_reason:
                    finish = c.finish_reason
    except openai.APIError as e:
        totals.error(f"{type(e).__name__}: {e}")
        return
    except Exception as e:  # connection resets and the like
        totals.error(f"{type(e).__name__}: {e}")
        return
    if finish is None or usage is None:
        totals.incomplete += 1
        return
    totals.completed += 1
    totals.tokens += usage.completion_tokens
    if first is not None:
        totals.ttft.append((first - start) * 1000)


async def client_loop(client, args, totals, deadline, seed):
    rng = random.Random(seed)
    while time.perf_counter() < deadline:
        await one_request(client, args, totals, rng)


async def sample_rss(pid, peak, stop):
    while not stop.is_set():
        kib = rss_kib(pid, "VmRSS")
        if kib is not None:
            peak[0] = max(peak[0], kib)
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except asyncio.TimeoutError:
            pass


async def run(args):
    client = AsyncOpenAI(
        base_url=args.base_url,
        api_key=args.api_key or os.environ.get("HEARTH_API_KEY") or "no-key",
        max_retries=0,
        timeout=args.timeout,
    )
    if args.model is None:
        args.model = (await client.models.list()).data[0].id
    totals = Totals()
    peak = [0]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(args.pid, peak, stop)) if args.pid else None
    start = time.perf_counter()
    deadline = start + args.duration
    await asyncio.gather(
        *(client_loop(client, args, totals, deadline, i) for i in range(args.clients))
    )
    wall = time.perf_counter() - start
    stop.set()
    if sampler:
        await sampler
    await client.close()
    out = {
        "clients": args.clients,
        "duration_s": args.duration,
        "wall_s": round(wall, 3),
        "max_tokens": args.max_tokens,
        "requests_completed": totals.completed,
        "errors": totals.errors,
        "incomplete": totals.incomplete,
        "completion_tokens": totals.tokens,
        "completion_tokens_per_s": round(totals.tokens / wall, 2) if wall > 0 else 0.0,
        "ttft_p50_ms": percentile(totals.ttft, 50),
        "ttft_p99_ms": percentile(totals.ttft, 99),
        "error_samples": totals.error_samples,
    }
    if args.pid:
        hwm = rss_kib(args.pid, "VmHWM")
        out["peak_rss_mib"] = round(hwm / 1024, 1) if hwm is not None else None
        out["max_sampled_rss_mib"] = round(peak[0] / 1024, 1)
    for k in ("ttft_p50_ms", "ttft_p99_ms"):
        if out[k] is not None:
            out[k] = round(out[k], 1)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True, help="API root, e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=60.0, help="seconds")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--model", default=None, help="default: the first model listed")
    p.add_argument("--api-key", default=None, help="default: HEARTH_API_KEY")
    p.add_argument("--pid", type=int, default=None, help="the server's pid, for its memory")
    p.add_argument("--timeout", type=float, default=300.0, help="per request, seconds")
    args = p.parse_args()
    out = asyncio.run(run(args))
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

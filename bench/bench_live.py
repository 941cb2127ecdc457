"""Live orchestration overhead against the fake OpenAI-compatible server.

3 models x k=5 x 200 questions, every call delayed by 200 ms on the server,
which runs in its own process so the client's CPU time is its own. Reports
wall time against the ideal (request rounds x latency) and against a bare
loop sending the same requests through the same HTTP client with the same
concurrency and no orchestration (measured in the same run, against the same server), requests
sent, client CPU per sample and the server's own CPU, for a server that
honours ``n`` and one that does not (parallel single requests).

    python bench/bench_live.py [--questions 200] [--latency 0.2] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx
import openai
from fake_server_process import free_port, start_server

from slm_mux.backends.openai.client import OpenAICompatibleBackend
from slm_mux.collect import collect
from slm_mux.members import Member, close_members
from slm_mux.store import Store
from slm_mux.tasks import Question, get_task

MODELS = ("m1", "m2", "m3")


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the server process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_bare(
    base_url: str, questions: int, k: int, concurrency: int, honour_n: bool
) -> float:
    """Wall seconds for the same requests sent by a bare loop over the same HTTP client.

    The ``openai`` SDK's client, the same POSTs and concurrency, no
    orchestration: no engine, no parsing into completions, no store.
    """
    client = openai.AsyncOpenAI(api_key="unused", base_url=base_url, max_retries=0, timeout=30)
    gates = {name: asyncio.Semaphore(concurrency) for name in MODELS}

    async def one(model: str, i: int, n: int) -> None:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": f"What is {i} + {i}?"}],
            "n": n,
            "temperature": 0.3,
        }
        async with gates[model]:
            await client.post("/chat/completions", body=body, cast_to=httpx.Response)

    per_question = [k] if honour_n else [1] * k
    start = time.perf_counter()
    try:
        await asyncio.gather(
            *(one(m, i, n) for m in MODELS for i in range(questions) for n in per_question)
        )
    finally:
        await client.close()
    return time.perf_counter() - start


async def run_once(base_url: str, questions: int, k: int, concurrency: int) -> dict[str, float]:
    task = get_task("gsm8k")
    items = [Question(f"q{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(questions)]
    members = [
        Member(
            OpenAICompatibleBackend(
                name, base_url=base_url, model=name, max_concurrency=concurrency, timeout_s=30
            ),
            k=k,
        )
        for name in MODELS
    ]
    with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "s.db") as store:
        cpu, wall = time.process_time(), time.perf_counter()
        report = await collect(members, task, items, split="test", store=store)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stored = store.count()
    await close_members(members)
    assert report.complete and stored == len(MODELS) * questions * k
    return {"wall": wall, "cpu": cpu, "samples": stored}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=32, help="per model endpoint")
    args = parser.parse_args()
    print(
        f"{len(MODELS)} models x k={args.k} x {args.questions} questions, "
        f"{args.latency * 1000:.0f} ms per call, concurrency {args.concurrency} per model"
    )
    print(
        "| server | requests | ideal s | bare client s | slm-mux s | vs bare | "
        "client CPU per sample | server CPU s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for honour_n in (True, False):
        port = free_port()
        server = start_server(port, args.latency, honour_n=honour_n)
        base_url = f"http://127.0.0.1:{port}/v1"
        try:
            bare = asyncio.run(
                run_bare(base_url, args.questions, args.k, args.concurrency, honour_n)
            )
            with urllib.request.urlopen(f"{base_url[:-3]}/stats", timeout=5) as reply:
                before = int(json.load(reply)["requests"])
            cpu_before = server_cpu(server.pid)
            result = asyncio.run(run_once(base_url, args.questions, args.k, args.concurrency))
            cpu_server = server_cpu(server.pid) - cpu_before
            with urllib.request.urlopen(f"{base_url[:-3]}/stats", timeout=5) as reply:
                requests = int(json.load(reply)["requests"]) - before
        finally:
            server.terminate()
            server.wait()
        per_model = requests / len(MODELS)
        ideal = math.ceil(per_model / args.concurrency) * args.latency
        label = "honours n" if honour_n else "ignores n"
        cpu_ms = 1000 * result["cpu"] / result["samples"]
        print(
            f"| {label} | {requests} | {ideal:.2f} | {bare:.2f} | {result['wall']:.2f} | "
            f"{result['wall'] / bare - 1:+.0%} | {cpu_ms:.2f} ms | {cpu_server:.2f} |"
        )


if __name__ == "__main__":
    main()

"""One dead model must not slow every answer (issue 18 §3, issue 17 §3).

**serve.** ``slm-mux serve`` (a subprocess) over a pool of two healthy models on the fake
OpenAI-compatible server (its own process, ``--latency`` seconds per call), then over the
same two plus a third model on a closed port. ``--requests`` chat requests for model
``slm-mux`` are sent one after another to each; the table gives p50, p90 and the slowest
latency, the first request's (it discovers the dead model) and the p50 ratio to the healthy
two alone. Goal: p50 within 1.5x.

**compare.** ``compare`` (every method, through the library) on ``--questions`` questions
with three models on an in-process fake server, once healthy, once with two of them broken
(one on a closed port, one answering every request with HTTP 500): wall seconds, requests
the broken models were sent and the requests they skipped.

Every pool uses the defaults of the pool file (``wait_budget_s`` 3 s, ``backoff_max_s``
30 s, 4 retries).

    python bench/bench_dead_model.py [--requests 40] [--latency 0.02] [--questions 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench_serve import checked, percentile, start_serve
from fake_server_process import free_port, start_server

from slm_mux.backends.openai.client import OpenAICompatibleBackend
from slm_mux.backends.openai.http import HttpClient
from slm_mux.compare import compare
from slm_mux.members import Member, close_members
from slm_mux.methods import compare_methods
from slm_mux.store import Store
from slm_mux.tasks import Question, get_task
from slm_mux.testing import Fault, run_fake_server


def write_pool(folder: Path, name: str, urls: dict[str, str]) -> Path:
    """A pool file of ``urls`` (model name -> server URL), k = 3."""
    lines = ["defaults: {temperature: 0.3, k: 3, max_tokens: 64, seed: 0}", "models:"]
    lines += [
        f"  - {{name: {model}, backend: openai, base_url: '{url}', model: {model}}}"
        for model, url in urls.items()
    ]
    pool = folder / name
    pool.write_text("\n".join(lines) + "\n")
    return pool


async def sequential(base_url: str, requests: int) -> list[float]:
    """Latencies of ``requests`` chat requests sent one after another for ``slm-mux``."""
    client = HttpClient(base_url, api_key="unused")
    latencies = []
    try:
        for number in range(requests):
            body = {"model": "slm-mux", "messages": [{"role": "user", "content": f"{number}+1?"}]}
            start = time.perf_counter()
            checked(await client.post_chat(json.dumps(body).encode()))
            latencies.append(time.perf_counter() - start)
    finally:
        await client.aclose()
    return latencies


def serve_latencies(pool: Path, requests: int, log: Path) -> list[float]:
    """The sequential latencies through ``slm-mux serve`` over ``pool``."""
    port = free_port()
    server = start_serve(pool, port, log, workers=1)
    try:
        return asyncio.run(sequential(f"http://127.0.0.1:{port}/v1", requests))
    finally:
        server.terminate()
        server.wait()


def serve_rows(requests: int, latency: float) -> list[str]:
    """The serve table: the healthy two alone, then with a dead third."""
    fake_port = free_port()
    fake = start_server(fake_port, latency)
    healthy = {m: f"http://127.0.0.1:{fake_port}/v1" for m in ("m1", "m2")}
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    rows = [
        "| pool | p50 s | p90 s | slowest s | first s | p50 vs healthy two |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    try:
        with tempfile.TemporaryDirectory() as folder:
            base = None
            for label, urls in (
                ("two healthy models", healthy),
                ("the same + one on a closed port", {**healthy, "dead": dead}),
            ):
                pool = write_pool(Path(folder), f"{len(urls)}.yaml", urls)
                times = serve_latencies(pool, requests, Path(folder) / "serve.log")
                p50 = percentile(times, 50)
                base = base or p50
                rows.append(
                    f"| {label} | {p50:.4f} | {percentile(times, 90):.4f} | {max(times):.3f} "
                    f"| {times[0]:.3f} | {p50 / base:.2f}x |"
                )
    finally:
        fake.terminate()
        fake.wait()
    return rows


async def compare_once(urls: Sequence[str], questions: int) -> tuple[float, int, int]:
    """Wall seconds of every compare method over models at ``urls``; requests sent to the
    models after the first and requests they skipped."""
    backends = [
        OpenAICompatibleBackend(f"m{i}", base_url=url, model=f"m{i}") for i, url in enumerate(urls)
    ]
    members = [Member(backend, k=3, max_tokens=64) for backend in backends]
    items = [Question(f"q{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(questions)]
    with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "c.db") as store:
        start = time.perf_counter()
        try:
            await compare(
                members,
                get_task("exact"),
                items,
                store=store,
                methods=compare_methods(),
                settings={},
                validation_accuracy={"m0": 0.9},
            )
        finally:
            await close_members(members)
        wall = time.perf_counter() - start
    sent = sum(s.requests for b in backends[1:] for s in b.replica_stats())
    return wall, sent, sum(b.skipped for b in backends[1:])


def compare_rows(questions: int) -> list[str]:
    """The compare table: three healthy models, then two of them broken."""
    rows = [
        "| models | wall s | requests to m1, m2 | requests m1, m2 skipped |",
        "|---|---:|---:|---:|",
    ]
    with run_fake_server() as (good, _), run_fake_server() as (failing, server):
        server.faults.randomly(Fault.error(500, "always"), 1.0)
        dead = f"http://127.0.0.1:{free_port()}/v1"
        for label, urls in (
            ("3 healthy", [good, good, good]),
            ("m1 on a closed port, m2 always HTTP 500", [good, dead, failing]),
        ):
            wall, sent, skipped = asyncio.run(compare_once(urls, questions))
            rows.append(f"| {label} | {wall:.2f} | {sent} | {skipped} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--questions", type=int, default=3)
    args = parser.parse_args()
    print(f"serve: {args.requests} sequential requests, {args.latency:g} s per model call\n")
    print("\n".join(serve_rows(args.requests, args.latency)))
    print(f"\ncompare: every method, {args.questions} questions\n")
    print("\n".join(compare_rows(args.questions)))


if __name__ == "__main__":
    main()

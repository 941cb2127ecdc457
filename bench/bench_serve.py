"""Load on ``slm-mux serve``: latency the server adds over its pool, errors, CPU per request.

100 concurrent clients each send 5 chat requests, one after another, for model
``slm-mux`` to ``slm-mux serve`` (a subprocess) over a pool of 3 models, each on its
own fake OpenAI-compatible server process that answers after 200 ms. Then the same
requests go directly to the three models (each request: the three calls at once, the
prompt and ``n = k`` the mux sends, timed until the slowest answers), with the same
concurrency. Both paths' clients are the HTTP client the server itself uses upstream
(:class:`slm_mux.backends.openai.http.HttpClient`: ``aiohttp``, raw JSON), so the client side
costs the same per call and the difference is the server's. Prints a Markdown table: p50 and
p99 latency of both, what the server adds (the difference of the percentiles),
errors, and the server's CPU time per request (its processes', from /proc).

    python bench/bench_serve.py [--clients 100] [--requests 5] [--latency 0.2] [--k 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from fake_server_process import free_port, start_server, wait_until_up

from slm_mux.backends.openai.http import HttpClient, Reply
from slm_mux.live import ChatTask
from slm_mux.tasks import get_task

MODELS = ("m1", "m2", "m3")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` and its children have used so far (Linux)."""

    def stat(path: Path) -> list[str]:
        return path.read_text().rsplit(")", 1)[1].split()

    total = 0
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat(path)
        except OSError:
            continue  # the process ended meanwhile
        if path.parent.name == str(pid) or fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def question(client: int, request: int) -> list[dict[str, str]]:
    """The chat messages of one request: a different question each time."""
    return [{"role": "user", "content": f"What is {client} + {request}?"}]


def write_pool(folder: Path, ports: Sequence[int], k: int, concurrency: int) -> Path:
    """A pool file of the three fake-server models."""
    lines = [f"defaults: {{temperature: 0.3, k: {k}, max_tokens: 64, seed: 0}}", "models:"]
    for name, port in zip(MODELS, ports, strict=True):
        lines.append(
            f"  - {{name: {name}, backend: openai, base_url: 'http://127.0.0.1:{port}/v1', "
            f"model: {name}, max_concurrency: {concurrency}}}"
        )
    pool = folder / "pool.yaml"
    pool.write_text("\n".join(lines) + "\n")
    return pool


def start_serve(pool: Path, port: int, log: Path, workers: int) -> subprocess.Popen[bytes]:
    """``slm-mux serve`` on ``port``, once ``/health`` answers; the caller terminates it."""
    argv = [sys.executable, "-m", "slm_mux", "serve", "--pool", str(pool), "--port", str(port)]
    argv += ["--workers", str(workers)]
    with log.open("wb") as sink:
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=sink)
    try:
        wait_until_up(server, f"http://127.0.0.1:{port}/health", "slm-mux serve")
    except SystemExit:
        raise SystemExit(f"slm-mux serve did not start:\n{log.read_text()}") from None
    return server


def checked(reply: Reply) -> Reply:
    """``reply``, or an error when its status is one."""
    if reply.status >= 400:
        raise RuntimeError(f"{reply.status}: {reply.text[:200]}")
    return reply


Send = Callable[[list[dict[str, str]]], Awaitable[None]]


async def load(send: Send, clients: int, requests: int) -> tuple[list[float], list[str]]:
    """``clients`` concurrent clients, each sending ``requests`` in turn: latencies, errors."""
    latencies: list[float] = []
    errors: list[str] = []

    async def client(number: int) -> None:
        for request in range(requests):
            start = time.perf_counter()
            try:
                await send(question(number, request))
            except Exception as error:  # every failure is counted, the first few shown
                errors.append(f"{type(error).__name__}: {error}")
                continue
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(client(number) for number in range(clients)))
    return latencies, errors


async def through_mux(
    base_url: str, pid: int, clients: int, requests: int
) -> tuple[list[float], list[str], float]:
    """The load sent to ``slm-mux serve`` (process ``pid``) for model ``slm-mux``, and the
    CPU seconds the server spent on it."""
    client = HttpClient(base_url, api_key="unused")

    async def send(messages: list[dict[str, str]]) -> None:
        body = {"model": "slm-mux", "messages": messages}
        reply = checked(await client.post_chat(json.dumps(body).encode()))
        if not json.loads(reply.content)["choices"][0]["message"]["content"]:
            raise RuntimeError("empty reply")

    try:
        await load(send, clients, 1)  # warm-up: one wave opens every connection the load uses
        cpu = process_cpu(pid)
        latencies, errors = await load(send, clients, requests)
        return latencies, errors, process_cpu(pid) - cpu
    finally:
        await client.aclose()


async def direct(
    ports: Sequence[int], k: int, clients: int, requests: int
) -> tuple[list[float], list[str]]:
    """The same load sent straight to the three models, the mux's prompt and ``n = k``."""
    task = get_task("exact")
    models = [
        (name, HttpClient(f"http://127.0.0.1:{port}/v1", api_key="unused"))
        for name, port in zip(MODELS, ports, strict=True)
    ]

    async def send(messages: list[dict[str, str]]) -> None:
        chat = ChatTask(task, messages)
        prompt = chat.messages(chat.question)
        body = {"messages": prompt, "n": k, "temperature": 0.3, "max_tokens": 64}
        replies = await asyncio.gather(
            *(
                client.post_chat(json.dumps({"model": name, **body}).encode())
                for name, client in models
            )
        )
        for reply in replies:
            checked(reply)

    try:
        await load(send, clients, 1)
        return await load(send, clients, requests)
    finally:
        for _, client in models:
            await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=5, help="per client, one after another")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per model call")
    parser.add_argument("--k", type=int, default=3, help="samples per model")
    parser.add_argument("--workers", type=int, default=1, help="slm-mux serve --workers")
    args = parser.parse_args()
    ports = [free_port() for _ in MODELS]
    fakes = [start_server(port, args.latency) for port in ports]
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        pool = write_pool(Path(folder), ports, args.k, max(args.clients, 1))
        serve = start_serve(pool, port, Path(folder) / "serve.log", args.workers)
        try:
            bare, bare_errors = asyncio.run(direct(ports, args.k, args.clients, args.requests))
            base_url = f"http://127.0.0.1:{port}/v1"
            mux, mux_errors, cpu = asyncio.run(
                through_mux(base_url, serve.pid, args.clients, args.requests)
            )
        finally:
            for process in (serve, *fakes):
                process.terminate()
                process.wait()
    total = args.clients * args.requests
    print(
        f"{args.clients} clients x {args.requests} requests, {len(MODELS)} models x "
        f"k={args.k}, {args.latency * 1000:.0f} ms per model call"
    )
    print("| path | requests | errors | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for label, latencies, errors in (
        ("direct", bare, bare_errors),
        ("slm-mux serve", mux, mux_errors),
    ):
        p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
        print(f"| {label} | {total} | {len(errors)} | {p50:.0f} | {p99:.0f} |")
    added50 = (percentile(mux, 50) - percentile(bare, 50)) * 1000
    added99 = (percentile(mux, 99) - percentile(bare, 99)) * 1000
    print(f"| added by the server | | | {added50:.0f} | {added99:.0f} |")
    print(f"\nserver CPU per request: {cpu / total * 1000:.2f} ms")
    for error in sorted(set(bare_errors + mux_errors))[:5]:
        print(f"error: {error}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Orchestration overhead of ``slm-mux compare``'s methods against the fake server.

A pool of 3 models on the fake OpenAI-compatible server (its own process, every call
delayed by ``--latency`` on the server, ``n`` honoured), ``--questions`` questions of the
``exact`` task, a fresh temporary store. Each phase of a comparison is run and timed on
its own through the library (:func:`slm_mux.compare.compare`): the shared independent
sampling (what ``slm-mux``, ``agent-forest``, ``sc``, ``single`` and ``oracle`` are
computed from), then ``debate``, ``moa`` and ``mav`` with their default settings.

Per method: calls (from the comparison table, checked against the requests the server
counted), wall seconds, the ideal seconds, the overhead (wall - ideal) in all and per
question, client CPU per call (``time.process_time()`` around the phase), and the
seconds a second run on the same store takes (every call replayed from the store, no
request sent: the orchestration and store alone).

The ideal: all questions run at once and the calls of one round/layer of a question go
out together, so with unbounded concurrency a method takes its sequential call depth
per question x latency (independent 1, debate ``rounds``, moa ``layers``, mav 2:
generate, then verify). Each model's backend allows ``--concurrency`` requests in
flight, so a model sent ``c`` calls needs at least ``ceil(c / concurrency)`` latencies.
The ideal is the larger of the two bounds (calls per model counted from the store).

    python bench/bench_compare.py [--questions 50] [--latency 0.1] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sqlite3
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from fake_server_process import free_port, start_server

from slm_mux.backends.openai.client import OpenAICompatibleBackend
from slm_mux.compare import compare
from slm_mux.comparison import SHARED
from slm_mux.members import Member, close_members
from slm_mux.methods import DebateSettings, MoASettings
from slm_mux.store import Store
from slm_mux.tasks import Question, get_task

MODELS = ("m1", "m2", "m3")
PHASES = (SHARED, "debate", "moa", "mav")
"""The phases timed: the shared independent sampling (run as ``slm-mux``), then each
discussion method."""


def server_requests(base_url: str) -> int:
    with urllib.request.urlopen(f"{base_url[:-3]}/stats", timeout=5) as reply:
        return int(json.load(reply)["requests"])


def depth(method: str) -> int:
    """Sequential calls per question with the method's default settings."""
    if method == SHARED:
        return 1
    if method == "debate":
        return DebateSettings().rounds
    if method == "moa":
        return MoASettings().layers
    return 2  # mav: generate, then verify


def requests_per_model(store_path: Path, method: str) -> dict[str, int]:
    """Requests the store recorded for ``method``, by model."""
    with sqlite3.connect(store_path) as conn:
        rows = conn.execute(
            "SELECT model, SUM(requests) FROM calls WHERE method = ? GROUP BY model", (method,)
        ).fetchall()
    return {model: int(total) for model, total in rows}


def members(base_url: str, concurrency: int) -> list[Member]:
    return [
        Member(
            OpenAICompatibleBackend(
                name,
                base_url=base_url,
                model=name,
                max_concurrency=concurrency,
                timeout_s=30,
                supports_n=True,
            ),
            k=3,
        )
        for name in MODELS
    ]


def run_phase(
    base_url: str, store_path: Path, questions: list[Question], method: str, concurrency: int
) -> tuple[int, float, float]:
    """One compare run of ``method`` (the shared sampling as ``slm-mux``) on a fresh set
    of backends: (calls in its table row, wall seconds, client CPU seconds)."""
    name = "slm-mux" if method == SHARED else method
    task = get_task("exact")
    pool = members(base_url, concurrency)

    async def run() -> int:
        try:
            with Store(store_path) as store:
                table = await compare(
                    pool,
                    task,
                    questions,
                    store=store,
                    methods=[name],
                    settings={},
                    show_progress=False,
                )
        finally:
            await close_members(pool)
        return table.methods[name].calls

    cpu, wall = time.process_time(), time.perf_counter()
    calls = asyncio.run(run())
    return calls, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=32, help="per model endpoint")
    args = parser.parse_args()
    questions = [
        Question(f"q{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(args.questions)
    ]
    lat = args.latency
    port = free_port()
    server = start_server(port, lat)
    base_url = f"http://127.0.0.1:{port}/v1"
    rows = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            store_path = Path(folder) / "compare.db"
            for method in PHASES:
                print(f"bench_compare: {method} ...", file=sys.stderr, flush=True)
                before = server_requests(base_url)
                calls, wall, cpu = run_phase(
                    base_url, store_path, questions, method, args.concurrency
                )
                sent = server_requests(base_url) - before
                per_model = requests_per_model(store_path, method)
                replay_calls, replay_wall, _ = run_phase(
                    base_url, store_path, questions, method, args.concurrency
                )
                resent = server_requests(base_url) - before - sent
                if sent != calls or replay_calls != calls or resent:
                    raise SystemExit(
                        f"{method}: table says {calls} calls, server counted {sent}; "
                        f"replay says {replay_calls} and sent {resent}"
                    )
                waves = max(math.ceil(c / args.concurrency) for c in per_model.values())
                ideal = max(depth(method), waves) * lat
                rows.append((method, calls, wall, ideal, cpu, replay_wall, depth(method), waves))
                print(
                    f"bench_compare: {method}: {calls} calls in {wall:.2f} s, "
                    f"replay {replay_wall:.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait()

    n = args.questions
    print(
        f"{len(MODELS)} models on one fake server, {n} questions (exact task), "
        f"{lat * 1000:.0f} ms per call, concurrency {args.concurrency} per model, "
        "n honoured; default method settings"
    )
    print()
    print(
        "| method | questions | calls | depth | waves | wall s | ideal s | overhead s | "
        "overhead per question ms | client CPU per call ms | replay s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method, calls, wall, ideal, cpu, replay, dep, waves in rows:
        overhead = wall - ideal
        print(
            f"| {method} | {n} | {calls} | {dep} | {waves} | {wall:.2f} | {ideal:.2f} | "
            f"{overhead:+.2f} | {1000 * overhead / n:.1f} | {1000 * cpu / calls:.2f} | "
            f"{replay:.2f} |"
        )
    print()
    print(
        "depth: sequential calls per question; waves: ceil(most requests to one model / "
        "concurrency); ideal = max(depth, waves) x latency; replay: the same run again, "
        "every call from the store, no request sent."
    )


if __name__ == "__main__":
    main()

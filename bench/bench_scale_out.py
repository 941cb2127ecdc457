"""How the client's own cost grows with requests in flight, over replicas of one model.

One model served by R replicas of the fake OpenAI-compatible server, each in
its own process (so the client's CPU time is its own). For each level N,
``collect`` asks N questions at once, k samples each in one request (the
server honours ``n``), and every request waits ``latency`` seconds on the
server, long enough for all N to be in flight together (the servers report the
most they held at once). Reported: wall time, the client's CPU time (user +
system, every thread: ``time.process_time``) per sample and per request,
and the client's peak resident memory so far (the process's maximum, over every level run).

    python bench/bench_scale_out.py [--levels 10,100,1000,3000,10000] [--replicas 1,3,10] [--k 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import tempfile
import time
import urllib.request
from pathlib import Path

from fake_server_process import free_port, start_server

from slm_mux.backends.openai.client import OpenAICompatibleBackend
from slm_mux.collect import collect
from slm_mux.members import Member, close_members
from slm_mux.store import Store
from slm_mux.tasks import Question, get_task


def server_stats(base_url: str) -> dict[str, int]:
    """The fake server's request count and the most requests it held at once."""
    with urllib.request.urlopen(f"{base_url[:-3]}/stats", timeout=30) as reply:
        return dict(json.load(reply))


async def run_level(urls: list[str], in_flight: int, k: int) -> dict[str, float]:
    """Collect ``in_flight`` questions at once over ``urls``; wall, CPU and samples."""
    capacity = math.ceil(in_flight / len(urls))
    backend = OpenAICompatibleBackend(
        "scaled", base_url=urls, model="m", max_concurrency=capacity, timeout_s=600
    )
    member = Member(backend, k=k)
    items = [Question(f"q{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(in_flight)]
    with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "s.db") as store:
        cpu, wall = time.process_time(), time.perf_counter()
        report = await collect([member], get_task("gsm8k"), items, split="test", store=store)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stored = store.count()
    await close_members([member])
    assert report.complete and stored == in_flight * k, report.summary()
    requests = sum(s.requests for s in backend.replica_stats())
    return {"wall": wall, "cpu": cpu, "samples": stored, "requests": requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="10,100,1000,3000,10000", help="requests in flight")
    parser.add_argument("--replicas", default="1,3,10", help="replica counts to try")
    parser.add_argument("--k", type=int, default=3, help="samples per request")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    print(f"one model, k={args.k} samples per request (n honoured), one request per question")
    print(
        "| replicas | in flight (asked) | most in flight (servers) | server latency s | "
        "wall s | client CPU s | CPU per sample | CPU per request | client peak RSS so far |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for replicas in (int(r) for r in args.replicas.split(",")):
        for level in levels:
            # Long enough for every request to be sent before the first is answered.
            latency = max(1.0, level * 0.002)
            ports = [free_port() for _ in range(replicas)]
            servers = [start_server(port, latency) for port in ports]
            urls = [f"http://127.0.0.1:{port}/v1" for port in ports]
            try:
                result = asyncio.run(run_level(urls, level, args.k))
                held = sum(server_stats(url)["max_in_flight"] for url in urls)
            finally:
                for server in servers:
                    server.terminate()
                for server in servers:
                    server.wait()
            rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            per_sample = 1000 * result["cpu"] / result["samples"]
            per_request = 1000 * result["cpu"] / result["requests"]
            print(
                f"| {replicas} | {level:,} | {held:,} | {latency:g} | {result['wall']:.2f} | "
                f"{result['cpu']:.2f} | {per_sample:.2f} ms | {per_request:.2f} ms | "
                f"{rss_mib:.0f} MiB |",
                flush=True,
            )


if __name__ == "__main__":
    main()

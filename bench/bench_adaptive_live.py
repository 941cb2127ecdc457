"""Adaptive SLM-MUX live: latency against cost on the loopback server.

3 models behind the fake OpenAI-compatible server, every call delayed by a fixed
latency (default 200 ms); each answer is drawn from its sample seed, so every policy
sees the same per-sample stream. Questions are asked one after another (latency per
question, no queueing). Per policy: p50 and p90 latency per question, rounds and
requests per question, samples per question against full's, accuracy, and how often
the decision (model, answer) is full SLM-MUX's.

    python bench/bench_adaptive_live.py [--questions 40] [--k 5] [--latency 0.2]
        [--profile mixed|agreeing]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics

from slm_mux.backends.openai.client import OpenAICompatibleBackend
from slm_mux.engine import Mux, MuxAnswer
from slm_mux.members import Member
from slm_mux.tasks import Question
from slm_mux.testing.fake_server import AnswerFn, FakeServerConfig, run_fake_server

PROFILES = {
    "mixed": {"strong": 0.9, "middle": 0.75, "weak": 0.6},
    "agreeing": {"strong": 0.97, "middle": 0.93, "weak": 0.9},
}
"""Each model's chance of the right answer on the easiest question, per pool profile."""
MODELS = ("strong", "middle", "weak")
POLICIES = ("full", "exact", "first-agree", "two-unanimous", "agree:0.67")


def _unit(*parts: object) -> float:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def answer_by_skill(skill: dict[str, float]) -> AnswerFn:
    """Right (42) with the model's skill less the question's difficulty; else a wrong
    answer, most often the same popular one."""

    def answer(model: str, prompt: str, seed: int | None, index: int) -> str:
        difficulty = _unit("difficulty", prompt)
        sample = (seed or 0) + index
        if _unit(model, prompt, sample) < skill[model] - 0.5 * difficulty:
            return "Answer: 42"
        wrong = _unit("wrong", model, prompt, sample)
        return f"Answer: {7 if wrong < 0.5 else 1 + int(wrong * 6)}"

    return answer


async def run(base_url: str, policy: str, questions: int, k: int) -> list[MuxAnswer]:
    members = [
        Member(OpenAICompatibleBackend(name, base_url=base_url, model=name), k=k) for name in MODELS
    ]
    mux = Mux(members, task="exact", adaptive=policy)
    try:
        return [
            await mux.aask(Question(f"q{i}", f"Question {i}: what is six times seven?", "42"))
            for i in range(questions)
        ]
    finally:
        await mux.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--profile", choices=PROFILES, default="mixed", help="the pool's models")
    args = parser.parse_args()
    print(
        f"{len(MODELS)} models ({args.profile}) x k={args.k} x {args.questions} questions, "
        f"{args.latency * 1000:.0f} ms per call, one question at a time"
    )
    print(
        "| policy | p50 latency s | p90 latency s | rounds | requests | samples | "
        "of full | accuracy | same decision as full |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    config = FakeServerConfig(
        answers={"*": answer_by_skill(PROFILES[args.profile])}, latency_s=args.latency
    )
    with run_fake_server(config) as (base_url, server):
        full: list[MuxAnswer] = []
        for policy in POLICIES:
            before = server.request_count
            answers = asyncio.run(run(base_url, policy, args.questions, args.k))
            requests = (server.request_count - before) / args.questions
            full = full or answers
            latency = [a.latency_s for a in answers]
            drawn = statistics.mean(a.samples_drawn for a in answers)
            same = statistics.mean(
                (a.model, a.answer) == (f.model, f.answer)
                for a, f in zip(answers, full, strict=True)
            )
            print(
                f"| {policy} | {statistics.median(latency):.2f} | "
                f"{statistics.quantiles(latency, n=10)[-1]:.2f} | "
                f"{statistics.mean(a.rounds for a in answers):.2f} | {requests:.2f} | "
                f"{drawn:.2f} | {drawn / answers[0].samples_full:.0%} | "
                f"{statistics.mean(a.answer == '42' for a in answers):.1%} | {same:.1%} |"
            )


if __name__ == "__main__":
    main()

"""Which prompt frame gets answers out of a *base* model (docs/real-models.md).

Gemma 3 270M in the fetched pool is a base model: it has no chat template, so slm-mux
gives it the plain template (every message, then a blank line). This probe asks the
same validation questions of the experiment's sets in three frames, through
llama-cpp-python in process (samplers off: plain temperature sampling), and grades the
replies with the sets' own tasks:

- ``plain``: slm-mux's plain template of the task's messages;
- ``question-answer``: ``Question: <the task's user turn>`` then ``Answer:``;
- ``few-shot``: the plain template after three solved validation questions (their
  reply is the answer line the task asks for: ``#### 6``, ``Answer: C``).

It prints, per set and frame, the accuracy over every sample, the share of samples
with an answer the task can read, and the answer given most often across all questions
with its share of the samples (a model that answers every question alike is
consistent, so it looks confident to SLM-MUX, without being right).

    pip install 'llama-cpp-python'
    python scripts/probe_base_frames.py [--model FILE.gguf] [--sets DIR] [--k 3]
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from slm_mux.backends.transformers_local import plain_prompt
from slm_mux.tasks import Question, Task, get_task
from slm_mux.tasks.base import Message
from slm_mux.tasks.custom import load_custom

POOL = Path("~/.cache/slm-mux/real-pool").expanduser()
SHOTS = 3
"""Solved validation questions before each asked one (the first ones of the file)."""


def solved(question: Question) -> str:
    """The reply a few-shot example shows: the answer line the task's prompt asks for."""
    return f"Answer: {question.reference}" if question.choices else f"#### {question.reference}"


def frames(task: Task, shots: list[Question]) -> dict[str, Callable[[Question], str]]:
    """Each frame's prompt text for a question."""

    def user(question: Question) -> str:
        return "\n\n".join(m["content"] for m in task.messages(question) if m["role"] == "user")

    examples: list[Message] = []
    for shot in shots:
        examples += [*task.messages(shot), {"role": "assistant", "content": solved(shot)}]
    return {
        "plain": lambda q: plain_prompt(task.messages(q)),
        "question-answer": lambda q: f"Question: {user(q)}\n\nAnswer:",
        "few-shot": lambda q: plain_prompt([*examples, *task.messages(q)]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=POOL / "gemma-3-270m-q4_k_m.gguf")
    parser.add_argument("--sets", type=Path, default=POOL / "sets")
    parser.add_argument("--questions", type=int, default=17, help="asked per set")
    parser.add_argument("--k", type=int, default=3, help="samples per question (seeds 0..k-1)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    from llama_cpp import Llama

    model = Llama(
        model_path=str(args.model), n_ctx=2048, n_threads=args.threads, seed=0, verbose=False
    )
    print("| set | frame | accuracy | readable | most frequent answer (share of samples) |")
    print("|---|---|---:|---:|---|")
    for name in ("wordprob", "facts"):
        typed = load_custom(str(args.sets / f"{name}-validation.jsonl"))
        task = get_task(typed[0][0])
        questions = [question for _, question in typed]
        shots, asked = questions[:SHOTS], questions[SHOTS : SHOTS + args.questions]
        for frame, prompt in frames(task, shots).items():
            correct = readable = 0
            given: Counter[str] = Counter()
            for question in asked:
                for seed in range(args.k):
                    completion = model.create_completion(
                        prompt(question),
                        max_tokens=64,
                        temperature=0.3,
                        top_p=1,
                        top_k=0,
                        min_p=0,
                        repeat_penalty=1,
                        stop=["\n\n"],
                        seed=seed,
                    )
                    assert isinstance(completion, dict)  # not a stream
                    reply = completion["choices"][0]["text"]
                    answer = task.extract(reply)
                    readable += answer is not None
                    correct += task.grade(answer, question.reference)
                    given.update([] if answer is None else [task.canonical(answer)])
            total = len(asked) * args.k
            top, times = given.most_common(1)[0] if given else ("-", 0)
            print(
                f"| {name} | {frame} | {correct / total:.3f} | {readable / total:.3f} "
                f"| {top} ({times / total:.3f}) |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""lm-eval and inspect_ai evaluating ``slm-mux serve`` on the bundled tiny models, against
slm-mux's own ``eval`` of the same questions.

Serves the bundled pool (``--task arith``), runs lm-eval (``local-chat-completions``, a
task YAML over a local JSON Lines file) and inspect_ai (``openai-api``) on ``--questions``
arith test questions for model ``slm-mux`` and each ``--models`` pool model, then collects
``--k`` samples per model of the same questions with slm-mux and evaluates them. Prints a
Markdown table: each harness's own score, slm-mux's grader on the same replies, and
slm-mux's ``eval``.

    python bench/bench_harnesses.py [--questions 30] [--models tiny-generalist] [--k 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.interop.harness_runs import (
    run_inspect,
    run_lm_eval,
    serving,
    write_lm_eval_task,
    write_pool,
    write_questions,
)

from slm_mux.collect import collect_pool
from slm_mux.demo import bundled_models
from slm_mux.pool import load_pool
from slm_mux.study import Study
from slm_mux.tasks import get_task
from slm_mux.tasks.arith import generate_questions
from slm_mux.tasks.loading import QuestionSet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--models", default="tiny-generalist")
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()
    arith = get_task("arith")
    questions = generate_questions("test", args.questions)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        data = write_questions(work / "arith.jsonl", questions)
        pool = write_pool(work / "pool.yaml", [path.name for path in bundled_models()])
        tasks = write_lm_eval_task(work / "tasks", data, repeats=1).parent
        with serving(pool) as url:
            for model in ["slm-mux", *args.models.split(",")]:
                results = run_lm_eval(url, model, tasks, work / "lm-eval")
                samples = results["samples"]["arith_local"]
                ours = [arith.grade(arith.extract(s["resps"][0][0]), s["target"]) for s in samples]
                score = results["results"]["arith_local"]["exact_match,maj"]
                rows.append(("lm-eval", model, score, sum(ours) / len(ours)))
                log = run_inspect(url, model, data, work / "inspect", epochs=1)
                logged = log.samples or []
                theirs = [s.scores["match"].value == "C" for s in logged]
                ours = [
                    arith.grade(arith.extract(s.output.completion), str(s.target)) for s in logged
                ]
                rows.append(("inspect_ai", model, sum(theirs) / len(theirs), sum(ours) / len(ours)))
        store = work / "store.db"
        plan = {"test": QuestionSet({"arith": questions})}
        collect_pool(load_pool(pool), plan, store=store, samples=args.k)  # type: ignore[arg-type]
        evaluation = Study.open(store, task="arith").evaluate(k=args.k, trials=10, seed=0)
    print(f"{args.questions} arith test questions\n")
    print("| harness | model | harness score | slm-mux grader, same replies |")
    print("|---|---|---:|---:|")
    for harness, model, theirs, ours_score in rows:
        print(f"| {harness} | {model} | {theirs:.3f} | {ours_score:.3f} |")
    print(f"\nslm-mux eval of the same questions (k={args.k}, collected by slm-mux):\n")
    print(evaluation.to_markdown())


if __name__ == "__main__":
    main()

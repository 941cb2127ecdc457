"""Commands that call the pool's models: collect, run, ask and compare.

Collections and comparisons report through :func:`slm_mux.cli.progress.terminal_progress`
(bars off with ``--quiet``).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from slm_mux.adaptive import Policy
from slm_mux.cli import flags
from slm_mux.cli.offline import study_k
from slm_mux.cli.output import print_json, warn
from slm_mux.errors import InputError
from slm_mux.methods import compare_methods
from slm_mux.tasks import task_names
from slm_mux.tasks.loading import question_set_names

if TYPE_CHECKING:
    from slm_mux.engine import MuxAnswer


def _collect(
    args: argparse.Namespace, data: dict[str, str | None], adaptive: Policy | None = None
) -> tuple[bool, list[str]]:
    """Collect the splits named in ``data`` (split -> ``--data``) with one set of backends
    (``adaptive``: the sampling policy, default the pool's).

    Prints a summary per split, task and model to stderr; returns whether every
    sample is stored, and the names of the tasks that graded them.
    """
    from slm_mux.cli.progress import terminal_progress
    from slm_mux.collect import collect_pool
    from slm_mux.pool import load_pool
    from slm_mux.tasks.loading import load_question_set

    plan = {
        split: load_question_set(args.task, path, split=split, limit=args.limit)  # type: ignore[arg-type]
        for split, path in data.items()
    }
    if args.shard is not None:
        for split, questions in list(plan.items()):
            plan[split] = questions.share(args.shard)
            print(
                f"shard {args.shard}: {len(plan[split])} of {len(questions)} {split} questions",
                file=sys.stderr,
            )
    reports = collect_pool(
        load_pool(args.pool),
        plan,  # type: ignore[arg-type]
        store=args.store,
        models=args.models,
        samples=args.samples,
        progress=terminal_progress(args.quiet),
        adaptive=adaptive,
    )
    for report in reports:
        for line in report.summary():
            print(line, file=sys.stderr)
    tasks = list(dict.fromkeys(name for q in plan.values() for name in q.task_names))
    return all(report.complete for report in reports), tasks


def cmd_collect(args: argparse.Namespace) -> int:
    complete, _ = _collect(args, {args.split: args.data}, args.adaptive)
    if not complete:
        warn("some questions failed; run the same command again to retry them")
    return 0 if complete else 3


def cmd_run(args: argparse.Namespace) -> int:
    from slm_mux.study import Study

    data: dict[str, str | None] = {"test": args.data}
    if args.validation_data is not None or (args.task == "arith" and args.data is None):
        data = {"validation": args.validation_data, **data}
    complete, tasks = _collect(args, data, Policy("full"))  # trials draw from all k
    if not complete:
        warn("some questions failed; the evaluation uses what was collected")
    study = Study.open(args.store, models=args.models, task=",".join(tasks), warn=warn)
    chosen = study_k(study, args.k)
    evaluation = study.evaluate(k=chosen.k, trials=args.trials, seed=args.seed)
    if args.json:
        print_json(evaluation.to_json())
    else:
        print(evaluation.to_markdown())
    chosen.say()
    return 0 if complete else 3


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


def _k_text(k: dict[str, int]) -> str:
    """``k=3``, or each model's k when they differ."""
    if len(set(k.values())) == 1:
        return f"k={next(iter(k.values()))}"
    return "k " + ", ".join(f"{model}={n}" for model, n in k.items())


def ask_json(answer: MuxAnswer, k: dict[str, int]) -> dict[str, object]:
    """``ask --json``: the answer, each model's k and every reply text."""
    payload = answer.to_json()
    payload["k"] = k
    payload["replies"] = {m: [c.text for c in s.completions] for m, s in answer.samples.items()}
    return payload


def print_answer(answer: MuxAnswer, k: dict[str, int], *, adaptive_asked: bool) -> None:
    """The answer on stdout; where it came from, the sampling and the votes on stderr
    (the adaptive line only when a policy other than full is in force or asked for)."""
    print(answer.answer if answer.answer is not None else "(no answer)")
    print(
        f"from {answer.model or '-'} with confidence {answer.confidence:.2f} "
        f"({_k_text(k)}) in {answer.latency_s:.2f}s",
        file=sys.stderr,
    )
    if adaptive_asked or answer.policy != "full":
        saved = "" if answer.tokens_saved is None else f", ~{answer.tokens_saved} tokens saved"
        print(
            f"adaptive {answer.policy}: {_plural(answer.rounds, 'round')}, "
            f"{answer.samples_drawn} of {answer.samples_full} samples{saved}",
            file=sys.stderr,
        )
    for model, votes in answer.votes.items():
        shown = ", ".join(f"{a!r} x{n}" for a, n in votes.items()) or "no answer"
        error = answer.samples[model].error
        print(f"  {model}: {shown}" + (f"  [error: {error}]" if error else ""), file=sys.stderr)


def cmd_ask(args: argparse.Namespace) -> int:
    from slm_mux.engine import Mux
    from slm_mux.reply_health import ReplyHealth

    accuracy: dict[str, float] = {}
    if args.store is not None:
        from slm_mux.study import stored_validation_accuracy

        accuracy = stored_validation_accuracy(args.store, task=args.task, warn=warn)
    with Mux.from_pool(
        args.pool,
        task=args.task,
        k=args.k,
        models=args.models,
        validation_accuracy=accuracy,
        adaptive=args.adaptive,
    ) as mux:
        answer = mux.ask(args.question)
        k = {member.name: member.k for member in mux.members}
    health = ReplyHealth()
    health.add_answer(answer)
    health.warn()
    if args.json:
        print_json(ask_json(answer, k))
    else:
        print_answer(answer, k, adaptive_asked=args.adaptive is not None)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from slm_mux.cli.progress import terminal_progress
    from slm_mux.compare import compare_pool
    from slm_mux.pool import load_pool
    from slm_mux.tasks import get_task
    from slm_mux.tasks.loading import load_question_set

    pool = load_pool(args.pool)
    test = load_question_set(args.task, args.data, split="test", limit=args.limit)
    if len(test.by_task) != 1:
        raise InputError(
            f"{args.data}: compare runs one task at a time; this file mixes "
            f"{', '.join(test.task_names)}"
        )
    ((task_name, questions),) = test.by_task.items()
    validation = None
    if args.validation_data is not None:
        loaded = load_question_set(args.task, args.validation_data, split="validation")
        validation = loaded.by_task.get(task_name)
        if not validation:
            raise InputError(f"{args.validation_data}: no questions of task {task_name!r}")
    given = {
        "debate": {"rounds": args.rounds},
        "moa": {"layers": args.layers, "aggregator": args.aggregator},
        "mav": {
            "candidates": args.candidates,
            "aspects": None if args.aspects is None else tuple(args.aspects),
            "generator": args.generator,
        },
    }
    options = {
        method: {key: value for key, value in values.items() if value is not None}
        for method, values in given.items()
    }
    comparison = compare_pool(
        pool,
        get_task(task_name),
        questions,
        store=args.store,
        methods=args.methods or compare_methods(),
        options=options,
        k=args.k,
        validation=validation,
        progress=terminal_progress(args.quiet),
        warn=warn,
        adaptive=args.adaptive,
    )
    if args.json:
        print_json(comparison.to_json())
    else:
        print(comparison.to_markdown(), end="")
    for failure in comparison.failures:
        warn(f"{failure.reason} ({failure.questions} question(s))")
    if comparison.retryable:
        warn("some calls failed; run the same command again to retry them")
    return comparison.exit_code


def _live_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of a collection: pool, task, store, samples, models, limit, shard, quiet."""
    flags.pool_flag(parser)
    flags.task_flag(parser, question_set_names(), "task", required=True)
    flags.store_flag(parser, role="created if missing")
    parser.add_argument(
        "--samples",
        type=flags.SAMPLES,
        help=f"samples to store per model and question (default: {flags.LIVE_K})",
    )
    flags.models_flag(parser, "the whole pool")
    flags.limit_flag(parser)
    parser.add_argument(
        "--shard",
        type=flags.shard,
        metavar="I/N",
        help="only share I (from 1) of N of the questions, by a hash of their ids "
        "(after --limit); merge the N stores with 'slm-mux import'",
    )
    flags.quiet_flag(parser)


def _aspect_names() -> list[str]:
    from slm_mux.methods.prompts import ASPECTS

    return list(ASPECTS)


def add_commands(add: flags.AddCommand) -> None:
    """The sub-commands that call models: collect, run, ask, compare."""
    sub = add("collect", cmd_collect, "sample answers per model per question into the store")
    _live_flags(sub)
    sub.add_argument("--data", help="question file (JSON/JSONL) or Hugging Face dataset id")
    flags.split_flag(sub, "split", default="test")
    flags.adaptive_flag(sub, "; not full: stores only the samples drawn, at most k per model")

    sub = add("run", cmd_run, "collect validation and test samples, then evaluate")
    _live_flags(sub)
    sub.add_argument("--data", help="test question file or dataset id")
    sub.add_argument("--validation-data", help="validation question file (for tie-breaks)")
    flags.k_flag(sub, flags.OFFLINE_K)
    flags.trials_flag(sub)
    flags.seed_flag(sub)
    flags.json_flag(sub)

    sub = add("ask", cmd_ask, "ask every model of a pool and answer with SLM-MUX")
    sub.add_argument("question", type=flags.question, help="the question")
    flags.pool_flag(sub)
    flags.task_flag(sub, task_names(), "task: prompt, extractor and grader", default="exact")
    flags.k_flag(sub, flags.LIVE_K)
    flags.models_flag(sub, "the whole pool")
    flags.store_flag(sub, role="its validation split breaks ties", required=False)
    flags.adaptive_flag(sub)
    flags.json_flag(sub)

    sub = add("compare", cmd_compare, "run SLM-MUX, debate, moa, mav and baselines side by side")
    flags.pool_flag(sub)
    flags.task_flag(sub, question_set_names(), "task", required=True)
    sub.add_argument("--data", help="test question file or dataset id (arith: generated)")
    flags.store_flag(sub, role="every call is stored: resumable")
    sub.add_argument(
        "--methods",
        type=flags.known_list("method", compare_methods),
        help=f"comma-separated methods (default: {','.join(compare_methods())})",
    )
    flags.limit_flag(sub)
    flags.k_flag(sub, flags.LIVE_K)
    sub.add_argument(
        "--rounds", type=flags.integer(1, flags.MAX_ROUNDS), help="debate rounds (default: 2)"
    )
    sub.add_argument(
        "--layers",
        type=flags.integer(2, flags.MAX_ROUNDS),
        help="moa layers: proposer layers + the aggregator (default: 3)",
    )
    sub.add_argument(
        "--aggregator", help="moa aggregator model (default: best validation accuracy, else first)"
    )
    sub.add_argument(
        "--candidates", type=flags.SAMPLES, help="mav candidate solutions (default: 4)"
    )
    sub.add_argument(
        "--aspects",
        type=flags.known_list("aspect", _aspect_names),
        help="mav verification aspects, comma-separated (default: final-answer,steps)",
    )
    sub.add_argument(
        "--generator", help="mav generator model (default: best validation accuracy, else first)"
    )
    sub.add_argument(
        "--validation-data", help="validation question file, collected first for tie-breaks"
    )
    flags.adaptive_flag(sub, "; not full: adds a row slm-mux@POLICY, sampled live in rounds")
    flags.json_flag(sub)
    flags.quiet_flag(sub)

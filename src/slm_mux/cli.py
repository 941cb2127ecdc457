"""The ``slm-mux`` command: thin sub-commands over the library.

Every expected failure (bad file, unknown model, empty store, unwritable
folder, ...) ends in one ``slm-mux: error: ...`` line on stderr and exit
status 1, never a traceback; a malformed command line exits with 2 (argparse).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from slm_mux import __version__
from slm_mux.adaptive import Policy
from slm_mux.errors import InputError, SlmMuxError
from slm_mux.tasks import task_names
from slm_mux.tasks.loading import Shard, question_set_names

if TYPE_CHECKING:
    from slm_mux.store import Holding

Handler = Callable[[argparse.Namespace], int]


# --- flag values, checked while parsing: before any file is read or model loaded ---

MAX_SAMPLES = 1000
"""Upper bound of ``--k`` and ``--samples`` (samples per model per question)."""
MAX_TRIALS = 10_000
MAX_MODELS = 1000
MAX_LIMIT = 10_000_000
MAX_ROUNDS = 100
"""Upper bound of ``compare --rounds`` and ``--layers``."""
MAX_WORKERS = 256
"""Upper bound of ``serve --workers``."""
MAX_SEED = 2**32 - 1
"""Seeds are 32-bit: every consumer (numpy, ``random``, torch, servers) takes them."""


def _integer(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            message = f"expected an integer from {low} to {high}, got {text!r}"
            raise argparse.ArgumentTypeError(message)
        return value

    return integer


def _weight(text: str) -> float:
    """An argparse type: a finite number ``>= 0``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _comma_list(kind: str) -> Callable[[str], list[str]]:
    """An argparse type: comma-separated ``kind`` names, none empty or repeated."""

    def names(text: str) -> list[str]:
        listed = [name.strip() for name in text.split(",")]
        if not all(listed):
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind} names, got {text!r}")
        repeated = sorted({name for name in listed if listed.count(name) > 1})
        if repeated:
            raise argparse.ArgumentTypeError(f"{kind} {repeated[0]!r} is named twice in {text!r}")
        return listed

    return names


_names = _comma_list("model")


def _shard(text: str) -> Shard:
    """An argparse type: a shard ``I/N`` (``1 <= I <= N``)."""
    try:
        return Shard.parse(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _policy(text: str) -> Policy:
    """An argparse type: an adaptive sampling policy (:meth:`Policy.parse`)."""
    try:
        return Policy.parse(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _adaptive_flag(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument(
        "--adaptive",
        type=_policy,
        metavar="POLICY",
        help="SLM-MUX sampling policy: full, exact (lossless, in rounds), first-agree, "
        f"two-unanimous or agree:T (default: the pool's defaults.adaptive, else full){more}",
    )


def _policies(text: str) -> list[Policy]:
    """An argparse type: comma-separated adaptive sampling policies, none repeated."""
    policies = [_policy(name) for name in _comma_list("adaptive policy")(text)]
    twice = next((p for i, p in enumerate(policies) if p in policies[:i]), None)
    if twice is not None:
        raise argparse.ArgumentTypeError(
            f"adaptive policy {str(twice)!r} is named twice in {text!r}"
        )
    return policies


def _replay_flag(parser: argparse.ArgumentParser, default: str) -> None:
    """``--adaptive POLICY[,POLICY...]``: policies replayed offline on the recorded samples."""
    parser.add_argument(
        "--adaptive",
        type=_policies,
        metavar="POLICY[,POLICY...]",
        help="replay adaptive sampling policies on the recorded samples, beside full SLM-MUX: "
        f"exact (lossless), first-agree, two-unanimous, agree:T with 0<T<=1 ({default})",
    )


def _question(text: str) -> str:
    """An argparse type: a question with some non-blank text."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"the question is empty: {text!r}")
    return text


def _creatable(path: Path) -> None:
    """Raise unless ``path`` could be created: its nearest existing ancestor is a folder."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{path}: {parent} is not a folder")
            return


def _folder(text: str) -> str:
    """An argparse type: an output folder, existing or not, but not a file."""
    path = Path(text)
    if not text:
        raise argparse.ArgumentTypeError("expected a folder, got ''")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    _creatable(path)
    return text


def _store_file(text: str) -> str:
    """An argparse type: a store file, existing or not, but not a folder."""
    path = Path(text)
    if not text:
        raise argparse.ArgumentTypeError("expected a store file, got ''")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a store file")
    _creatable(path)
    return text


def _print_json(payload: dict[str, Any]) -> None:
    json.dump(payload, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _warn(message: str) -> None:
    print(f"slm-mux: warning: {message}", file=sys.stderr)


# --- recorded samples -------------------------------------------------------


def cmd_import(args: argparse.Namespace) -> int:
    from slm_mux.formats import import_files

    # Every file is validated and staged before the store is opened: all or nothing,
    # so the per-file lines are printed only once everything is stored.
    read_lines: list[str] = []
    report = import_files(
        args.files,
        args.store,
        split=args.split,
        task=args.task,
        model=args.model,
        replace=args.replace,
        progress=read_lines.append,
    )
    for line in read_lines:
        print(line, file=sys.stderr)
    replaced = f", {report.replaced} replaced" if args.replace else ""
    merged = [f"{report.failures} failed questions"] if report.failures else []
    merged += [f"{count} {what}s" for what, count in report.records.items() if count]
    also = f"; merged {', '.join(merged)}" if merged else ""
    print(f"{report.read} samples read, {report.new} new{replaced}{also}", file=sys.stderr)
    if report.regraded:
        _warn(
            f"{report.regraded} imported samples give a 'correct' that their task's grader "
            f"contradicts (first: {report.first_regraded}); the grader's verdict is stored"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from slm_mux.formats import write_jsonl
    from slm_mux.store import Store

    with Store(args.store, create=False) as store:
        _check_filters(args, store.summary())
        samples = store.each_sample(split=args.split, models=args.models, task=args.task)
        write_jsonl(samples, sys.stdout)
    return 0


def _check_filters(args: argparse.Namespace, holdings: Sequence[Holding]) -> None:
    """Raise :class:`InputError` when ``--task``, ``--split`` or ``--models`` match no sample."""
    filters = [
        (flag, field, values)
        for flag, field, values in (
            ("--task", "task", [args.task] if args.task else []),
            ("--split", "split", [args.split] if args.split else []),
            ("--models", "model", args.models or []),
        )
        if values
    ]
    for flag, field, values in filters:
        stored = sorted({getattr(h, field) for h in holdings})
        for value in values:
            if value not in stored:
                has = ", ".join(stored) or "nothing"
                raise InputError(f"{args.store}: {flag} {value!r} matches no sample (has: {has})")
    if filters and not any(
        all(getattr(h, field) in values for _, field, values in filters) for h in holdings
    ):
        given = " ".join(f"{flag} {','.join(values)}" for flag, _, values in filters)
        raise InputError(f"{args.store}: no sample matches {given}")


def cmd_status(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from slm_mux.store import Store
    from slm_mux.tables import markdown_table

    with Store(args.store, create=False) as store:
        holdings = store.summary()
        failures = store.failures()
        replicas = store.replica_stats()
    if args.json:
        _print_json(
            {
                "holdings": [asdict(h) for h in holdings],
                "failures": [asdict(f) for f in failures],
                "replicas": [asdict(r) for r in replicas],
            }
        )
        return 0
    if not holdings:
        print(f"{args.store}: empty")
        return 0
    print(
        markdown_table(
            ["task", "split", "model", "questions", "samples", "no answer", "accuracy", "failed"],
            [
                [
                    *(h.task, h.split, h.model, str(h.questions), str(h.samples)),
                    *(str(h.no_answer), "-" if h.accuracy is None else f"{h.accuracy:.4f}"),
                    str(h.failed),
                ]
                for h in holdings
            ],
            ("left", "left", "left", "right", "right", "right", "right", "right"),
        ),
        end="",
    )
    if failures:
        print("\nFailed questions (retried by the next collect):\n")
        print(
            markdown_table(
                ["model", "task", "split", "question", "attempts", "last error"],
                [
                    [f.model, f.task, f.split, f.question_id, str(f.attempts), f.error]
                    for f in failures
                ],
                ("left", "left", "left", "left", "right", "left"),
            ),
            end="",
        )
    if replicas:
        print("\nServers per model (its latest collection):\n")
        print(
            markdown_table(
                ["model", "server", "requests", "errors", "cooldowns", "collected at"],
                [
                    [r.model, r.url, *map(str, (r.requests, r.errors, r.cooldowns)), r.collected_at]
                    for r in replicas
                ],
                ("left", "left", "right", "right", "right", "left"),
            ),
            end="",
        )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from slm_mux.study import Study

    study = Study.open(args.store, models=args.models, task=args.task, warn=_warn)
    if not args.adaptive:
        plain = study.evaluate(k=args.k, trials=args.trials, seed=args.seed)
        if args.json:
            _print_json(plain.to_json())
        else:
            print(plain.to_markdown())
        return 0
    evaluation, replayed = study.evaluate_adaptive(
        args.adaptive, k=args.k, trials=args.trials, seed=args.seed
    )
    if evaluation is None:
        _warn(
            f"some models have fewer than k={replayed.k} samples of some questions: the policies "
            "replay the recorded samples in recorded order (full SLM-MUX and the baselines "
            "need k samples of every model and question)"
        )
        if args.json:
            _print_json(replayed.to_json())
        else:
            print(replayed.to_markdown())
    elif args.json:
        payload = evaluation.to_json()
        payload["methods"].update(replayed.methods_json())
        _print_json(payload)
    else:
        print(f"{evaluation.to_markdown()}\n{replayed.to_markdown()}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from slm_mux.study import Study

    study = Study.open(args.store, models=args.models, task=args.task, warn=_warn)
    result = study.search(
        k=args.k, max_models=args.max_models, lam=args.lam, trials=args.trials, seed=args.seed
    )
    if args.json:
        _print_json(result.to_json())
    else:
        print(result.to_markdown())
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    from slm_mux.analysis import write_plots
    from slm_mux.study import Study

    study = Study.open(args.store, models=args.models, task=args.task, warn=_warn)
    scaling = study.scale(
        max_models=args.max_models,
        lam=args.lam,
        trials=args.trials,
        seed=args.seed,
        policies=args.adaptive or (),
    )
    paths = write_plots(scaling, Path(args.out))
    print(scaling.to_markdown())
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from slm_mux.analysis.adaptive_replay import REPORTED_POLICIES
    from slm_mux.study import Study

    study = Study.open(args.store, models=args.models, task=args.task, warn=_warn)
    report = study.report(
        Path(args.out),
        k=args.k,
        max_models=args.max_models,
        lam=args.lam,
        trials=args.trials,
        seed=args.seed,
        policies=args.adaptive or REPORTED_POLICIES,
    )
    for path in report.files:
        print(f"wrote {path}", file=sys.stderr)
    return 0


# --- live models ------------------------------------------------------------


def _collect(
    args: argparse.Namespace, data: dict[str, str | None], adaptive: Policy | None = None
) -> tuple[bool, list[str]]:
    """Collect the splits named in ``data`` (split -> ``--data``) with one set of backends
    (``adaptive``: the sampling policy, default the pool's).

    Prints a summary per split, task and model to stderr; returns whether every
    sample is stored, and the names of the tasks that graded them.
    """
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
        show_progress=False if args.quiet else None,
        log=sys.stderr,
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
        _warn("some questions failed; run the same command again to retry them")
    return 0 if complete else 3


def cmd_run(args: argparse.Namespace) -> int:
    from slm_mux.study import Study

    data: dict[str, str | None] = {"test": args.data}
    if args.validation_data is not None or (args.task == "arith" and args.data is None):
        data = {"validation": args.validation_data, **data}
    complete, tasks = _collect(args, data, Policy("full"))  # trials draw from all k
    if not complete:
        _warn("some questions failed; the evaluation uses what was collected")
    study = Study.open(args.store, models=args.models, task=",".join(tasks), warn=_warn)
    evaluation = study.evaluate(k=args.k, trials=args.trials, seed=args.seed)
    if args.json:
        _print_json(evaluation.to_json())
    else:
        print(evaluation.to_markdown())
    return 0 if complete else 3


def cmd_ask(args: argparse.Namespace) -> int:
    from slm_mux.engine import Mux

    accuracy: dict[str, float] = {}
    if args.store is not None:
        from slm_mux.study import stored_validation_accuracy

        accuracy = stored_validation_accuracy(args.store, task=args.task, warn=_warn)
    with Mux.from_pool(
        args.pool,
        task=args.task,
        k=args.k,
        models=args.models,
        validation_accuracy=accuracy,
        adaptive=args.adaptive,
    ) as mux:
        answer = mux.ask(args.question)
    if args.json:
        _print_json(answer.to_json())
        return 0
    print(answer.answer if answer.answer is not None else "(no answer)")
    print(
        f"from {answer.model or '-'} with confidence {answer.confidence:.2f} "
        f"in {answer.latency_s:.2f}s",
        file=sys.stderr,
    )
    saved = "" if answer.tokens_saved is None else f", ~{answer.tokens_saved} tokens saved"
    print(
        f"adaptive {answer.policy}: {answer.rounds} rounds, "
        f"{answer.samples_drawn} of {answer.samples_full} samples{saved}",
        file=sys.stderr,
    )
    for model, votes in answer.votes.items():
        shown = ", ".join(f"{a!r} x{n}" for a, n in votes.items()) or "no answer"
        error = answer.samples[model].error
        print(f"  {model}: {shown}" + (f"  [error: {error}]" if error else ""), file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from slm_mux.demo import POOL_DIR, run_demo

    out = Path(args.out)
    result = run_demo(
        out,
        validation_questions=args.validation_questions,
        test_questions=args.questions,
        samples=args.samples,
        k=args.k,
        trials=args.trials,
        seed=args.seed,
        show_progress=False if args.quiet else None,
        models_dir=Path(args.models_dir) if args.models_dir else POOL_DIR,
        warn=_warn,
        log=sys.stderr,
    )
    print(result.headline())
    print(result.search.to_markdown())
    for path in result.files:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from slm_mux.compare import compare_pool
    from slm_mux.comparison import method_names
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
    flags = {
        "debate": {"rounds": args.rounds},
        "moa": {"layers": args.layers, "aggregator": args.aggregator},
        "mav": {
            "candidates": args.candidates,
            "aspects": None if args.aspects is None else tuple(args.aspects),
            "generator": args.generator,
        },
    }
    options = {
        method: {key: value for key, value in given.items() if value is not None}
        for method, given in flags.items()
    }
    comparison = compare_pool(
        pool,
        get_task(task_name),
        questions,
        store=args.store,
        methods=args.methods or method_names(),
        options=options,
        k=args.k,
        validation=validation,
        warn=_warn,
        adaptive=args.adaptive,
    )
    if args.json:
        _print_json(comparison.to_json())
    else:
        print(comparison.to_markdown(), end="")
    for failure in comparison.failures:
        _warn(f"{failure.reason} ({failure.questions} question(s))")
    if comparison.retryable:
        _warn("some calls failed; run the same command again to retry them")
    return comparison.exit_code


def cmd_serve(args: argparse.Namespace) -> int:
    from contextlib import closing

    try:
        from slm_mux.server.run import (
            ServeSettings,
            api_key,
            build_app,
            listen,
            serve,
            serve_workers,
        )
    except ModuleNotFoundError as missing:
        if (missing.name or "").split(".")[0] not in ("starlette", "uvicorn"):
            raise
        raise InputError(
            "serve needs Starlette and uvicorn; install them with: pip install 'slm-mux[server]'"
        ) from None
    from slm_mux.pool import load_pool

    accuracy: dict[str, float] = {}
    if args.store is not None:
        from slm_mux.study import stored_validation_accuracy

        accuracy = stored_validation_accuracy(args.store, task=args.task, warn=_warn)
    settings = ServeSettings(
        pool=str(Path(args.pool).resolve()),
        task=args.task,
        k=args.k,
        validation_accuracy=accuracy,
        adaptive=None if args.adaptive is None else str(args.adaptive),
        api_key_env=args.api_key_env,
        workers=args.workers,
    )
    api_key(settings)  # a missing key variable is one error line here, not in each worker
    with closing(listen(args.host, args.port)) as sock:
        if args.workers == 1:
            serve(build_app(settings), sock)
        else:
            load_pool(settings.pool)  # a bad pool file is one error line, before any worker
            serve_workers(settings, sock)
    return 0


# --- parser -----------------------------------------------------------------

_SEED = _integer(0, MAX_SEED)
_SAMPLES = _integer(1, MAX_SAMPLES)
_TRIALS = _integer(1, MAX_TRIALS)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one ``slm-mux: error:`` line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"slm-mux: error: {message} (see '{self.prog} --help')\n")


def _task_flag(
    parser: argparse.ArgumentParser, names: list[str], help_text: str, **kw: Any
) -> None:
    """A ``--task`` flag that accepts only ``names``."""
    parser.add_argument(
        "--task", choices=names, metavar="TASK", help=f"{help_text}: {', '.join(names)}", **kw
    )


def _known_list(kind: str, known: Callable[[], Sequence[str]]) -> Callable[[str], list[str]]:
    """An argparse type: comma-separated ``kind`` names from ``known()``, none repeated."""

    def names(text: str) -> list[str]:
        listed = _comma_list(kind)(text)
        unknown = [name for name in listed if name not in known()]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {kind} {unknown[0]!r}; choose from {', '.join(known())}"
            )
        return listed

    return names


def _method_names() -> list[str]:
    from slm_mux.comparison import method_names

    return method_names()


def _aspect_names() -> list[str]:
    from slm_mux.methods.prompts import ASPECTS

    return list(ASPECTS)


_task_list = _known_list("task", task_names)
_method_list = _known_list("method", _method_names)
_aspect_list = _known_list("aspect", _aspect_names)


def _study_flags(parser: argparse.ArgumentParser, *, k: bool = True) -> None:
    parser.add_argument("--store", required=True, type=_store_file, help="SQLite sample store")
    parser.add_argument(
        "--models", type=_names, help="comma-separated model names (default: all in the store)"
    )
    parser.add_argument(
        "--task",
        type=_task_list,
        metavar="TASK[,TASK...]",
        help="task(s) of the samples, evaluated together (needed when the store holds several): "
        + ", ".join(task_names()),
    )
    if k:
        parser.add_argument("--k", type=_SAMPLES, help="samples per model (default: all recorded)")
    parser.add_argument("--trials", type=_TRIALS, default=10, help="random draws (default 10)")
    parser.add_argument("--seed", type=_SEED, default=0, help="seed of the draws (default 0)")


def _search_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-models",
        type=_integer(1, MAX_MODELS),
        default=4,
        help="largest subset size (default 4)",
    )
    parser.add_argument(
        "--lambda",
        dest="lam",
        type=_weight,
        default=1.0,
        help="weight (>= 0) of the contradiction penalty (default 1)",
    )


def _live_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", required=True, help="pool file (YAML or TOML)")
    _task_flag(parser, question_set_names(), "task", required=True)
    parser.add_argument(
        "--store", required=True, type=_store_file, help="SQLite sample store (created if missing)"
    )
    parser.add_argument(
        "--samples",
        type=_SAMPLES,
        help="samples to store per model and question (default: the pool's k)",
    )
    parser.add_argument(
        "--models", type=_names, help="comma-separated model names (default: the whole pool)"
    )
    parser.add_argument("--limit", type=_integer(1, MAX_LIMIT), help="only the first N questions")
    parser.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="only share I (from 1) of N of the questions, by a hash of their ids "
        "(after --limit); merge the N stores with 'slm-mux import'",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command; it rejects every malformed flag value."""
    from slm_mux.analysis.adaptive_replay import REPORTED_POLICIES
    from slm_mux.tasks.arith import MAX_QUESTIONS

    parser = _Parser(
        prog="slm-mux",
        description="Orchestrate small language models with SLM-MUX (arXiv 2510.05077).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    splits = ["validation", "test"]

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    sub = add(
        "import",
        cmd_import,
        "import recorded samples (JSONL or the authors' layout) or merge other stores",
    )
    sub.add_argument("files", nargs="+", help="files to import; an SQLite store is merged whole")
    sub.add_argument(
        "--store", required=True, type=_store_file, help="SQLite sample store (created if missing)"
    )
    sub.add_argument("--split", choices=splits, help="split (authors' layout)")
    _task_flag(sub, task_names(), "grader for samples without a task", default="exact")
    sub.add_argument("--model", help="model name (authors' layout; default: from the file)")
    sub.add_argument(
        "--replace", action="store_true", help="overwrite stored samples that have another answer"
    )

    sub = add("export", cmd_export, "write stored samples as JSON Lines to stdout")
    sub.add_argument("--store", required=True, type=_store_file, help="SQLite sample store")
    sub.add_argument("--split", choices=splits, help="only this split")
    sub.add_argument("--models", type=_names, help="comma-separated model names")
    _task_flag(sub, task_names(), "only this task")

    sub = add("status", cmd_status, "what a store holds, per task, split and model")
    sub.add_argument("--store", required=True, type=_store_file, help="SQLite sample store")
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = add("eval", cmd_eval, "evaluate SLM-MUX and the baselines on the test split")
    _study_flags(sub)
    _replay_flag(sub, "default: none; without --k, k is the most samples recorded")
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = add("search", cmd_search, "search the best model subset per size on validation")
    _study_flags(sub)
    _search_flags(sub)
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = add("scale", cmd_scale, "sweep samples per model and number of models; plot")
    _study_flags(sub, k=False)
    _search_flags(sub)
    _replay_flag(sub, "default: none")
    sub.add_argument("--out", type=_folder, default="slm-mux-report", help="output folder")

    sub = add("report", cmd_report, "write a Markdown and HTML report with plots")
    _study_flags(sub)
    _search_flags(sub)
    _replay_flag(sub, "default: " + ",".join(map(str, REPORTED_POLICIES)))
    sub.add_argument("--out", type=_folder, default="slm-mux-report", help="output folder")

    sub = add("collect", cmd_collect, "sample answers per model per question into the store")
    _live_flags(sub)
    sub.add_argument("--data", help="question file (JSON/JSONL) or Hugging Face dataset id")
    sub.add_argument("--split", choices=splits, default="test", help="split")
    _adaptive_flag(sub, "; not full: stores only the samples drawn, at most k per model")

    sub = add("run", cmd_run, "collect validation and test samples, then evaluate")
    _live_flags(sub)
    sub.add_argument("--data", help="test question file or dataset id")
    sub.add_argument("--validation-data", help="validation question file (for tie-breaks)")
    sub.add_argument(
        "--k", type=_SAMPLES, help="samples per model in one SLM-MUX vote (default: all stored)"
    )
    sub.add_argument("--trials", type=_TRIALS, default=10, help="random draws (default 10)")
    sub.add_argument("--seed", type=_SEED, default=0, help="seed of the draws (default 0)")
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = add("demo", cmd_demo, "the whole pipeline on the bundled tiny models, offline")
    sub.add_argument(
        "--out", type=_folder, default="slm-mux-demo", help="folder for the store and report"
    )
    questions = _integer(1, MAX_QUESTIONS)
    sub.add_argument("--questions", type=questions, default=200, help="test questions")
    sub.add_argument(
        "--validation-questions", type=questions, default=100, help="validation questions"
    )
    sub.add_argument("--samples", type=_SAMPLES, default=5, help="samples collected per model")
    sub.add_argument("--k", type=_SAMPLES, default=3, help="samples per model for SLM-MUX")
    sub.add_argument("--trials", type=_TRIALS, default=10, help="random draws (default 10)")
    sub.add_argument("--seed", type=_SEED, default=0, help="seed of the questions and the draws")
    sub.add_argument("--models-dir", help="folder of model folders (default: the bundled pool)")
    sub.add_argument("--quiet", action="store_true", help="no progress bars")

    sub = add("ask", cmd_ask, "ask every model of a pool and answer with SLM-MUX")
    sub.add_argument("question", type=_question, help="the question")
    sub.add_argument("--pool", required=True, help="pool file (YAML or TOML)")
    _task_flag(sub, task_names(), "task: prompt, extractor and grader", default="exact")
    sub.add_argument(
        "--k", type=_SAMPLES, help="samples per model in the SLM-MUX vote (default: the pool's k)"
    )
    sub.add_argument(
        "--models", type=_names, help="comma-separated model names (default: the whole pool)"
    )
    sub.add_argument("--store", type=_store_file, help="store whose validation split breaks ties")
    _adaptive_flag(sub)
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = add("compare", cmd_compare, "run SLM-MUX, debate, moa, mav and baselines side by side")
    sub.add_argument("--pool", required=True, help="pool file (YAML or TOML)")
    _task_flag(sub, question_set_names(), "task", required=True)
    sub.add_argument("--data", help="test question file or dataset id (arith: generated)")
    sub.add_argument(
        "--store", required=True, type=_store_file, help="SQLite store of every call (resumable)"
    )
    sub.add_argument(
        "--methods",
        type=_method_list,
        help="comma-separated methods (default: slm-mux,debate,moa,mav,agent-forest,sc,"
        "first-sample,oracle)",
    )
    sub.add_argument("--limit", type=_integer(1, MAX_LIMIT), help="only the first N questions")
    sub.add_argument(
        "--k", type=_SAMPLES, help="independent samples per model (default: the pool's k)"
    )
    sub.add_argument("--rounds", type=_integer(1, MAX_ROUNDS), help="debate rounds (default 2)")
    sub.add_argument(
        "--layers",
        type=_integer(2, MAX_ROUNDS),
        help="moa layers: proposer layers + the aggregator (default 3)",
    )
    sub.add_argument(
        "--aggregator", help="moa aggregator model (default: best validation accuracy, else first)"
    )
    sub.add_argument("--candidates", type=_SAMPLES, help="mav candidate solutions (default 4)")
    sub.add_argument(
        "--aspects",
        type=_aspect_list,
        help="mav verification aspects, comma-separated (default: final-answer,steps)",
    )
    sub.add_argument(
        "--generator", help="mav generator model (default: best validation accuracy, else first)"
    )
    sub.add_argument(
        "--validation-data", help="validation question file, collected first for tie-breaks"
    )
    _adaptive_flag(sub, "; not full: adds a row slm-mux@POLICY, sampled live in rounds")
    sub.add_argument("--json", action="store_true", help="print one JSON object")
    sub.add_argument("--quiet", action="store_true", help="no progress bars")

    sub = add("serve", cmd_serve, "an OpenAI-compatible server answering with SLM-MUX")
    sub.add_argument("--pool", required=True, help="pool file (YAML or TOML)")
    _task_flag(
        sub,
        task_names(),
        "task: prompt and answer extraction (default exact: free-form, an 'Answer:' line)",
        default="exact",
    )
    sub.add_argument("--store", type=_store_file, help="store whose validation split breaks ties")
    sub.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sub.add_argument(
        "--port", type=_integer(0, 65535), default=8000, help="port (default 8000; 0: a free one)"
    )
    sub.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the API key every request must send as a Bearer token",
    )
    sub.add_argument(
        "--k", type=_SAMPLES, help="samples per model in the SLM-MUX vote (default: the pool's k)"
    )
    _adaptive_flag(sub, "; model slm-mux only")
    sub.add_argument(
        "--workers",
        type=_integer(1, MAX_WORKERS),
        default=1,
        help="server processes (default 1); each takes its share of the pool's limits "
        "and loads its own in-process models",
    )
    return parser


def _fail(message: object) -> int:
    """Print ``message`` as one ``slm-mux: error:`` line; the exit status of a failure."""
    print("slm-mux: error: " + " ".join(str(message).splitlines()), file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        status = handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly
        # Python flushes stdout again at exit; point it at /dev/null so that cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    except SlmMuxError as error:
        return _fail(error)
    except sqlite3.Error as error:  # the store broke under us (disk full, locked, damaged)
        return _fail(f"{getattr(args, 'store', 'store')}: {error}")
    except OSError as error:  # a folder or file we were asked to write or read
        where = f"{error.filename}: " if error.filename else ""
        return _fail(f"{where}{error.strerror or error}")
    except KeyboardInterrupt:
        print("slm-mux: interrupted", file=sys.stderr)
        return 130

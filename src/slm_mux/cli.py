"""The ``slm-mux`` command: thin sub-commands over the library.

Every expected failure (bad file, unknown model, empty store, unwritable
folder, ...) ends in one ``slm-mux: error: ...`` line on stderr and exit
status 1, never a traceback; a malformed command line exits with 2 (argparse).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slm_mux import __version__
from slm_mux.errors import InputError, SlmMuxError

Handler = Callable[[argparse.Namespace], int]


def _models(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise InputError("--models needs at least one model name")
    return names


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _print_json(payload: dict[str, Any]) -> None:
    json.dump(payload, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _warn(message: str) -> None:
    print(f"slm-mux: warning: {message}", file=sys.stderr)


# --- recorded samples -------------------------------------------------------


def cmd_import(args: argparse.Namespace) -> int:
    from slm_mux.formats import read_file, store_contents
    from slm_mux.store import Store

    # Every file is validated before the store is opened: all or nothing.
    contents = [
        read_file(path, split=args.split, task=args.task, model=args.model) for path in args.files
    ]
    with Store(args.store) as store:
        for path, content in zip(args.files, contents, strict=True):
            new = store_contents(store, content)
            print(f"{path}: {len(content.samples)} samples read, {new} new", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from slm_mux.formats import write_jsonl
    from slm_mux.store import Store

    with Store(args.store, create=False) as store:
        samples = store.samples(split=args.split, models=_models(args.models), task=args.task)
    write_jsonl(samples, sys.stdout)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from slm_mux.store import Store

    with Store(args.store, create=False) as store:
        holdings = store.summary()
    if args.json:
        _print_json({"holdings": [asdict(h) for h in holdings]})
        return 0
    if not holdings:
        print(f"{args.store}: empty")
        return 0
    print("| task | split | model | questions | samples | no answer | accuracy | failed |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for h in holdings:
        accuracy = "-" if h.accuracy is None else f"{h.accuracy:.4f}"
        print(
            f"| {h.task} | {h.split} | {h.model} | {h.questions} | {h.samples} | "
            f"{h.no_answer} | {accuracy} | {h.failed} |"
        )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from slm_mux.study import Study

    study = Study.open(args.store, models=_models(args.models), task=args.task, warn=_warn)
    evaluation = study.evaluate(k=args.k, trials=args.trials, seed=args.seed)
    if args.json:
        _print_json(evaluation.to_json())
    else:
        print(evaluation.to_markdown())
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from slm_mux.study import Study

    study = Study.open(args.store, models=_models(args.models), task=args.task, warn=_warn)
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

    study = Study.open(args.store, models=_models(args.models), task=args.task, warn=_warn)
    scaling = study.scale(
        max_models=args.max_models, lam=args.lam, trials=args.trials, seed=args.seed
    )
    paths = write_plots(scaling, Path(args.out))
    print(scaling.to_markdown())
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from slm_mux.study import Study

    study = Study.open(args.store, models=_models(args.models), task=args.task, warn=_warn)
    report = study.report(
        Path(args.out),
        k=args.k,
        max_models=args.max_models,
        lam=args.lam,
        trials=args.trials,
        seed=args.seed,
    )
    for path in report.files:
        print(f"wrote {path}", file=sys.stderr)
    return 0


# --- live models ------------------------------------------------------------


def _collect(args: argparse.Namespace, split: str, data: str | None) -> tuple[bool, str]:
    """Collect one split into the store and print a summary.

    Returns whether every sample is stored, and the name of the task that graded them.
    """
    import asyncio

    from slm_mux.collect import collect, questions_for
    from slm_mux.pool import load_pool, members_of
    from slm_mux.store import Store

    task, questions = questions_for(args.task, data, split=split, limit=args.limit)  # type: ignore[arg-type]
    pool = load_pool(args.pool)
    members = members_of(pool, k=args.k, models=_models(args.models))

    async def run() -> bool:
        try:
            with Store(args.store) as store:
                report = await collect(
                    members,
                    task,
                    questions,
                    split=split,  # type: ignore[arg-type]
                    store=store,
                    show_progress=not args.quiet,
                )
        finally:
            await asyncio.gather(*(m.backend.aclose() for m in members))
        for progress in report.models.values():
            tokens = progress.prompt_tokens + progress.completion_tokens
            cost = "" if progress.cost_usd is None else f", ${progress.cost_usd:.4f}"
            print(
                f"{split}: {progress.model}: {progress.collected} new samples, "
                f"{progress.already_stored} already stored, "
                f"{progress.failed_questions} failed questions, {tokens} tokens{cost}",
                file=sys.stderr,
            )
            for error in progress.errors[:3]:
                print(f"  {error}", file=sys.stderr)
        return report.complete

    return asyncio.run(run()), task.name


def cmd_collect(args: argparse.Namespace) -> int:
    complete, _ = _collect(args, args.split, args.data)
    if not complete:
        _warn("some questions failed; run the same command again to retry them")
    return 0 if complete else 3


def cmd_run(args: argparse.Namespace) -> int:
    from slm_mux.study import Study

    complete = True
    if args.validation_data is not None or (args.task == "arith" and args.data is None):
        complete, _ = _collect(args, "validation", args.validation_data)
    test_complete, task = _collect(args, "test", args.data)
    if not (complete and test_complete):
        _warn("some questions failed; the evaluation uses what was collected")
    study = Study.open(args.store, models=_models(args.models), task=task, warn=_warn)
    evaluation = study.evaluate(k=args.k, trials=args.trials, seed=args.seed)
    if args.json:
        _print_json(evaluation.to_json())
    else:
        print(evaluation.to_markdown())
    return 0 if complete and test_complete else 3


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
        models=_models(args.models),
        validation_accuracy=accuracy,
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
        show_progress=not args.quiet,
        models_dir=Path(args.models_dir) if args.models_dir else POOL_DIR,
        warn=_warn,
        log=sys.stderr,
    )
    print(result.headline())
    print(result.search.to_markdown())
    for path in result.files:
        print(f"wrote {path}", file=sys.stderr)
    return 0


# --- parser -----------------------------------------------------------------


def _study_flags(parser: argparse.ArgumentParser, *, k: bool = True) -> None:
    parser.add_argument("--store", required=True, help="SQLite sample store")
    parser.add_argument("--models", help="comma-separated model names (default: all in the store)")
    parser.add_argument("--task", help="task of the samples (needed when the store holds several)")
    if k:
        parser.add_argument("--k", type=_positive, help="samples per model (default: all recorded)")
    parser.add_argument("--trials", type=_positive, default=10, help="random draws (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")


def _search_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-models", type=_positive, default=4, help="largest subset size (default 4)"
    )
    parser.add_argument(
        "--lambda",
        dest="lam",
        type=float,
        default=1.0,
        help="weight of the contradiction penalty (default 1)",
    )


def _live_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", required=True, help="pool file (YAML or TOML)")
    parser.add_argument("--task", required=True, help="task: prompt, extractor and grader")
    parser.add_argument("--store", required=True, help="SQLite sample store (created if missing)")
    parser.add_argument("--k", type=_positive, help="samples per model (default: the pool's)")
    parser.add_argument("--models", help="comma-separated model names (default: the whole pool)")
    parser.add_argument("--limit", type=_positive, help="only the first N questions")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="slm-mux",
        description="Orchestrate small language models with SLM-MUX (arXiv 2510.05077).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    sub = add("import", cmd_import, "import recorded samples (JSONL or the authors' layout)")
    sub.add_argument("files", nargs="+", help="files to import")
    sub.add_argument("--store", required=True, help="SQLite sample store (created if missing)")
    sub.add_argument("--split", choices=["validation", "test"], help="split (authors' layout)")
    sub.add_argument("--task", default="exact", help="grader for samples without a task")
    sub.add_argument("--model", help="model name (authors' layout; default: from the file)")

    sub = add("export", cmd_export, "write stored samples as JSON Lines to stdout")
    sub.add_argument("--store", required=True, help="SQLite sample store")
    sub.add_argument("--split", choices=["validation", "test"], help="only this split")
    sub.add_argument("--models", help="comma-separated model names")
    sub.add_argument("--task", help="only this task")

    sub = add("status", cmd_status, "what a store holds, per task, split and model")
    sub.add_argument("--store", required=True, help="SQLite sample store")
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = add("eval", cmd_eval, "evaluate SLM-MUX and the baselines on the test split")
    _study_flags(sub)
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = add("search", cmd_search, "search the best model subset per size on validation")
    _study_flags(sub)
    _search_flags(sub)
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = add("scale", cmd_scale, "sweep samples per model and number of models; plot")
    _study_flags(sub, k=False)
    _search_flags(sub)
    sub.add_argument("--out", default="slm-mux-report", help="output folder")

    sub = add("report", cmd_report, "write a Markdown and HTML report with plots")
    _study_flags(sub)
    _search_flags(sub)
    sub.add_argument("--out", default="slm-mux-report", help="output folder")

    sub = add("collect", cmd_collect, "sample k answers per model per question into the store")
    _live_flags(sub)
    sub.add_argument("--data", help="question file (JSON/JSONL) or Hugging Face dataset id")
    sub.add_argument("--split", choices=["validation", "test"], default="test", help="split")

    sub = add("run", cmd_run, "collect validation and test samples, then evaluate")
    _live_flags(sub)
    sub.add_argument("--data", help="test question file or dataset id")
    sub.add_argument("--validation-data", help="validation question file (for tie-breaks)")
    sub.add_argument("--trials", type=_positive, default=10, help="random draws (default 10)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    sub.add_argument("--json", action="store_true", help="print one JSON object")

    sub = add("demo", cmd_demo, "the whole pipeline on the bundled tiny models, offline")
    sub.add_argument("--out", default="slm-mux-demo", help="folder for the store and report")
    sub.add_argument("--questions", type=_positive, default=200, help="test questions")
    sub.add_argument(
        "--validation-questions", type=_positive, default=100, help="validation questions"
    )
    sub.add_argument("--samples", type=_positive, default=5, help="samples collected per model")
    sub.add_argument("--k", type=_positive, default=3, help="samples per model for SLM-MUX")
    sub.add_argument("--trials", type=_positive, default=10, help="random draws (default 10)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the questions and the draws")
    sub.add_argument("--models-dir", help="folder of model folders (default: the bundled pool)")
    sub.add_argument("--quiet", action="store_true", help="no progress bars")

    sub = add("ask", cmd_ask, "ask every model of a pool and answer with SLM-MUX")
    sub.add_argument("question", help="the question")
    sub.add_argument("--pool", required=True, help="pool file (YAML or TOML)")
    sub.add_argument("--task", default="exact", help="task: prompt, extractor and grader")
    sub.add_argument("--k", type=_positive, help="samples per model (default: the pool's)")
    sub.add_argument("--models", help="comma-separated model names (default: the whole pool)")
    sub.add_argument("--store", help="store whose validation split breaks ties")
    sub.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except SlmMuxError as error:
        print(f"slm-mux: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a folder or file we were asked to write or read
        where = f"{error.filename}: " if error.filename else ""
        print(f"slm-mux: error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("slm-mux: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0

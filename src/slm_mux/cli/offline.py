"""Commands over recorded samples, no model called: import, export, status, eval,
search, scale and report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from slm_mux.cli import flags
from slm_mux.cli.output import note, print_json, warn
from slm_mux.defaults import DEFAULT_K, offline_k
from slm_mux.errors import InputError
from slm_mux.tasks import task_names
from slm_mux.tasks.loading import CUSTOM, question_set_names

if TYPE_CHECKING:
    from slm_mux.store import Holding
    from slm_mux.study import Study


@dataclass(frozen=True)
class ChosenK:
    """The k of an offline vote and, when it was chosen for the user, why (a note)."""

    k: int
    why: str | None = None

    def say(self) -> None:
        """Print the note, if any, on stderr (after the result, so a failure stays one line)."""
        if self.why is not None:
            note(self.why)


def chosen_k(given: int | None, fewest: int, most: int, *, replaying: bool = False) -> ChosenK:
    """``--k`` when given, else :func:`~slm_mux.defaults.offline_k`, with a note when
    the store holds other than ``k`` samples of each model and question."""
    if given is not None:
        return ChosenK(given)
    k = offline_k(fewest, most, replaying=replaying)
    if k > fewest:
        return ChosenK(
            k,
            f"k={k}: the store was collected adaptively, up to {most} samples "
            "per model and question; the policies replay them at that k",
        )
    if k < DEFAULT_K:
        held = f"{fewest} sample{'s' * (fewest != 1)}"
        return ChosenK(
            k, f"k={k}: some model has only {held} of some question (the default k is {DEFAULT_K})"
        )
    if most > k:
        return ChosenK(
            k,
            f"k={k} of up to {most} samples recorded per model and question "
            "(the default; --k to use more)",
        )
    return ChosenK(k)


def study_k(
    study: Study, given: int | None, *, with_validation: bool = False, replaying: bool = False
) -> ChosenK:
    """The k of a vote over ``study``'s recorded samples (:func:`chosen_k`)."""
    arrays = [study.test]
    if with_validation and study.validation is not None:
        arrays.append(study.validation)
    fewest = min(int(a.recorded.min()) for a in arrays)
    most = max(int(a.recorded.max()) for a in arrays)
    return chosen_k(given, fewest, most, replaying=replaying)


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
        warn(
            f"{report.regraded} imported samples give a 'correct' that their task's grader "
            f"contradicts (first: {report.first_regraded}); the grader's verdict is stored"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from slm_mux.formats import export_jsonl
    from slm_mux.store import Store

    with Store(args.store, create=False) as store:
        _check_filters(args, store.summary())
        export_jsonl(store, sys.stdout, split=args.split, models=args.models, task=args.task)
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
    from slm_mux.store import Store

    with Store(args.store, create=False) as store:
        status = store.status()
    if args.json:
        print_json(status.to_json())
    elif status.empty:
        print(f"{args.store}: empty")
    else:
        print(status.to_markdown(), end="")
    return 0


def _study_tasks(args: argparse.Namespace) -> list[str] | None:
    """``--task`` with ``custom`` replaced by the tasks a custom file's questions are
    stored under (its lines' types) that the store holds."""
    if args.task is None or CUSTOM not in args.task:
        return args.task
    from slm_mux.store import Store
    from slm_mux.tasks.custom import CUSTOM_TYPES

    with Store(args.store, create=False) as store:
        held = sorted({h.task for h in store.summary()} & set(CUSTOM_TYPES))
    if not held:
        raise InputError(
            f"{args.store}: --task custom matches no sample (a custom file's questions are "
            f"stored under their types: {', '.join(CUSTOM_TYPES)})"
        )
    named = (held if name == CUSTOM else [name] for name in args.task)
    return list(dict.fromkeys(task for tasks in named for task in tasks))


def _open_study(args: argparse.Namespace) -> Study:
    from slm_mux.study import Study

    return Study.open(args.store, models=args.models, task=_study_tasks(args), warn=warn)


def cmd_eval(args: argparse.Namespace) -> int:
    study = _open_study(args)
    if not args.adaptive:
        chosen = study_k(study, args.k)
        plain = study.evaluate(k=chosen.k, trials=args.trials, seed=args.seed)
        if args.json:
            print_json(plain.to_json())
        else:
            print(plain.to_markdown())
        chosen.say()
        return 0
    chosen = study_k(study, args.k, replaying=True)
    evaluation, replayed = study.evaluate_adaptive(
        args.adaptive, k=chosen.k, trials=args.trials, seed=args.seed
    )
    if evaluation is None:
        warn(
            f"some models have fewer than k={replayed.k} samples of some questions: the policies "
            "replay the recorded samples in recorded order (full SLM-MUX and the baselines "
            "need k samples of every model and question)"
        )
        if args.json:
            print_json(replayed.to_json())
        else:
            print(replayed.to_markdown())
    elif args.json:
        payload = evaluation.to_json()
        payload["methods"].update(replayed.methods_json())
        print_json(payload)
    else:
        print(f"{evaluation.to_markdown()}\n{replayed.to_markdown()}")
    chosen.say()
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    study = _open_study(args)
    chosen = study_k(study, args.k, with_validation=True)
    result = study.search(
        k=chosen.k,
        max_models=args.max_models,
        lam=args.lam,
        trials=args.trials,
        seed=args.seed,
    )
    if args.json:
        print_json(result.to_json())
    else:
        print(result.to_markdown())
    chosen.say()
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    from slm_mux.analysis import write_plots

    study = _open_study(args)
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

    study = _open_study(args)
    chosen = study_k(study, args.k)
    report = study.report(
        Path(args.out),
        k=chosen.k,
        max_models=args.max_models,
        lam=args.lam,
        trials=args.trials,
        seed=args.seed,
        policies=args.adaptive or REPORTED_POLICIES,
    )
    for path in report.files:
        print(f"wrote {path}", file=sys.stderr)
    chosen.say()
    return 0


def _study_flags(parser: argparse.ArgumentParser, *, k: bool = True) -> None:
    flags.store_flag(parser)
    flags.models_flag(parser, "all in the store")
    parser.add_argument(
        "--task",
        type=flags.known_list("task", question_set_names),
        metavar="TASK[,TASK...]",
        help="task(s) of the samples, evaluated together (needed when the store holds several): "
        + ", ".join(task_names())
        + f"; {CUSTOM}: the tasks a custom question file stored",
    )
    if k:
        flags.k_flag(parser, flags.OFFLINE_K)
    flags.trials_flag(parser)
    flags.seed_flag(parser)


def _search_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-models", type=flags.integer(1, flags.MAX_MODELS), default=4, help="largest subset"
    )
    parser.add_argument(
        "--lambda",
        dest="lam",
        type=flags.weight,
        default=1.0,
        help="weight (>= 0) of the contradiction penalty",
    )


def add_commands(add: flags.AddCommand) -> None:
    """The offline sub-commands."""
    from slm_mux.analysis.adaptive_replay import REPORTED_POLICIES

    sub = add(
        "import",
        cmd_import,
        "import recorded samples (JSONL, the authors' layout, lm-eval or inspect_ai logs) "
        "or merge other stores",
    )
    sub.add_argument(
        "files",
        nargs="+",
        help="files to import; an SQLite store is merged whole; an lm-eval output folder "
        "or an inspect_ai log (.eval, .json) is read as a harness log",
    )
    flags.store_flag(sub, role="created if missing")
    flags.split_flag(sub, "split (authors' layout; harness logs: default test)")
    flags.task_flag(
        sub,
        task_names(),
        "grader of samples without a task (default: exact) and of harness logs (default: "
        "the one their task names)",
    )
    sub.add_argument(
        "--model", help="model name (authors' layout and harness logs; default: from the file)"
    )
    sub.add_argument(
        "--replace", action="store_true", help="overwrite stored samples that have another answer"
    )

    sub = add("export", cmd_export, "write stored samples as JSON Lines to stdout")
    flags.store_flag(sub)
    flags.split_flag(sub, "only this split")
    flags.models_flag(sub, "all")
    flags.task_flag(sub, task_names(), "only this task")

    sub = add("status", cmd_status, "what a store holds, per task, split and model")
    flags.store_flag(sub)
    flags.json_flag(sub)

    sub = add("eval", cmd_eval, "evaluate SLM-MUX and the baselines on the test split")
    _study_flags(sub)
    flags.replay_flag(
        sub,
        "default: none; on a store collected adaptively, k defaults to the k it was collected with",
    )
    flags.json_flag(sub)

    sub = add("search", cmd_search, "search the best model subset per size on validation")
    _study_flags(sub)
    _search_flags(sub)
    flags.json_flag(sub)

    report_out = "output folder"
    sub = add("scale", cmd_scale, "sweep samples per model and number of models; plot")
    _study_flags(sub, k=False)
    _search_flags(sub)
    flags.replay_flag(sub, "default: none")
    flags.out_flag(sub, "slm-mux-report", report_out)

    sub = add("report", cmd_report, "write a Markdown and HTML report with plots")
    _study_flags(sub)
    _search_flags(sub)
    flags.replay_flag(sub, "default: " + ",".join(map(str, REPORTED_POLICIES)))
    flags.out_flag(sub, "slm-mux-report", report_out)

"""``slm-mux demo``: the whole pipeline on the bundled tiny models (:mod:`slm_mux.demo`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slm_mux.cli import flags
from slm_mux.cli.output import warn
from slm_mux.defaults import DEFAULT_K


def cmd_demo(args: argparse.Namespace) -> int:
    from slm_mux.cli.progress import terminal_progress
    from slm_mux.demo import POOL_DIR, run_demo

    result = run_demo(
        Path(args.out),
        validation_questions=args.validation_questions,
        test_questions=args.questions,
        samples=args.samples,
        k=args.k,
        trials=args.trials,
        seed=args.seed,
        progress=terminal_progress(args.quiet),
        models_dir=Path(args.models_dir) if args.models_dir else POOL_DIR,
        warn=warn,
    )
    print(result.headline())
    print(result.search.to_markdown())
    for path in result.files:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def add_commands(add: flags.AddCommand) -> None:
    """``demo``."""
    from slm_mux.tasks.arith import MAX_QUESTIONS

    sub = add("demo", cmd_demo, "the whole pipeline on the bundled tiny models, offline")
    flags.out_flag(sub, "slm-mux-demo", "folder for the store and report")
    questions = flags.integer(1, MAX_QUESTIONS)
    sub.add_argument("--questions", type=questions, default=200, help="test questions")
    sub.add_argument(
        "--validation-questions", type=questions, default=100, help="validation questions"
    )
    sub.add_argument("--samples", type=flags.SAMPLES, default=5, help="samples collected per model")
    sub.add_argument(
        "--k",
        type=flags.SAMPLES,
        default=DEFAULT_K,
        help="samples per model in one SLM-MUX vote (the bundled pool's k)",
    )
    flags.trials_flag(sub)
    flags.seed_flag(sub, "the questions and the draws")
    sub.add_argument("--models-dir", help="folder of model folders (default: the bundled pool)")
    flags.quiet_flag(sub)

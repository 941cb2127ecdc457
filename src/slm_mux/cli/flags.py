"""Flags shared by the sub-commands, each declared once with one help text.

Every flag value is checked while parsing, before any file is read or model
loaded: a bad value is one ``slm-mux: error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from slm_mux.adaptive import Policy
from slm_mux.defaults import DEFAULT_K, MAX_K, MAX_SEED
from slm_mux.errors import InputError
from slm_mux.tasks.base import empty_question
from slm_mux.tasks.loading import Shard

MAX_TRIALS = 10_000
MAX_MODELS = 1000
MAX_LIMIT = 10_000_000
MAX_ROUNDS = 100
"""Upper bound of ``compare --rounds`` and ``--layers``."""
MAX_WORKERS = 256
"""Upper bound of ``serve --workers``."""

SPLITS = ["validation", "test"]

Handler = Callable[[argparse.Namespace], int]
"""A sub-command: parsed flags in, exit status out."""
AddCommand = Callable[[str, Handler, str], argparse.ArgumentParser]
"""Adds a sub-command (name, handler, one-line help) and returns its parser."""

LIVE_K = f"the pool's k: defaults.k, else {DEFAULT_K}"
"""How a live command picks k without ``--k`` (see :mod:`slm_mux.defaults`)."""
OFFLINE_K = f"{DEFAULT_K}, capped at the fewest samples recorded"
"""How an offline command picks k without ``--k`` (see :func:`slm_mux.defaults.offline_k`)."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one ``slm-mux: error:`` line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"slm-mux: error: {message} (see '{self.prog} --help')\n")


class HelpFormatter(argparse.HelpFormatter):
    """Help that ends each option with ``(default: X)`` when it has a default worth
    showing: not ``None``, not an off switch, and not already described in the help."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or "default" in text
        ):
            return text
        return f"{text} (default: %(default)s)"


# --- flag value types ---------------------------------------------------------------------


def integer(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            message = f"expected an integer from {low} to {high}, got {text!r}"
            raise argparse.ArgumentTypeError(message)
        return value

    return parse


SEED = integer(0, MAX_SEED)
SAMPLES = integer(1, MAX_K)
TRIALS = integer(1, MAX_TRIALS)
LIMIT = integer(1, MAX_LIMIT)


def weight(text: str) -> float:
    """An argparse type: a finite number ``>= 0``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def comma_list(kind: str) -> Callable[[str], list[str]]:
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


def known_list(kind: str, known: Callable[[], Sequence[str]]) -> Callable[[str], list[str]]:
    """An argparse type: comma-separated ``kind`` names from ``known()``, none repeated."""

    def names(text: str) -> list[str]:
        listed = comma_list(kind)(text)
        unknown = [name for name in listed if name not in known()]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {kind} {unknown[0]!r}; choose from {', '.join(known())}"
            )
        return listed

    return names


model_list = comma_list("model")


def shard(text: str) -> Shard:
    """An argparse type: a shard ``I/N`` (``1 <= I <= N``)."""
    try:
        return Shard.parse(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def policy(text: str) -> Policy:
    """An argparse type: an adaptive sampling policy (:meth:`Policy.parse`)."""
    try:
        return Policy.parse(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def policies(text: str) -> list[Policy]:
    """An argparse type: comma-separated adaptive sampling policies, none repeated."""
    parsed = [policy(name) for name in comma_list("adaptive policy")(text)]
    twice = next((p for i, p in enumerate(parsed) if p in parsed[:i]), None)
    if twice is not None:
        raise argparse.ArgumentTypeError(
            f"adaptive policy {str(twice)!r} is named twice in {text!r}"
        )
    return parsed


def question(text: str) -> str:
    """An argparse type: a question with some non-blank text (:func:`empty_question`)."""
    problem = empty_question(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _creatable(path: Path) -> None:
    """Raise unless ``path`` could be created: its nearest existing ancestor is a folder."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{path}: {parent} is not a folder")
            return


def folder(text: str) -> str:
    """An argparse type: an output folder, existing or not, but not a file."""
    path = Path(text)
    if not text:
        raise argparse.ArgumentTypeError("expected a folder, got ''")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    _creatable(path)
    return text


def store_file(text: str) -> str:
    """An argparse type: a store file, existing or not, but not a folder."""
    path = Path(text)
    if not text:
        raise argparse.ArgumentTypeError("expected a store file, got ''")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a store file")
    _creatable(path)
    return text


# --- flags --------------------------------------------------------------------------------


def store_flag(parser: argparse.ArgumentParser, *, role: str = "", required: bool = True) -> None:
    """``--store``: the SQLite sample store (``role``: what this command does with it)."""
    more = f" ({role})" if role else ""
    parser.add_argument(
        "--store", required=required, type=store_file, help=f"SQLite sample store{more}"
    )


def json_flag(parser: argparse.ArgumentParser) -> None:
    """``--json``: print one JSON object instead of Markdown."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def k_flag(parser: argparse.ArgumentParser, default: str) -> None:
    """``--k``: samples per model in one SLM-MUX vote (``default``: :data:`LIVE_K`,
    :data:`OFFLINE_K` or a number)."""
    parser.add_argument(
        "--k",
        type=SAMPLES,
        help=f"samples per model in one SLM-MUX vote (default: {default})",
    )


def trials_flag(parser: argparse.ArgumentParser) -> None:
    """``--trials``: random draws of k samples averaged over."""
    parser.add_argument("--trials", type=TRIALS, default=10, help="random draws")


def seed_flag(parser: argparse.ArgumentParser, of: str = "the draws") -> None:
    """``--seed``: the seed of ``of``."""
    parser.add_argument("--seed", type=SEED, default=0, help=f"seed of {of}")


def quiet_flag(parser: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bars."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def pool_flag(parser: argparse.ArgumentParser) -> None:
    """``--pool``: the pool file."""
    parser.add_argument("--pool", required=True, help="pool file (YAML or TOML)")


def models_flag(parser: argparse.ArgumentParser, default: str | None) -> None:
    """``--models``: comma-separated model names (``default``: which models without it)."""
    more = f" (default: {default})" if default else ""
    parser.add_argument("--models", type=model_list, help=f"comma-separated model names{more}")


def task_flag(parser: argparse.ArgumentParser, names: list[str], help_text: str, **kw: Any) -> None:
    """A ``--task`` flag that accepts only ``names``."""
    parser.add_argument(
        "--task", choices=names, metavar="TASK", help=f"{help_text}: {', '.join(names)}", **kw
    )


def split_flag(parser: argparse.ArgumentParser, help_text: str, **kw: Any) -> None:
    """``--split``: validation or test."""
    parser.add_argument("--split", choices=SPLITS, help=help_text, **kw)


def limit_flag(parser: argparse.ArgumentParser) -> None:
    """``--limit``: only the first N questions."""
    parser.add_argument("--limit", type=LIMIT, help="only the first N questions")


def out_flag(parser: argparse.ArgumentParser, default: str, help_text: str) -> None:
    """``--out``: an output folder."""
    parser.add_argument("--out", type=folder, default=default, help=help_text)


def adaptive_flag(parser: argparse.ArgumentParser, more: str = "") -> None:
    """``--adaptive POLICY``: the live sampling policy."""
    parser.add_argument(
        "--adaptive",
        type=policy,
        metavar="POLICY",
        help="SLM-MUX sampling policy: full, exact (lossless, in rounds), first-agree, "
        f"two-unanimous or agree:T (default: the pool's defaults.adaptive, else full){more}",
    )


def replay_flag(parser: argparse.ArgumentParser, default: str) -> None:
    """``--adaptive POLICY[,POLICY...]``: policies replayed offline on the recorded samples."""
    parser.add_argument(
        "--adaptive",
        type=policies,
        metavar="POLICY[,POLICY...]",
        help="replay adaptive sampling policies on the recorded samples, beside full SLM-MUX: "
        f"exact (lossless), first-agree, two-unanimous, agree:T with 0<T<=1 ({default})",
    )

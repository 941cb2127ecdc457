"""The README stays in step with the code: every command listed, the two set-up commands exact."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from slm_mux.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
CI = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text(encoding="utf-8")


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_every_command_is_in_the_readme_table() -> None:
    listed = set(re.findall(r"^\| `slm-mux (\w+)", README, re.M))
    assert listed == set(_commands())


def test_ci_runs_the_readme_test_command() -> None:
    blocks = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    test_command = next(b for b in blocks if "pytest" in b)
    assert test_command.strip() in CI

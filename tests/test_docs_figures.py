"""Every demo figure the README and docs quote is what ``slm-mux demo`` derives today.

One full default demo run (about half a minute on two CPU cores) feeds every check: the
README's headline table and the docs' search table are what the demo prints, verbatim; the
docs' sweep over k and adaptive-replay tables are those of the demo's ``report.md``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from slm_mux.demo import POOL_DIR, DemoResult, run_demo

pytestmark = [
    pytest.mark.skipif(
        not list(POOL_DIR.glob("*/config.json")),
        reason=f"no bundled models in {POOL_DIR}; run scripts/train_tiny_pool.py",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("transformers") is None,
        reason="the demo needs the local extra: pip install 'slm-mux[local]'",
    ),
]

ROOT = Path(__file__).resolve().parents[1]


def _ignore(message: str) -> None:
    """Warnings of the demo run, not checked here."""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoResult, str]:
    """The default demo, as ``slm-mux demo`` runs it, and its Markdown report."""
    out = tmp_path_factory.mktemp("demo")
    result = run_demo(out, warn=_ignore)
    return result, (out / "report.md").read_text(encoding="utf-8")


def _table_after(text: str, header: str) -> str:
    """The Markdown table that starts with ``header`` in ``text``."""
    start = text.index(header)
    end = text.find("\n\n", start)
    return text[start : end if end >= 0 else len(text)]


def test_the_readme_headline_is_what_the_demo_prints(demo: tuple[DemoResult, str]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    headline = demo[0].headline()
    assert headline in readme
    shown = re.findall(r"\| (0\.\d{3}) \|", readme)  # every accuracy and std the README quotes
    assert shown and all(figure in headline for figure in shown)


def test_the_docs_search_table_is_what_the_demo_prints(demo: tuple[DemoResult, str]) -> None:
    text = (ROOT / "docs" / "evaluation.md").read_text(encoding="utf-8")
    assert demo[0].search.to_markdown() in text


@pytest.mark.parametrize(
    ("doc", "header"),
    [
        ("evaluation.md", "| k | SLM-MUX | Agent Forest | best single SC | best single model |"),
        ("adaptive.md", "| policy | accuracy | std | samples | tokens | rounds | same decision |"),
    ],
)
def test_the_docs_demo_tables_are_the_demo_report_tables(
    demo: tuple[DemoResult, str], doc: str, header: str
) -> None:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    assert _table_after(text, header) == _table_after(demo[1], header)

"""The docs stay in step with the code: generated tables current, links whole, examples true."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import random
import re
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel
from tests.script_modules import load_script

from slm_mux.tasks.arith import PROBLEM_TYPES, evaluate, random_expression, scratchpad

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = sorted((ROOT / "docs").glob("*.md"))


GEN_DOCS = load_script("gen_docs")


@pytest.mark.parametrize("path", list(GEN_DOCS.generated()), ids=lambda path: path.name)
def test_generated_blocks_are_current(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    blocks = GEN_DOCS.generated()[path]
    assert GEN_DOCS.render(text, blocks) == text, "stale: run python scripts/gen_docs.py"


def test_the_pool_tables_name_every_key_and_a_stale_one_is_caught() -> None:
    from slm_mux.pool import Pool

    tables = GEN_DOCS.pool_tables()
    assert {"defaults", "models", "backend openai", "backend transformers", "price"} <= set(tables)
    defaults = Pool.model_fields["defaults"].annotation
    assert isinstance(defaults, type) and issubclass(defaults, BaseModel)
    for key, field in defaults.model_fields.items():
        assert f"| `{key}` |" in tables["defaults"]
        assert str(field.description)[:20] in tables["defaults"]
    text = GEN_DOCS.POOL_DOC.read_text(encoding="utf-8")
    stale = text.replace("| `max_batch_tokens` |", "| `max_batch_tokenz` |")
    assert GEN_DOCS.render(stale, tables) == text
    with pytest.raises(SystemExit, match="no marker for"):
        GEN_DOCS.render("nothing marked", tables)


def test_the_readme_is_short() -> None:
    assert 150 <= len(README.splitlines()) <= 250


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.*)$", text, re.M)}


@pytest.mark.parametrize("path", [ROOT / "README.md", *DOCS], ids=lambda path: path.name)
def test_every_local_link_and_anchor_exists(path: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
        if re.match(r"https?://", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{path.name}: {target}"
        if anchor:
            assert anchor in _anchors(linked), f"{path.name}: {target}"


def test_the_readme_arith_example_is_one_the_generator_makes() -> None:
    (example,) = set(re.findall(r"expressions such as `([^`]+)`", README))
    shapes = {
        re.sub(r"\d+", "n", random_expression(random.Random(seed), kind))
        for seed in range(200)
        for kind in PROBLEM_TYPES
    }
    assert re.sub(r"\d+", "n", example) in shapes
    assert max(int(n) for n in re.findall(r"\d+", example)) <= 49
    work = re.search(r"scratchpad \(`([^`]+)`\)", README)
    assert work is not None and work.group(1) == scratchpad(example)
    assert f'slm-mux ask "{example}"' in README and str(evaluate(example)) in work.group(1)


def test_the_math_verify_extra_is_spelled_as_published() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (requirement,) = [d for d in project["dependencies"] if d.startswith("math-verify")]
    extra = re.search(r"\[(.+)\]", requirement)
    assert extra is not None
    published = importlib.metadata.metadata("math-verify").get_all("Provides-Extra") or []
    assert extra.group(1) in published


def test_the_readme_selection_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    (snippet,) = [b for b in blocks if "decide(" in b]
    exec(compile(snippet, "README.md", "exec"), {})
    assert capsys.readouterr().out.startswith("Decision(answer='1/2', model='a', confidence=0.66")


def test_the_readme_demo_description_matches_the_pool_and_the_defaults() -> None:
    import inspect
    import json

    from slm_mux.demo import POOL_DIR, run_demo

    training = json.loads((POOL_DIR / "training.json").read_text(encoding="utf-8"))["models"]
    said = re.search(r"ships (\w+) tiny Llama models \(([\d.]+) M parameters each\)", README)
    assert said is not None
    assert said.group(1) == {3: "three", 4: "four", 5: "five"}[len(training)]
    assert {f"{model['params'] / 1e6:.2f}" for model in training.values()} == {said.group(2)}
    defaults = inspect.signature(run_demo).parameters
    described = (
        f"collects {defaults['samples'].default} samples per model on "
        f"{defaults['validation_questions'].default} validation and "
        f"{defaults['test_questions'].default} test questions (seeded), searches the "
        f"best subsets, evaluates every method at k = {defaults['k'].default} over "
        f"{defaults['trials'].default} trials"
    )
    assert described in " ".join(README.split())

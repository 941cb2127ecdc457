"""What a newcomer trips over on the command line (issue 15, §5): defaults shown in
``--help``, grammar, what ``ask`` prints, ``eval --task custom``, one default k."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from slm_mux.backends.config import Defaults
from slm_mux.cli import build_parser, main
from slm_mux.defaults import DEFAULT_K, offline_k


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _help(command: str) -> str:
    return " ".join(_subparsers()[command].format_help().split())


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("report", "output folder (default: slm-mux-report)"),
        ("scale", "output folder (default: slm-mux-report)"),
        ("collect", "split (default: test)"),
        ("demo", "folder for the store and report (default: slm-mux-demo)"),
        ("demo", "test questions (default: 200)"),
        ("demo", "validation questions (default: 100)"),
        ("demo", "samples collected per model (default: 5)"),
        ("demo", f"(the bundled pool's k) (default: {DEFAULT_K})"),
        ("eval", "random draws (default: 10)"),
        ("eval", f"(default: {DEFAULT_K}, capped at the fewest samples recorded)"),
        ("ask", f"(default: the pool's k: defaults.k, else {DEFAULT_K})"),
        ("serve", "port (0: a free one) (default: 8000)"),
        ("import", "(default: exact)"),
    ],
)
def test_help_shows_each_default(command: str, shown: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # argparse wraps lines at hyphens, too
    assert shown in _help(command)


def test_no_help_shows_a_default_of_none_or_false() -> None:
    for command, parser in _subparsers().items():
        text = parser.format_help()
        assert "default: None" not in text, command
        assert "default: False" not in text, command


def test_the_default_k_is_one_number_for_pools_demo_and_stores() -> None:
    assert Defaults().k == DEFAULT_K == 3
    assert _subparsers()["demo"].parse_args([]).k == DEFAULT_K
    assert [offline_k(n, 10) for n in (1, 2, 3, 10)] == [1, 2, 3, 3]
    assert offline_k(2, 5, replaying=True) == 5  # an adaptive store: its collection k
    assert offline_k(5, 5, replaying=True) == DEFAULT_K


def _write_store(tmp_path: Path, samples: int, tasks: tuple[str, ...] = ("exact",)) -> Path:
    """Two models, four test questions per task, ``samples`` samples each (imported)."""
    rows = [
        {
            "model": model,
            "task": task,
            "question_id": f"{task}-{q}",
            "sample": s,
            "answer": str(q if model == "a" or s else q + 1),
            "reference": str(q),
            "split": "test",
        }
        for task in tasks
        for model in ("a", "b")
        for q in range(4)
        for s in range(samples)
    ]
    data = tmp_path / "samples.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    db = tmp_path / "s.db"
    assert main(["import", str(data), "--store", str(db)]) == 0
    return db


def _eval(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[dict[str, object], str]:
    """The JSON ``eval`` prints and its note lines."""
    capsys.readouterr()
    assert main(["eval", *argv, "--trials", "2", "--json"]) == 0
    out, err = capsys.readouterr()
    notes = "".join(line + "\n" for line in err.splitlines() if "slm-mux: note:" in line)
    return json.loads(out), notes


def test_eval_defaults_to_three_of_more_samples_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _write_store(tmp_path, 5)
    payload, err = _eval(capsys, "--store", str(db))
    assert payload["k"] == DEFAULT_K
    assert err == (
        f"slm-mux: note: k={DEFAULT_K} of up to 5 samples recorded per model and question "
        "(the default; --k to use more)\n"
    )
    payload, err = _eval(capsys, "--store", str(db), "--k", "5")
    assert (payload["k"], err) == (5, "")


def test_eval_caps_the_default_k_at_the_fewest_samples_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _write_store(tmp_path, 2)
    payload, err = _eval(capsys, "--store", str(db))
    assert payload["k"] == 2
    assert err == (
        "slm-mux: note: k=2: some model has only 2 samples of some question "
        f"(the default k is {DEFAULT_K})\n"
    )


def test_a_store_of_exactly_the_default_k_needs_no_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload, err = _eval(capsys, "--store", str(_write_store(tmp_path, DEFAULT_K)))
    assert (payload["k"], err) == (DEFAULT_K, "")


def test_eval_task_custom_evaluates_the_types_a_custom_file_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _write_store(tmp_path, 3, tasks=("exact", "math"))
    payload, _ = _eval(capsys, "--store", str(db), "--task", "custom")
    both, _ = _eval(capsys, "--store", str(db), "--task", "exact,math")
    assert payload["questions"] == both["questions"] == 8
    assert payload["methods"] == both["methods"]


def test_eval_task_custom_on_a_store_without_custom_types_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"model": m, "task": "arith", "question_id": "q", "sample": 0, "answer": "1",
         "reference": "1", "split": "test"}
        for m in ("a", "b")
    ]  # fmt: skip
    data = tmp_path / "arith.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    db = tmp_path / "s.db"
    assert main(["import", str(data), "--store", str(db)]) == 0
    capsys.readouterr()
    assert main(["eval", "--store", str(db), "--task", "custom"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"slm-mux: error: {db}: --task custom matches no sample")
    assert err.count("\n") == 1


def _scripted_pool(tmp_path: Path, adaptive: str | None = None) -> Path:
    defaults = f"defaults:\n  adaptive: {adaptive}\n" if adaptive else ""
    models = "".join(
        f"  - name: {name}\n    backend: scripted\n    script:\n"
        f'      "*": ["Answer: {reply}", "Answer: 7", "Answer: {reply}"]\n'
        for name, reply in (("a", "7"), ("b", "8"))
    )
    pool = tmp_path / "pool.yaml"
    pool.write_text(f"{defaults}models:\n{models}")
    return pool


def test_ask_prints_no_adaptive_line_unless_a_policy_is_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = _scripted_pool(tmp_path)
    capsys.readouterr()
    assert main(["ask", "What?", "--pool", str(pool)]) == 0
    out, err = capsys.readouterr()
    assert out == "7\n"
    assert "adaptive" not in err
    assert f"(k={DEFAULT_K})" in err.splitlines()[0]
    assert main(["ask", "What?", "--pool", str(pool), "--adaptive", "full"]) == 0
    assert "adaptive full: 1 round, 6 of 6 samples" in capsys.readouterr().err


def test_ask_prints_the_adaptive_line_for_the_pools_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = _scripted_pool(tmp_path, adaptive="exact")
    capsys.readouterr()
    assert main(["ask", "What?", "--pool", str(pool)]) == 0
    lines = capsys.readouterr().err.splitlines()
    adaptive = [line for line in lines if line.startswith("adaptive exact: ")]
    assert len(adaptive) == 1
    rounds = int(adaptive[0].split()[2])
    assert adaptive[0].split()[3] == ("round," if rounds == 1 else "rounds,")


def test_ask_json_carries_each_models_k_and_reply_texts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = _scripted_pool(tmp_path)
    capsys.readouterr()
    assert main(["ask", "What?", "--pool", str(pool), "--k", "2", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["k"] == {"a": 2, "b": 2}
    assert payload["replies"] == {
        "a": ["Answer: 7", "Answer: 7"],
        "b": ["Answer: 8", "Answer: 7"],
    }
    assert payload["answer"] == "7"

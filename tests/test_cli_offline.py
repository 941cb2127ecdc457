"""The offline commands as a user runs them: import, export, eval, search, scale, report."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from slm_mux.cli import main
from slm_mux.selection import decide
from slm_mux.store import Store

MODELS = ("strong", "middling", "narrow")
SAMPLES = 5


def _write_recorded(path: Path, *, questions: int = 40, seed: int = 3) -> list[dict[str, object]]:
    """A seeded JSONL file: three models of different skill on two splits."""
    rng = np.random.default_rng(seed)
    skill = {"strong": 0.7, "middling": 0.5, "narrow": 0.35}
    rows: list[dict[str, object]] = []
    for split in ("validation", "test"):
        for q in range(questions):
            reference = str(q % 7)
            for model in MODELS:
                # "narrow" is sure of itself on every third question and weak elsewhere.
                p = 0.95 if model == "narrow" and q % 3 == 0 else skill[model]
                for s in range(SAMPLES):
                    right = rng.random() < p
                    answer: str | None = reference if right else str(rng.integers(7, 10))
                    if rng.random() < 0.05:
                        answer = None
                    rows.append(
                        {
                            "model": model,
                            "question_id": f"{split[0]}{q:03d}",
                            "sample": s,
                            "answer": answer,
                            "reference": reference,
                            "split": split,
                        }
                    )
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, list[dict[str, object]]]:
    data = tmp_path / "recorded.jsonl"
    rows = _write_recorded(data)
    db = tmp_path / "samples.db"
    assert main(["import", str(data), "--store", str(db)]) == 0
    return db, rows


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, object]:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_import_is_idempotent_and_export_round_trips(
    tmp_path: Path, store: tuple[Path, list[dict[str, object]]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, rows = store
    data = tmp_path / "recorded.jsonl"
    capsys.readouterr()
    assert main(["import", str(data), "--store", str(db)]) == 0
    assert f"{len(rows)} samples read, 0 new" in capsys.readouterr().err
    assert main(["export", "--store", str(db)]) == 0
    exported = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(exported) == len(rows)
    key = ("model", "question_id", "sample", "answer", "reference", "split")
    assert sorted(tuple(str(r[k]) for k in key) for r in exported) == sorted(
        tuple(str(r[k]) for k in key) for r in rows
    )


def test_eval_json_matches_selection_question_by_question(
    store: tuple[Path, list[dict[str, object]]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, rows = store
    out = _json(capsys, ["eval", "--store", str(db), "--k", str(SAMPLES), "--json"])
    assert out["questions"] == 40
    assert out["k"] == SAMPLES
    methods = out["methods"]
    assert isinstance(methods, dict)
    expected = {"slm-mux", "agent-forest", "oracle"}
    expected |= {f"{kind}:{m}" for kind in ("single", "sc") for m in MODELS}
    assert set(methods) == expected

    # Recompute SLM-MUX independently: validation accuracy per model, then decide().
    def accuracy(model: str) -> float:
        mine = [r for r in rows if r["model"] == model and r["split"] == "validation"]
        return sum(r["answer"] == r["reference"] for r in mine) / len(mine)

    val = {m: accuracy(m) for m in MODELS}
    by_question: dict[str, dict[str, list[str | None]]] = {}
    references: dict[str, object] = {}
    for r in rows:
        if r["split"] == "test":
            qid = str(r["question_id"])
            by_question.setdefault(qid, {m: [] for m in sorted(MODELS)})[str(r["model"])].append(
                r["answer"]  # type: ignore[arg-type]
            )
            references[qid] = r["reference"]
    correct = 0
    for qid, answers in by_question.items():
        decision = decide(
            answers, lambda xs: list(range(len(xs))), k=SAMPLES, validation_accuracy=val
        )
        correct += decision.answer == references[qid]
    assert methods["slm-mux"] == {"accuracy": pytest.approx(correct / 40), "std": 0.0}
    assert methods["oracle"]["accuracy"] >= methods["slm-mux"]["accuracy"]


def test_eval_trials_are_seeded(
    store: tuple[Path, list[dict[str, object]]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = store
    argv = ["eval", "--store", str(db), "--k", "3", "--trials", "5", "--json"]
    first = _json(capsys, [*argv, "--seed", "1"])
    again = _json(capsys, [*argv, "--seed", "1"])
    other = _json(capsys, [*argv, "--seed", "2"])
    assert first == again
    assert first["methods"] != other["methods"]


def test_search_json_and_size_one_is_best_majority_model(
    store: tuple[Path, list[dict[str, object]]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, rows = store
    out = _json(
        capsys,
        ["search", "--store", str(db), "--k", "3", "--max-models", "3", "--json"],
    )
    best = out["best"]
    assert isinstance(best, dict)
    assert sorted(best) == ["1", "2", "3"]
    assert sorted(best["3"]["models"]) == sorted(MODELS)
    for entry in best.values():
        assert entry["objective"] == pytest.approx(
            entry["union_accuracy"] - 1.0 * entry["contradiction"]
        )
        assert 0.0 <= entry["test_accuracy"] <= 1.0

    def majority_accuracy(model: str) -> float:
        hits = 0
        qids = sorted({str(r["question_id"]) for r in rows if r["split"] == "validation"})
        for qid in qids:
            mine = [r for r in rows if r["model"] == model and r["question_id"] == qid]
            first = [r["answer"] for r in sorted(mine, key=lambda r: int(str(r["sample"])))][:3]
            votes = Counter(a for a in first if a is not None)
            if votes:
                top = max(votes.values())
                winner = next(a for a in first if a is not None and votes[a] == top)
                hits += winner == mine[0]["reference"]
        return hits / len(qids)

    scores = {m: majority_accuracy(m) for m in MODELS}
    assert best["1"]["union_accuracy"] == pytest.approx(max(scores.values()))


def test_scale_and_report_write_files(
    tmp_path: Path, store: tuple[Path, list[dict[str, object]]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = store
    out = tmp_path / "out"
    argv = ["--store", str(db), "--trials", "2", "--max-models", "2", "--out", str(out)]
    assert main(["scale", *argv]) == 0
    table = capsys.readouterr().out
    assert "| k | SLM-MUX |" in table
    assert (out / "accuracy_vs_k.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["report", *argv]) == 0
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html
    assert "strong" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "--models", "strong,ghost"], "unknown model 'ghost'"),
        (["eval", "--k", "9"], "k=9 but model"),
        (["eval", "--task", "math"], "no samples of task 'math'"),
    ],
)
def test_errors_name_the_culprit(
    store: tuple[Path, list[dict[str, object]]],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    db, _ = store
    capsys.readouterr()
    assert main([*argv, "--store", str(db)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("slm-mux: error: ")
    assert message in err
    assert err.count("\n") == 1


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slm_mux", *argv], capture_output=True, text=True, check=False
    )


def test_store_errors_from_the_real_command(tmp_path: Path) -> None:
    missing = _run("eval", "--store", str(tmp_path / "nope.db"))
    assert (missing.returncode, missing.stderr) == (
        1,
        f"slm-mux: error: {tmp_path / 'nope.db'}: no such store\n",
    )

    only_test = tmp_path / "test-only.jsonl"
    only_test.write_text(
        json.dumps(
            {
                "model": "a",
                "question_id": "q1",
                "sample": 0,
                "answer": "1",
                "reference": "1",
                "split": "test",
            }
        )
        + "\n"
    )
    db = tmp_path / "s.db"
    assert _run("import", str(only_test), "--store", str(db)).returncode == 0
    search = _run("search", "--store", str(db), "--k", "1")
    assert search.returncode == 1
    assert "search needs validation samples of every model; none for 'a'" in search.stderr
    assert "Traceback" not in search.stderr

    # A failed import creates no store; a store without samples says so.
    empty = tmp_path / "empty.db"
    assert _run("import", str(tmp_path / "absent.jsonl"), "--store", str(empty)).returncode == 1
    assert not empty.exists()
    result = _run("eval", "--store", str(empty))
    assert (result.returncode, result.stderr) == (1, f"slm-mux: error: {empty}: no such store\n")
    Store(empty).close()
    result = _run("eval", "--store", str(empty))
    assert (result.returncode, result.stderr) == (
        1,
        f"slm-mux: error: {empty}: the store is empty; import or collect samples first\n",
    )


def test_malformed_file_is_rejected_whole(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    good = {
        "model": "a",
        "question_id": "q1",
        "sample": 0,
        "answer": "1",
        "reference": "1",
        "split": "test",
    }
    data.write_text(json.dumps(good) + "\n" + json.dumps({**good, "sample": "x"}) + "\n")
    db = tmp_path / "s.db"
    result = _run("import", str(data), "--store", str(db))
    assert result.returncode == 1
    assert f"{data}:2:" in result.stderr and "Traceback" not in result.stderr
    assert not db.exists()

    # With a good file before the bad one, nothing from either is written.
    fine = tmp_path / "fine.jsonl"
    fine.write_text(json.dumps(good) + "\n")
    assert _run("import", str(fine), "--store", str(db)).returncode == 0
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({**good, "question_id": "q2"}) + "\n")
    assert _run("import", str(other), str(data), "--store", str(db)).returncode == 1
    exported = _run("export", "--store", str(db)).stdout.splitlines()
    assert [json.loads(line)["question_id"] for line in exported] == ["q1"]


def test_an_output_folder_that_is_a_file_is_refused_before_any_work(
    tmp_path: Path, store: tuple[Path, list[dict[str, object]]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = store
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--store", str(db), "--trials", "1", "--out", str(blocker)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"slm-mux: error: argument --out: {str(blocker)!r} is a file, not a folder "
        "(see 'slm-mux report --help')\n"
    )


def test_an_unwritable_output_file_is_one_error_line(
    tmp_path: Path, store: tuple[Path, list[dict[str, object]]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = store
    out = tmp_path / "out"
    (out / "report.md").mkdir(parents=True)  # the report cannot be written over a folder
    capsys.readouterr()
    assert main(["report", "--store", str(db), "--trials", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"slm-mux: error: {out / 'report.md'}: Is a directory\n"


def test_a_model_without_validation_samples_ranks_last_and_blocks_only_search(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _write_recorded(tmp_path / "all.jsonl")
    kept = [r for r in rows if not (r["model"] == "narrow" and r["split"] == "validation")]
    data = tmp_path / "partial.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in kept))
    db = tmp_path / "s.db"
    assert main(["import", str(data), "--store", str(db)]) == 0
    capsys.readouterr()
    out = _json(capsys, ["eval", "--store", str(db), "--k", str(SAMPLES), "--json"])
    assert out["questions"] == 40
    assert main(["eval", "--store", str(db)]) == 0
    assert "no validation samples of 'narrow': they rank last" in capsys.readouterr().err
    assert main(["search", "--store", str(db), "--k", "3"]) == 1
    assert "none for 'narrow'" in capsys.readouterr().err

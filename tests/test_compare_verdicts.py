"""The compare table and its JSON count mav's verifier replies without a ``Verdict:`` line
(issue 19 §3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from slm_mux.cli import main
from slm_mux.comparison import MethodResult, Verdicts, verdict_counts

# Verifiers see "Your check:"; every model approves one way or the other.
SCRIPT = {
    "a": {"Your check:": ["Looks right.\nVerdict: approve"], "*": ["#### 4"]},
    "b": {"Your check:": ["Fine, yes."], "*": ["#### 4"]},
}


def test_the_table_and_json_show_unparsed_verdicts_of_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = tmp_path / "pool.yaml"
    models = [{"name": n, "backend": "scripted", "script": s} for n, s in SCRIPT.items()]
    pool.write_text(yaml.safe_dump({"defaults": {"k": 3}, "models": models}))
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"id": "q1", "question": "2+2?", "answer": "#### 4"}) + "\n")
    argv = ["compare", "--pool", str(pool), "--task", "gsm8k", "--data", str(data)]
    argv += ["--store", str(tmp_path / "s.db"), "--methods", "slm-mux,mav", "--quiet"]
    argv += ["--candidates", "2", "--aspects", "final-answer"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert main([*argv, "--json"]) == 0  # replayed from the store
    methods = json.loads(capsys.readouterr().out)["methods"]
    # 2 candidates x 1 aspect x 2 verifiers; b never writes the line.
    assert (methods["mav"]["verdicts"], methods["mav"]["unparsed_verdicts"]) == (4, 2)
    assert "verdicts" not in methods["slm-mux"]
    header, _, *rows = table.splitlines()[:4]
    assert "| unparsed verdicts |" in header
    mav = next(row for row in rows if row.startswith("| mav "))
    assert "| 2 of 4 |" in mav
    assert "| - |" in next(row for row in rows if row.startswith("| slm-mux "))


def test_verdicts_round_trip_through_the_stored_json() -> None:
    counted = verdict_counts([{"verdicts": 4, "unparsed_verdicts": 1}, {"verdicts": 2}, {}])
    assert counted == Verdicts(6, 1)
    assert verdict_counts([{"answers": {}}]) is None
    row = MethodResult("mav", 2, 1, 10, 0, 0, 0.0, 0, verdicts=counted)
    assert MethodResult.from_json("mav", row.to_json()) == row

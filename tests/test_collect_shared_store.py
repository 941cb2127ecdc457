"""Two `collect` runs on one store: each one's summary counts only the samples it inserted."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from tests.test_adaptive_live import MODELS, by_seed, write_pool
from tests.test_adaptive_live_collect import question_file, stored

from slm_mux.cli import main
from slm_mux.sample import Sample
from slm_mux.store import Store
from slm_mux.testing.fake_server import FakeServerConfig, run_fake_server


def test_samples_another_process_stored_first_are_not_counted_as_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.db"
    add = Store.add

    def raced(self: Store, samples: Iterable[Sample]) -> int:
        """Another process (its own connection) stores every even-numbered sample of the
        batch just before this one commits it."""
        batch = list(samples)
        with Store(db) as other:
            add(other, [s for s in batch if s.sample % 2 == 0])
        return add(self, batch)

    monkeypatch.setattr(Store, "add", raced)
    with run_fake_server(FakeServerConfig(answers={"*": by_seed})) as (url, _):
        pool = write_pool(tmp_path / "pool.yaml", url, k=3)
        argv = ["collect", "--pool", str(pool), "--task", "gsm8k", "--store", str(db)]
        argv += ["--data", str(question_file(tmp_path / "q.jsonl")), "--limit", "4", "--quiet"]
        assert main(argv) == 0
    assert len(stored(db)) == 4 * 3 * len(MODELS)
    err = capsys.readouterr().err
    for model in MODELS:  # samples 0 and 2 were the other's; sample 1 of 4 questions is new
        assert f"test gsm8k: {model}: 4 new samples, 0 already stored" in err

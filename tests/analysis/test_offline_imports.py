"""The offline commands leave plotting and live-model libraries unimported until needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from slm_mux.sample import Split
from slm_mux.store import Store

from .builders import random_table, samples_from_table

HEAVY = ["matplotlib", "PIL", "rich", "openai", "httpx", "pydantic", "transformers", "torch"]

SCRIPT = """
import json, sys
from contextlib import redirect_stdout
from io import StringIO
from slm_mux.cli import main
store, heavy = sys.argv[1], json.loads(sys.argv[2])
for argv in (["eval", "--k", "2"], ["search", "--k", "2"]):
    with redirect_stdout(StringIO()):
        assert main([*argv, "--store", store, "--trials", "2"]) == 0
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} & set(heavy))))
"""


def test_eval_and_search_import_no_plotting_or_live_model_library(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    with Store(store) as db:
        splits: tuple[Split, ...] = ("validation", "test")
        for seed, split in enumerate(splits):
            table, references = random_table(seed, models=2, questions=5, samples=3)
            db.add(samples_from_table(table, references, split=split))
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(store), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(run.stdout) == []

"""Adaptive SLM-MUX sampling, offline, against the targets of issue 10:
``python bench/bench_adaptive.py [--store slm-mux-demo/store.db]``.

(a) Lossless (``exact``) on the bundled demo pool (the store ``slm-mux demo``
    writes; run here into a temporary folder unless ``--store`` names one):
    identical decisions to full SLM-MUX on 100 % of test questions, and the
    samples saved, at k = 3 (10 seeded draws of 3 of the 5 recorded samples)
    and k = 5 (all recorded samples, one pass).
(b) Approximate policies on the demo pool and each of its sub-pools of two
    and three models: accuracy change against full SLM-MUX on the same draws
    and samples saved; the target is at least 30 % fewer samples at a loss of
    at most 0.5 accuracy points. ``agree`` is the share of (question, draw)
    where every model's first sample gives the same answer.
(c) The cost of the replay itself: ``slm-mux eval`` with and without
    ``--adaptive`` on the synthetic store of ``bench_offline.py`` (10 models x
    1,000 test questions x 9 samples, 10 trials), in-process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from io import StringIO
from itertools import combinations
from pathlib import Path

import numpy as np
from bench_offline import write_store

from slm_mux.adaptive import Policy
from slm_mux.analysis.adaptive_replay import FloatArray, PolicyScore, replay_policies
from slm_mux.analysis.arrays import SampleArrays
from slm_mux.analysis.evaluate import drawn_indices
from slm_mux.cli import main
from slm_mux.study import Study

APPROXIMATE = ("first-agree", "two-unanimous", "agree:1", "agree:0.75", "agree:0.6", "agree:0.5")
TRIALS, SEED = 10, 0
SAVING, LOSS = 0.30, 0.005
"""The approximate target: at least 30 % fewer samples at a loss of at most 0.5 points."""


def demo_store(given: str | None, folder: Path) -> Path:
    """The demo's store: the one given, else a fresh ``slm-mux demo`` run into ``folder``."""
    if given is not None:
        return Path(given)
    out = folder / "demo"
    print("running slm-mux demo (about two minutes on two cores) ...", file=sys.stderr)
    subprocess.run(
        ["slm-mux", "demo", "--out", str(out), "--quiet"], check=True, stdout=subprocess.DEVNULL
    )
    return out / "store.db"


def first_answers_agree(test: SampleArrays, k: int) -> float:
    """Share of (question, draw) on which every model's first drawn sample is one answer."""
    flat = test.codes.ravel()
    shares = []
    for index in drawn_indices(test, k=k, trials=TRIALS, seed=SEED):
        first = flat[index][:, :, 0]
        shares.append(float(((first == first[0]) & (first[0] >= 0)).all(axis=0).mean()))
    return float(np.mean(shares))


def replayed(
    test: SampleArrays,
    names: tuple[str, ...],
    k: int,
    accuracy: dict[str, float] | None,
    tokens: FloatArray | None = None,
) -> dict[str, PolicyScore]:
    policies = [Policy.parse(name) for name in ("full", *names)]
    result = replay_policies(
        test, policies, k=k, trials=TRIALS, seed=SEED, validation_accuracy=accuracy, tokens=tokens
    )
    return {str(policy): score for policy, score in result.policies.items()}


def lossless(study: Study) -> None:
    print("(a) lossless: exact on the demo pool (all models), against full SLM-MUX\n")
    print("| k | draws | SLM-MUX | exact | same decision | samples saved | tokens saved | rounds |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for k in (3, 5):
        scores = replayed(study.test, ("exact",), k, study.validation_accuracy, study.test_tokens)
        full, exact = scores["full"], scores["exact"]
        draws = "1 pass" if k == int(study.test.recorded.min()) else f"{TRIALS} trials"
        same, saved = exact.same_decision or 0.0, 1 - exact.samples_fraction
        tokens = (
            "-" if exact.tokens_fraction is None else f"{100 * (1 - exact.tokens_fraction):.1f} %"
        )
        print(
            f"| {k} | {draws} | {100 * full.accuracy:.2f} | {100 * exact.accuracy:.2f} | "
            f"{100 * same:.1f} % | {100 * saved:.1f} % | {tokens} | {exact.rounds:.2f} |"
        )
        assert exact.same_decision == 1.0, "exact changed a decision"


def approximate(study: Study) -> None:
    print(
        f"\n(b) approximate: accuracy change (points) / samples saved; * meets the target "
        f"(>= {SAVING:.0%} saved, loss <= {100 * LOSS:.1f} points)\n"
    )
    models = study.test.models
    pools = [list(c) for size in (len(models), 3, 2) for c in combinations(models, size)]
    print("| pool | k | agree | SLM-MUX | " + " | ".join(APPROXIMATE) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(APPROXIMATE))
    met: dict[str, int] = dict.fromkeys(APPROXIMATE, 0)
    cases = 0
    for pool in pools:
        test = study.test.subset(pool)
        for k in (3, 5):
            scores = replayed(test, APPROXIMATE, k, study.validation_accuracy)
            full = scores.pop("full")
            cells = []
            for name, score in scores.items():
                change, saved = score.accuracy - full.accuracy, 1 - score.samples_fraction
                ok = saved >= SAVING and change >= -LOSS - 1e-12
                met[name] += ok
                cells.append(f"{100 * change:+.2f} / {100 * saved:.0f}%{' *' if ok else ''}")
            cases += 1
            label = ",".join(name.removeprefix("tiny-") for name in pool)
            print(
                f"| {label} | {k} | {100 * first_answers_agree(test, k):.0f}% | "
                f"{100 * full.accuracy:.2f} | " + " | ".join(cells) + " |"
            )
    print(
        f"\ntarget met, of {cases} (pool, k) cases: "
        + ", ".join(f"{n} {c}" for n, c in met.items())
    )


def replay_cost(folder: Path) -> None:
    print("\n(c) replay cost: slm-mux eval, 10 models x 1,000 test questions x 9 samples\n")
    store = write_store(folder, 10, {"validation": 200, "test": 1000}, 9)
    policies = "exact,first-agree,two-unanimous,agree:1"
    print("| command | seconds |")
    print("|---|---:|")
    for k in ("3", "9"):
        for extra in ([], ["--adaptive", policies]):
            argv = ["eval", "--store", str(store), "--k", k, "--trials", str(TRIALS), *extra]
            start = time.perf_counter()
            with redirect_stdout(StringIO()):
                assert main(argv) == 0
            shown = " ".join(argv[3:]).replace(str(store), "STORE")
            print(f"| eval {shown} | {time.perf_counter() - start:.2f} |")


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="the store of an earlier 'slm-mux demo' run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        study = Study.open(demo_store(args.store, folder), task="arith")
        print(
            f"demo store: {len(study.test.question_ids)} test questions, models "
            f"{', '.join(study.test.models)}, {int(study.test.recorded.min())} samples each\n"
        )
        lossless(study)
        approximate(study)
        replay_cost(folder)


if __name__ == "__main__":
    main_bench()

"""Time ``slm-mux import`` at scale: ``python bench/bench_import.py [--models 20 ...]``.

Writes a JSON Lines file of 20 models x 2,000 questions x 16 samples (640,000
samples, seeded) to a temporary folder, imports it into a fresh store with
the in-process command line, then imports it again (every sample already
stored: the idempotent path). Prints the seconds of each import and the peak
resident memory of the process on stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from slm_mux.cli import main


def write_samples(path: Path, models: int, questions: int, samples: int, seed: int) -> int:
    """Write the synthetic samples; about 70 % of the answers are right. Returns their number."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as stream:
        for m in range(models):
            skill = 0.5 + 0.4 * rng.random()
            for q in range(questions):
                reference = str(q % 97)
                for s in range(samples):
                    right = rng.random() < skill
                    answer = (
                        reference
                        if right
                        else (None if rng.random() < 0.05 else str(rng.randrange(5)))
                    )
                    record = {
                        "model": f"model-{m:02d}",
                        "question_id": f"q{q:05d}",
                        "sample": s,
                        "answer": answer,
                        "reference": reference,
                        "split": "validation" if q % 4 == 0 else "test",
                    }
                    stream.write(json.dumps(record) + "\n")
    return models * questions * samples


def timed_import(data: Path, store: Path) -> float:
    """Seconds one ``slm-mux import`` takes; exits if the import fails."""
    start = time.perf_counter()
    status = main(["import", str(data), "--store", str(store)])
    seconds = time.perf_counter() - start
    if status != 0:
        sys.exit(f"import failed with status {status}")
    return seconds


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--questions", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "samples.jsonl"
        count = write_samples(data, args.models, args.questions, args.samples, args.seed)
        size_mib = data.stat().st_size / 2**20
        before = peak_rss_mib()
        first = timed_import(data, Path(folder) / "store.db")
        again = timed_import(data, Path(folder) / "store.db")
        print(f"{count} samples ({size_mib:.0f} MiB of JSON Lines)")
        print(f"import into a new store: {first:.2f} s")
        print(f"import again (all stored): {again:.2f} s")
        print(f"peak RSS: {peak_rss_mib():.0f} MiB (before importing: {before:.0f} MiB)")


if __name__ == "__main__":
    main_bench()

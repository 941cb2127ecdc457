"""Write the question sets of the real-model experiment (docs/real-models.md).

Three sets, each as a validation and a test file, seeded so a rerun writes the
same bytes:

- ``gsm8k-{validation,test}.json``: disjoint slices of a GSM8K file (default
  ``../shared/data/gsm8k_500.json``, the ``gsm8k`` task's layout), when it is there;
- ``wordprob-{validation,test}.jsonl``: one-step word problems (one addition,
  subtraction or multiplication of small numbers in a sentence), custom type ``gsm8k``;
- ``facts-{validation,test}.jsonl``: four-option multiple-choice facts (capitals,
  opposites, animal classes, planets), custom type ``gpqa``, options shuffled per question.

    python scripts/make_real_sets.py [--out DIR] [--gsm8k FILE] [--validation N] [--test N]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

DEFAULT_OUT = Path("~/.cache/slm-mux/real-sets")
DEFAULT_GSM8K = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gsm8k_500.json"

NAMES = ("Ann", "Ben", "Carla", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jo")
THINGS = ("apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "shells")

CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Germany": "Berlin",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Russia": "Moscow",
    "China": "Beijing",
    "Greece": "Athens",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Norway": "Oslo",
    "Ireland": "Dublin",
    "Portugal": "Lisbon",
    "Austria": "Vienna",
    "Poland": "Warsaw",
    "Thailand": "Bangkok",
    "Argentina": "Buenos Aires",
    "Sweden": "Stockholm",
}
OPPOSITES = {
    "hot": "cold",
    "big": "small",
    "up": "down",
    "fast": "slow",
    "happy": "sad",
    "light": "dark",
    "open": "closed",
    "early": "late",
    "full": "empty",
    "old": "young",
    "hard": "soft",
    "wet": "dry",
}
ANIMALS = {
    "dog": "mammal",
    "cat": "mammal",
    "whale": "mammal",
    "horse": "mammal",
    "eagle": "bird",
    "penguin": "bird",
    "sparrow": "bird",
    "owl": "bird",
    "shark": "fish",
    "salmon": "fish",
    "tuna": "fish",
    "snake": "reptile",
    "lizard": "reptile",
    "turtle": "reptile",
    "frog": "amphibian",
    "toad": "amphibian",
}
PLANETS = {
    "Which planet is closest to the Sun?": "Mercury",
    "Which planet is the largest in our solar system?": "Jupiter",
    "Which planet is known as the Red Planet?": "Mars",
    "Which planet has the most famous rings?": "Saturn",
    "Which planet do we live on?": "Earth",
}
PLANET_NAMES = ("Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune")


def word_problem(rng: random.Random) -> tuple[str, int]:
    """One sentence problem needing one operation on small numbers, and its answer."""
    name, other = rng.sample(NAMES, 2)
    thing = rng.choice(THINGS)
    kind = rng.choice(("add", "sub", "mul"))
    if kind == "add":
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        return (
            f"{name} has {a} {thing}. {other} gives {name} {b} more. "
            f"How many {thing} does {name} have now?",
            a + b,
        )
    if kind == "sub":
        a = rng.randint(10, 60)
        b = rng.randint(1, a - 1)
        return (
            f"{name} has {a} {thing} and gives {b} of them to {other}. "
            f"How many {thing} does {name} have left?",
            a - b,
        )
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return (
        f"{name} has {a} boxes with {b} {thing} in each box. How many {thing} does {name} have?",
        a * b,
    )


def fact_pool() -> list[tuple[str, str, list[str]]]:
    """Every (question, answer, wrong options) fact, in a fixed order."""
    facts = []
    for country, city in CAPITALS.items():
        others = [c for c in CAPITALS.values() if c != city]
        facts.append((f"What is the capital of {country}?", city, others))
    for word, opposite in OPPOSITES.items():
        others = [o for o in OPPOSITES.values() if o != opposite]
        facts.append((f"What is the opposite of '{word}'?", opposite, others))
    classes = sorted(set(ANIMALS.values()))
    for animal, kind in ANIMALS.items():
        facts.append(
            (f"What kind of animal is a {animal}?", kind, [c for c in classes if c != kind])
        )
    for question, planet in PLANETS.items():
        facts.append((question, planet, [p for p in PLANET_NAMES if p != planet]))
    return facts


def word_problems(count: int, rng: random.Random) -> Iterator[dict[str, object]]:
    seen: set[str] = set()
    while len(seen) < count:
        text, answer = word_problem(rng)
        if text not in seen:
            seen.add(text)
            yield {
                "id": f"wordprob-{len(seen)}",
                "question": text,
                "reference": str(answer),
                "type": "gsm8k",
            }


def facts(count: int, rng: random.Random) -> Iterator[dict[str, object]]:
    chosen = rng.sample(fact_pool(), count)
    for number, (question, answer, wrong) in enumerate(chosen, start=1):
        options = [answer, *rng.sample(wrong, 3)]
        rng.shuffle(options)
        yield {
            "id": f"facts-{number}",
            "question": question,
            "reference": answer,
            "type": "gpqa",
            "choices": options,
        }


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def split_write(
    out: Path,
    name: str,
    make: Callable[[int, random.Random], Iterator[dict[str, object]]],
    sizes: tuple[int, int],
) -> None:
    """``name``-validation.jsonl and ``name``-test.jsonl: one seeded draw, split in order."""
    rows = list(make(sum(sizes), random.Random(f"real-sets-{name}")))
    write_jsonl(out / f"{name}-validation.jsonl", rows[: sizes[0]])
    write_jsonl(out / f"{name}-test.jsonl", rows[sizes[0] :])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write into")
    parser.add_argument("--gsm8k", type=Path, default=DEFAULT_GSM8K, help="a GSM8K JSON file")
    parser.add_argument("--validation", type=int, default=20, help="validation questions per set")
    parser.add_argument("--test", type=int, default=30, help="test questions per set")
    args = parser.parse_args(argv)
    out = args.out.expanduser()
    out.mkdir(parents=True, exist_ok=True)
    sizes = (args.validation, args.test)
    if sum(sizes) > len(fact_pool()):
        raise SystemExit(f"make_real_sets: error: at most {len(fact_pool())} fact questions")
    split_write(out, "wordprob", word_problems, sizes)
    split_write(out, "facts", facts, sizes)
    written = "wordprob, facts (JSONL, custom)"
    if args.gsm8k.is_file():
        gsm8k = json.loads(args.gsm8k.read_text())
        # GSM8K: the file's last questions validate, its first ones test (disjoint).
        (out / "gsm8k-validation.json").write_text(json.dumps(gsm8k[-args.validation :], indent=1))
        (out / "gsm8k-test.json").write_text(json.dumps(gsm8k[: args.test], indent=1))
        written += ", gsm8k (JSON)"
    print(f"question sets in {out}: {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

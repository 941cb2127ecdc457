"""Scaling sweeps: test accuracy against samples per model and against number of models."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import cycle
from pathlib import Path
from typing import Any

from slm_mux.analysis.arrays import SampleArrays, validation_accuracy
from slm_mux.analysis.evaluate import evaluate
from slm_mux.analysis.search import search


@dataclass(frozen=True)
class SamplesPoint:
    """Test accuracy with ``k`` samples per model.

    ``best_single_sc`` is the highest self-consistency accuracy of one model
    at this ``k`` on the test split, reached by ``best_single_model``.
    """

    k: int
    slm_mux: float
    agent_forest: float
    best_single_sc: float
    best_single_model: str

    def to_json(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "slm_mux": self.slm_mux,
            "agent_forest": self.agent_forest,
            "best_single_sc": self.best_single_sc,
            "best_single_model": self.best_single_model,
        }


@dataclass(frozen=True)
class ModelsPoint:
    """Test accuracy of SLM-MUX and union accuracy with the searched best ``size`` models."""

    size: int
    models: tuple[str, ...]
    slm_mux: float
    union_accuracy: float

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "models": list(self.models),
            "slm_mux": self.slm_mux,
            "union_accuracy": self.union_accuracy,
        }


@dataclass(frozen=True)
class Scaling:
    """Both sweeps; the model sweep searched and evaluated at ``k`` samples per model."""

    by_samples: list[SamplesPoint]
    by_models: list[ModelsPoint]
    k: int
    trials: int
    seed: int
    lam: float
    exact: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "trials": self.trials,
            "seed": self.seed,
            "lambda": self.lam,
            "exact": self.exact,
            "by_samples": [point.to_json() for point in self.by_samples],
            "by_models": [point.to_json() for point in self.by_models],
        }

    def to_markdown(self) -> str:
        """Both sweeps as Markdown tables."""
        lines = [
            "| k | SLM-MUX | Agent Forest | best single SC | best single model |",
            "|---:|---:|---:|---:|---|",
            *(
                f"| {p.k} | {p.slm_mux:.4f} | {p.agent_forest:.4f} | "
                f"{p.best_single_sc:.4f} | {p.best_single_model} |"
                for p in self.by_samples
            ),
            "",
            f"Models searched on validation and evaluated on test at k={self.k} "
            f"({'exact' if self.exact else 'beam'} search, lambda={self.lam:g}).",
            "",
            "| models | subset | SLM-MUX | union accuracy |",
            "|---:|---|---:|---:|",
            *(
                f"| {p.size} | {', '.join(p.models)} | {p.slm_mux:.4f} | {p.union_accuracy:.4f} |"
                for p in self.by_models
            ),
        ]
        return "\n".join(lines) + "\n"


def scale(
    validation: SampleArrays,
    test: SampleArrays,
    *,
    trials: int,
    seed: int,
    lam: float = 1.0,
    max_models: int,
    k: int | None = None,
) -> Scaling:
    """Sweep ``k = 1 ..`` the fewest samples recorded, and subset sizes ``1 .. max_models``.

    For each ``k``: SLM-MUX, Agent Forest and the best single model's
    self-consistency on test. For each size: the subset :func:`search` picks on
    validation at ``k`` (default: the largest ``k`` both splits have), with
    SLM-MUX accuracy and union (oracle) accuracy on test. Tie-breaks use
    validation accuracy.
    """
    accuracy = validation_accuracy(validation)
    most = int(test.recorded.min())
    chosen_k = min(most, int(validation.recorded.min())) if k is None else k
    by_samples = []
    for samples in range(1, most + 1):
        scores = evaluate(
            test, k=samples, trials=trials, seed=seed, validation_accuracy=accuracy
        ).methods
        best_model = max(test.models, key=lambda name: scores[f"sc:{name}"].accuracy)
        by_samples.append(
            SamplesPoint(
                k=samples,
                slm_mux=scores["slm-mux"].accuracy,
                agent_forest=scores["agent-forest"].accuracy,
                best_single_sc=scores[f"sc:{best_model}"].accuracy,
                best_single_model=best_model,
            )
        )
    found = search(validation, k=chosen_k, max_models=max_models, lam=lam)
    by_models = []
    for size, subset in sorted(found.best.items()):
        scores = evaluate(
            test.subset(subset.models),
            k=chosen_k,
            trials=trials,
            seed=seed,
            validation_accuracy=accuracy,
        ).methods
        by_models.append(
            ModelsPoint(
                size=size,
                models=subset.models,
                slm_mux=scores["slm-mux"].accuracy,
                union_accuracy=scores["oracle"].accuracy,
            )
        )
    return Scaling(
        by_samples=by_samples,
        by_models=by_models,
        k=chosen_k,
        trials=trials,
        seed=seed,
        lam=lam,
        exact=found.exact,
    )


def write_plots(scaling: Scaling, out_dir: Path) -> list[Path]:
    """PNG plots of both sweeps in ``out_dir``: accuracy vs k, and vs number of models."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_k = out_dir / "accuracy_vs_k.png"
    _plot(
        by_k,
        [p.k for p in scaling.by_samples],
        {
            "SLM-MUX": [p.slm_mux for p in scaling.by_samples],
            "Agent Forest": [p.agent_forest for p in scaling.by_samples],
            "best single SC": [p.best_single_sc for p in scaling.by_samples],
        },
        xlabel="samples per model (k)",
        title="Test accuracy vs samples per model",
    )
    by_models = out_dir / "accuracy_vs_models.png"
    _plot(
        by_models,
        [p.size for p in scaling.by_models],
        {
            "SLM-MUX": [p.slm_mux for p in scaling.by_models],
            "union accuracy": [p.union_accuracy for p in scaling.by_models],
        },
        xlabel="number of models",
        title=f"Test accuracy vs number of models (k={scaling.k})",
    )
    return [by_k, by_models]


def _plot(
    path: Path, x: list[int], series: dict[str, list[float]], *, xlabel: str, title: str
) -> None:
    """One line per series against integer ``x``, saved as PNG (matplotlib imported lazily)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for (label, values), marker in zip(series.items(), cycle("os^D")):
        axes.plot(x, values, marker=marker, label=label)
    axes.set(xlabel=xlabel, ylabel="test accuracy", title=title)
    axes.set_xticks(x)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

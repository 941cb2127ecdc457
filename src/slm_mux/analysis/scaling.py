"""Scaling sweeps: test accuracy against samples per model and against number of models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import cycle, pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slm_mux.adaptive import Policy
from slm_mux.analysis.adaptive_replay import (
    FloatArray,
    PolicyScore,
    method_name,
    replay_policies,
)
from slm_mux.analysis.arrays import SampleArrays, fewest_samples, validation_accuracy
from slm_mux.analysis.evaluate import (
    AGENT_FOREST,
    ORACLE,
    SLM_MUX,
    evaluate,
    self_consistency,
)
from slm_mux.analysis.search import SearchResult, search
from slm_mux.errors import InputError
from slm_mux.outfile import write_file
from slm_mux.tables import markdown_table

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class SamplesPoint:
    """Test accuracy with ``k`` samples per model.

    ``best_single_sc`` is the test self-consistency accuracy at this ``k`` of
    ``best_single_model``, the best single model by validation accuracy (the
    same model at every ``k``). ``adaptive`` holds each replayed adaptive
    sampling policy's score on the same draws.
    """

    k: int
    slm_mux: float
    agent_forest: float
    best_single_sc: float
    best_single_model: str
    adaptive: dict[Policy, PolicyScore] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The point; ``"adaptive"`` (``{"slm-mux@<policy>": {...}}``) only with replays."""
        point: dict[str, Any] = {
            "k": self.k,
            "slm_mux": self.slm_mux,
            "agent_forest": self.agent_forest,
            "best_single_sc": self.best_single_sc,
            "best_single_model": self.best_single_model,
        }
        if self.adaptive:
            point["adaptive"] = {method_name(p): s.to_json() for p, s in self.adaptive.items()}
        return point


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

    @property
    def policies(self) -> list[Policy]:
        """The adaptive sampling policies replayed at every ``k``."""
        return list(self.by_samples[0].adaptive) if self.by_samples else []

    def adaptive_markdown(self) -> str:
        """Per ``k``: accuracy and samples fraction of each replayed policy beside full SLM-MUX
        (empty without replayed policies)."""
        if not self.policies:
            return ""
        return markdown_table(
            ("k", "SLM-MUX", *(f"{method_name(p)} (samples)" for p in self.policies)),
            [
                (
                    str(point.k),
                    f"{point.slm_mux:.4f}",
                    *(
                        f"{s.accuracy:.4f} ({s.samples_fraction:.3f})"
                        for s in point.adaptive.values()
                    ),
                )
                for point in self.by_samples
            ],
            ["right"] * (2 + len(self.policies)),
        )

    def to_markdown(self) -> str:
        """Both sweeps (and the replayed policies per ``k``) as Markdown tables."""
        by_samples = markdown_table(
            ("k", "SLM-MUX", "Agent Forest", "best single SC", "best single model"),
            [
                (
                    str(p.k),
                    f"{p.slm_mux:.4f}",
                    f"{p.agent_forest:.4f}",
                    f"{p.best_single_sc:.4f}",
                    p.best_single_model,
                )
                for p in self.by_samples
            ],
            ("right", "right", "right", "right", "left"),
        )
        by_models = markdown_table(
            ("models", "subset", "SLM-MUX", "union accuracy"),
            [
                (str(p.size), ", ".join(p.models), f"{p.slm_mux:.4f}", f"{p.union_accuracy:.4f}")
                for p in self.by_models
            ],
            ("right", "left", "right", "right"),
        )
        search = "exact" if self.exact else "beam"
        adaptive = self.adaptive_markdown()
        if adaptive:
            adaptive = (
                "\nAdaptive sampling replayed on the same draws: test accuracy "
                f"(samples drawn / models x k).\n\n{adaptive}"
            )
        return (
            "Best single model by validation accuracy; its self-consistency (SC) on test.\n\n"
            f"{by_samples}{adaptive}\nModels searched on validation and evaluated on test at "
            f"k={self.k} ({search} search, lambda={self.lam:g}).\n\n{by_models}"
        )


def scale(
    validation: SampleArrays,
    test: SampleArrays,
    *,
    trials: int,
    seed: int,
    lam: float = 1.0,
    max_models: int,
    k: int | None = None,
    found: SearchResult | None = None,
    policies: Sequence[Policy] = (),
    tokens: FloatArray | None = None,
) -> Scaling:
    """Sweep ``k = 1 ..`` the fewest samples recorded, and subset sizes ``1 .. max_models``.

    For each ``k``: SLM-MUX, Agent Forest and, on test, the self-consistency of
    the best single model by validation accuracy (chosen once; ties go to the
    model name that sorts first). For each size: the subset :func:`search` picks
    on validation at ``k`` (default: the largest ``k`` both splits have), with
    SLM-MUX accuracy and union (oracle) accuracy on test. ``found``, a search
    already run with the same ``k``, ``lam`` and ``max_models``, is reused
    instead of searching again. Tie-breaks use validation accuracy. Each of
    ``policies`` is replayed at every ``k`` on the same draws
    (:func:`~slm_mux.analysis.adaptive_replay.replay_policies`, with the test
    samples' completion ``tokens`` when known).
    """
    accuracy = validation_accuracy(validation)
    absent = [name for name in test.models if name not in accuracy]
    if absent:
        raise InputError(f"model {absent[0]!r} has test samples but no validation samples")
    best_model = max(test.models, key=accuracy.__getitem__)
    by_samples = []
    for samples in range(1, fewest_samples(test) + 1):
        scores = evaluate(
            test, k=samples, trials=trials, seed=seed, validation_accuracy=accuracy
        ).methods
        by_samples.append(
            SamplesPoint(
                k=samples,
                slm_mux=scores[SLM_MUX].accuracy,
                agent_forest=scores[AGENT_FOREST].accuracy,
                best_single_sc=scores[self_consistency(best_model)].accuracy,
                best_single_model=best_model,
                adaptive=_replayed(
                    test,
                    policies,
                    k=samples,
                    trials=trials,
                    seed=seed,
                    accuracy=accuracy,
                    tokens=tokens,
                ),
            )
        )
    if found is None:
        searched_k = fewest_samples(test, validation) if k is None else k
        found = search(validation, k=searched_k, max_models=max_models, lam=lam)
    else:
        _check_reused(found, k=k, lam=lam, sizes=min(max_models, len(validation.models)))
    by_models = []
    for size, subset in sorted(found.best.items()):
        scores = evaluate(
            test.subset(subset.models),
            k=found.k,
            trials=trials,
            seed=seed,
            validation_accuracy=accuracy,
        ).methods
        by_models.append(
            ModelsPoint(
                size=size,
                models=subset.models,
                slm_mux=scores[SLM_MUX].accuracy,
                union_accuracy=scores[ORACLE].accuracy,
            )
        )
    return Scaling(
        by_samples=by_samples,
        by_models=by_models,
        k=found.k,
        trials=trials,
        seed=seed,
        lam=found.lam,
        exact=found.exact,
    )


def _replayed(
    test: SampleArrays,
    policies: Sequence[Policy],
    *,
    k: int,
    trials: int,
    seed: int,
    accuracy: dict[str, float],
    tokens: FloatArray | None,
) -> dict[Policy, PolicyScore]:
    """Each of ``policies`` replayed at ``k`` (nothing to replay: empty)."""
    if not policies:
        return {}
    return replay_policies(
        test, policies, k=k, trials=trials, seed=seed, validation_accuracy=accuracy, tokens=tokens
    ).policies


def _check_reused(found: SearchResult, *, k: int | None, lam: float, sizes: int) -> None:
    """Raise unless ``found`` was searched at ``k`` (if given), ``lam`` and sizes ``1 .. sizes``."""
    asked_k = found.k if k is None else k
    if (found.k, found.lam, sorted(found.best)) != (asked_k, lam, list(range(1, sizes + 1))):
        raise InputError(
            f"the given search has k={found.k}, lambda={found.lam:g}, sizes up to "
            f"{max(found.best, default=0)}; scaling asked for k={asked_k}, lambda={lam:g}, "
            f"sizes up to {sizes}"
        )


def write_plots(scaling: Scaling, out_dir: Path) -> list[Path]:
    """PNG plots of both sweeps in ``out_dir``: accuracy vs k, and vs number of models; with
    replayed adaptive policies, also the accuracy-cost curve (accuracy vs samples drawn).

    All are drawn on one matplotlib figure, without pyplot (imported only here).
    """
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(6, 4))
    figure.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.92)
    by_k = out_dir / "accuracy_vs_k.png"
    _plot(
        figure,
        by_k,
        [p.k for p in scaling.by_samples],
        {
            "SLM-MUX": [p.slm_mux for p in scaling.by_samples],
            "Agent Forest": [p.agent_forest for p in scaling.by_samples],
            "best single model (by validation), SC": [p.best_single_sc for p in scaling.by_samples],
        },
        xlabel="samples per model (k)",
        title="Test accuracy vs samples per model",
    )
    by_models = out_dir / "accuracy_vs_models.png"
    _plot(
        figure,
        by_models,
        [p.size for p in scaling.by_models],
        {
            "SLM-MUX": [p.slm_mux for p in scaling.by_models],
            "union accuracy": [p.union_accuracy for p in scaling.by_models],
        },
        xlabel="number of models",
        title=f"Test accuracy vs number of models (k={scaling.k})",
    )
    if not scaling.policies:
        return [by_k, by_models]
    by_cost = out_dir / "accuracy_vs_samples.png"
    _plot_cost(figure, by_cost, scaling)
    return [by_k, by_models, by_cost]


def _plot_cost(figure: Figure, path: Path, scaling: Scaling) -> None:
    """Accuracy against samples drawn per model and question: one point per policy and k
    (labelled with k), full SLM-MUX drawing all k."""
    figure.clear()
    axes = figure.add_subplot()
    points = scaling.by_samples
    series = {"SLM-MUX (full)": [(float(p.k), p.slm_mux) for p in points]}
    for policy in scaling.policies:
        series[f"adaptive {policy}"] = [
            (p.adaptive[policy].samples_fraction * p.k, p.adaptive[policy].accuracy) for p in points
        ]
    for (label, xy), marker in zip(series.items(), cycle("os^Dvx*P")):
        axes.plot(*zip(*xy, strict=True), marker=marker, label=label)
    for p, (x, y) in zip(points, series["SLM-MUX (full)"], strict=True):
        axes.annotate(f"k={p.k}", (x, y), textcoords="offset points", xytext=(4, -10))
    axes.set(
        xlabel="samples drawn per model and question (mean)",
        ylabel="test accuracy",
        title="Accuracy vs cost: adaptive sampling against full SLM-MUX",
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    write_file(path, lambda stream: figure.savefig(stream, format="png", dpi=110))


def _plot(
    figure: Figure,
    path: Path,
    x: list[int],
    series: dict[str, list[float]],
    *,
    xlabel: str,
    title: str,
) -> None:
    """One line per series against integer ``x`` on a cleared ``figure``, saved as PNG."""
    figure.clear()
    axes = figure.add_subplot()
    draw_lines(axes, x, series)
    axes.set(xlabel=xlabel, ylabel="test accuracy", title=title)
    axes.set_xticks(x)
    axes.grid(alpha=0.3)
    axes.legend()
    write_file(path, lambda stream: figure.savefig(stream, format="png", dpi=110))


DODGE = 0.06
"""Horizontal offset between neighbouring series, as a share of the x spacing."""


def draw_lines(axes: Axes, x: list[int], series: dict[str, list[float]]) -> None:
    """One line per series, each with its own marker, line style and small x offset.

    Series that coincide (SLM-MUX and the best single model at k = 1, say) stay
    visible: markers shrink and are hollow from the first series on, and each
    series sits ``DODGE`` of the x spacing beside its neighbour, centred on ``x``.
    """
    step = min((b - a for a, b in pairwise(x)), default=1) or 1
    styles = zip(cycle("os^Dv"), cycle(("-", "--", ":", "-.")), strict=False)
    lines = zip(series.items(), styles, strict=False)
    for i, ((label, values), (marker, line)) in enumerate(lines):
        offset = (i - (len(series) - 1) / 2) * DODGE * step
        axes.plot(
            [value + offset for value in x],
            values,
            marker=marker,
            linestyle=line,
            markersize=max(9 - 2 * i, 4),
            markerfacecolor="none",
            label=label,
        )

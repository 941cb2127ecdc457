"""The evaluation report: one Markdown file and one self-contained HTML file.

The HTML file inlines its CSS and embeds the plots as base64 data URIs, so it
loads nothing from anywhere.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from slm_mux.analysis.adaptive_replay import Replayed, method_name
from slm_mux.analysis.evaluate import Evaluation
from slm_mux.analysis.scaling import Scaling
from slm_mux.analysis.search import SearchResult
from slm_mux.comparison import Comparison, MethodResult
from slm_mux.outfile import write_text
from slm_mux.tables import markdown_cell, markdown_table, numeric_right

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
td:first-child, th:first-child { white-space: nowrap; }
img { max-width: 100%; display: block; margin: 0.5rem 0 1.5rem; }
p.note { color: #555; }
"""


QUESTION_CHARS = 80
"""Longest question text shown in the per-question table."""

REASONS_SHOWN = 1
"""Distinct failure reasons shown beside a compared method that failed everywhere (the
rest are counted)."""


@dataclass(frozen=True)
class _Section:
    """A heading, an optional note, table and images, rendered to both formats."""

    heading: str
    note: str = ""
    headers: tuple[str, ...] = ()
    rows: Sequence[tuple[str, ...]] = ()
    images: tuple[Path, ...] = ()


def write_report(
    out_dir: Path,
    *,
    evaluation: Evaluation,
    search: SearchResult | None = None,
    scaling: Scaling | None = None,
    plots: Sequence[Path] = (),
    title: str = "SLM-MUX report",
    question_texts: Mapping[str, str] | None = None,
    references: Mapping[str, str] | None = None,
    comparisons: Sequence[Comparison] = (),
    replayed: Replayed | None = None,
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir`` and return their paths.

    ``question_texts`` (by question id), when known, are shown beside each
    question's outcome, cut to :data:`QUESTION_CHARS` characters, and ``references``
    (by question id) beside them. Each of ``comparisons`` (``slm-mux compare``
    results) gets a "Live comparison" section; ``replayed`` adaptive sampling
    policies get theirs after the accuracy table.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = _sections(evaluation, search, scaling, plots, question_texts or {}, references or {})
    if replayed is not None:
        sections.insert(1, _adaptive_section(replayed))
    # Before the per-question table, which is always last.
    sections[-1:-1] = [_comparison_section(c) for c in comparisons]
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_text(md_path, _markdown(title, sections, out_dir))
    write_text(html_path, _html(title, sections))
    return md_path, html_path


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= QUESTION_CHARS else flat[: QUESTION_CHARS - 1] + "…"


def _sections(
    evaluation: Evaluation,
    search: SearchResult | None,
    scaling: Scaling | None,
    plots: Sequence[Path],
    question_texts: Mapping[str, str],
    references: Mapping[str, str],
) -> list[_Section]:
    sections = _evaluation_sections(evaluation)
    if search is not None:
        sections.append(_search_section(search))
    if scaling is not None:
        sections += _scaling_sections(scaling)
    if plots:
        sections.append(_Section("Plots", images=tuple(plots)))
    sections.append(_per_question_section(evaluation, question_texts, references))
    return sections


def _evaluation_sections(evaluation: Evaluation) -> list[_Section]:
    """Accuracy per method, and whose answers SLM-MUX took."""
    spread = "std is 0" if evaluation.all_recorded else "std is across trials (ddof=0)"
    return [
        _Section(
            "Accuracy on the test split",
            f"{evaluation.questions} questions, k={evaluation.k} samples per model, "
            f"{evaluation.draws_summary}; {spread}.",
            ("method", "accuracy", "std"),
            [
                (str(method), _percent(score.accuracy), _percent(score.std))
                for method, score in evaluation.methods.items()
            ],
        ),
        _Section(
            "Where SLM-MUX's answers came from",
            "Share of questions whose final answer was each model's, averaged over trials.",
            ("model", "share"),
            [(name, _percent(share)) for name, share in evaluation.model_share.items()]
            + [("(no answer)", _percent(evaluation.no_answer_share))],
        ),
    ]


def _search_section(search: SearchResult) -> _Section:
    """The best subset per size on validation."""
    return _Section(
        "Model selection (validation split)",
        f"Best subset per size by union accuracy - lambda x contradiction, "
        f"k={search.k}, lambda={search.lam:g}, "
        f"{'exact search' if search.exact else 'beam search (approximate)'}.",
        ("size", "models", "objective", "union", "contradiction", "test accuracy"),
        [
            (
                str(size),
                ", ".join(score.models),
                f"{score.objective:.4f}",
                _percent(score.union_accuracy),
                _percent(score.contradiction),
                "-" if score.test_accuracy is None else _percent(score.test_accuracy),
            )
            for size, score in sorted(search.best.items())
        ],
    )


def _scaling_sections(scaling: Scaling) -> list[_Section]:
    """Accuracy against samples per model and against the number of models."""
    return [
        _Section(
            "Scaling with samples per model (test split)",
            "Best single model by validation accuracy (chosen once, the same at every k); "
            "best single SC is its self-consistency accuracy on test.",
            ("k", "SLM-MUX", "Agent Forest", "best single SC", "best single model"),
            [
                (
                    str(p.k),
                    _percent(p.slm_mux),
                    _percent(p.agent_forest),
                    _percent(p.best_single_sc),
                    p.best_single_model,
                )
                for p in scaling.by_samples
            ],
        ),
        _Section(
            "Scaling with number of models (test split)",
            f"Subsets searched on validation at k={scaling.k}, lambda={scaling.lam:g}.",
            ("models", "subset", "SLM-MUX", "union accuracy"),
            [
                (
                    str(p.size),
                    ", ".join(p.models),
                    _percent(p.slm_mux),
                    _percent(p.union_accuracy),
                )
                for p in scaling.by_models
            ],
        ),
    ]


def _per_question_section(
    evaluation: Evaluation, question_texts: Mapping[str, str], references: Mapping[str, str]
) -> _Section:
    """SLM-MUX's pick on each test question of the first trial."""
    return _Section(
        "SLM-MUX per question (first trial)",
        "The winning model, its answer and confidence (majority count / k).",
        ("question", "text", "reference", "model", "answer", "confidence", "correct"),
        [
            (
                o.question_id,
                _shorten(question_texts.get(o.question_id, "")),
                references.get(o.question_id, "-"),
                o.model or "-",
                "-" if o.answer is None else o.answer,
                f"{o.confidence:.2f}",
                "yes" if o.correct else "no",
            )
            for o in evaluation.first_trial
        ],
    )


def _comparison_section(comparison: Comparison) -> _Section:
    """A live comparison's table; with a column of reasons when some method failed on
    every question (up to :data:`REASONS_SHOWN` distinct ones per method)."""
    results = list(comparison.methods.values())
    if not any(result.failed_everywhere for result in results):
        return _Section("Live comparison", comparison.note(), comparison.header, comparison.rows())
    reasons = [_reasons(result) if result.failed_everywhere else "" for result in results]
    return _Section(
        "Live comparison",
        comparison.note(),
        (*comparison.header, "why every question failed"),
        [(*row, why) for row, why in zip(comparison.rows(), reasons, strict=True)],
    )


def _reasons(result: MethodResult) -> str:
    """The first :data:`REASONS_SHOWN` distinct failure reasons of ``result``, joined."""
    if not result.failures:
        return "no reason recorded"
    shown = "; ".join(failure.reason for failure in result.failures[:REASONS_SHOWN])
    more = len(result.failures) - REASONS_SHOWN
    return f"{shown} (and {more} other reasons)" if more > 0 else shown


def _adaptive_section(replayed: Replayed) -> _Section:
    """The replayed policies at the report's k, beside full SLM-MUX."""
    return _Section(
        "Adaptive sampling (replayed on the same draws)",
        "Each policy draws samples in rounds and stops early (slm_mux.adaptive); samples "
        "(tokens) is the share of the models x k samples (of their completion tokens) it drew, "
        "same decision the share of questions where it chose full SLM-MUX's model and answer. "
        "exact is lossless by construction.",
        ("policy", "accuracy", "std", "samples", "tokens", "rounds", "same decision"),
        [
            (
                method_name(policy),
                _percent(s.accuracy),
                _percent(s.std),
                _percent(s.samples_fraction),
                "-" if s.tokens_fraction is None else _percent(s.tokens_fraction),
                f"{s.rounds:.2f}",
                "-" if s.same_decision is None else _percent(s.same_decision),
            )
            for policy, s in replayed.policies.items()
        ],
    )


def _markdown(title: str, sections: list[_Section], out_dir: Path) -> str:
    lines = [f"# {markdown_cell(title)}", ""]
    for section in sections:
        lines += [f"## {section.heading}", ""]
        if section.note:
            lines += [section.note, ""]
        if section.headers:
            align = numeric_right(section.headers, section.rows)
            lines += [markdown_table(section.headers, section.rows, align)]
        for image in section.images:
            lines += [f"![{image.stem}]({Path(os.path.relpath(image, out_dir)).as_posix()})", ""]
    return "\n".join(lines)


def _html_table(section: _Section) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in section.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>\n"
        for row in section.rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def _html_image(plot: Path) -> str:
    data = base64.b64encode(plot.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(plot.stem)}" src="data:image/png;base64,{data}">'


def _html(title: str, sections: list[_Section]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.heading)}</h2>")
        if section.note:
            parts.append(f'<p class="note">{html.escape(section.note)}</p>')
        if section.headers:
            parts.append(_html_table(section))
        parts += [_html_image(image) for image in section.images]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)

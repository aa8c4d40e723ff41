"""Choosing settings on a validation period, and reporting over seeds, the same way in every benchmark.

Every accuracy benchmark fits each candidate setting with several seeds, scores the candidates on a
validation period that lies inside the training data, picks the candidate with the lowest mean
validation score, and only then scores that one candidate on the test windows, once. The log of the
choice (every candidate's validation mean and std) is printed and written with the results.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_SEEDS = (0, 1, 2)


def mean_std(values: Sequence[float], digits: int = 4) -> str:
    """ "mean ± std" (population std over seeds; a single value has std 0)."""
    a = np.asarray(values, dtype=np.float64)
    return f"{a.mean():.{digits}f} ± {a.std():.{digits}f}"


def choose(scores: Mapping[str, Sequence[float]]) -> str:
    """The candidate with the lowest mean validation score; the first listed wins a tie, and a
    candidate with a non-finite score is never chosen."""
    finite = {name: float(np.mean(v)) for name, v in scores.items() if all(math.isfinite(x) for x in v)}
    if not finite:
        raise ValueError("no candidate has a finite validation score")
    best = min(finite.values())
    return next(name for name, value in finite.items() if value == best)


def selection_lines(
    title: str, scores: Mapping[str, Sequence[float]], metric: str, described: Mapping[str, str]
) -> list[str]:
    """Markdown table of the validation scores of every candidate, the chosen one marked."""
    chosen = choose(scores)
    lines = [
        f"Selection, {title}: validation {metric} (mean ± std over seeds), lowest mean chosen",
        "",
        f"| candidate | settings | validation {metric} | per seed | chosen |",
        "|---|---|---|---|---|",
    ]
    for name, values in scores.items():
        per_seed = ", ".join(f"{v:.4f}" for v in values)
        mark = "**chosen**" if name == chosen else ""
        lines.append(f"| {name} | {described[name]} | {mean_std(values)} | {per_seed} | {mark} |")
    return lines


def arms_report(
    title: str, header: Sequence[str], table: Sequence[str], facts: Sequence[str], log: Sequence[str]
) -> list[str]:
    """The results file of an arms comparison (every arm scored once on test after the validation
    choice): title, how it was run (`header`, one bullet each), the table, facts and the selection log."""
    return [
        f"# {title}",
        "",
        *[f"- {line}" for line in header],
        "",
        "## Every arm (the choice made on validation; each arm scored once on the test windows)",
        "",
        *table,
        "",
        *[f"- {f}" for f in facts],
        "",
        "## Validation-only selection log",
        "",
        *log,
    ]

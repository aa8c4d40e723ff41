"""The leakage guard's measure: does a "known-future" covariate look recorded from the target, not planned?

A plan (a promotion calendar, a price list, a holiday flag) is fixed before the sales it is meant to explain,
so it cannot know which steps the target will be zero on, nor reproduce the target's noise. A column that does
either was almost certainly written down after the fact, and feeding its forecast-window values to a model
hands the model the answer. Two rules, each measured per series on the cleaned history:

- agreement: whether (covariate != 0) == (target != 0), measured on each state of the target on its own: the
  share of the target's zero steps where the covariate is zero and the share of its non-zero steps where the
  covariate is non-zero, the lower of the two (a plain share of all steps would reward a covariate that
  matches only the common state). Measured only on series where both columns take each state on at least
  `MIN_STATE_STEPS` steps, since a series that is never zero says nothing; evidence at `AGREEMENT` (0.99).
- explained: the squared correlation of the step-to-step changes of covariate and target, on series where
  both change on at least `MIN_STATE_STEPS` steps. Changes, not levels, so shared trends and seasons do not
  count; evidence at `EXPLAINED` (0.95) or more: a plan that moves the target that closely leaves no noise.

A covariate is refused when either rule holds on at least `SERIES_SHARE` (10%) of the series it was measured
on, and on one series at least. A plan that really is this close to the target (a store-open flag, say) is
marked as checked in the config instead. Plain pandas/numpy: no Prefect, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

AGREEMENT = 0.99
EXPLAINED = 0.95
SERIES_SHARE = 0.1
MIN_STATE_STEPS = 5


@dataclass(frozen=True)
class Evidence:
    """What a covariate showed against the target: on how many of the measured series a rule held."""

    column: str
    rule: str  # "agreement" or "explained"
    series: int  # series on which the rule held
    measured: int  # series on which it could be measured
    exact: int  # of `series`, those that agree on every step (agreement) or correlate perfectly (explained)

    @property
    def refused(self) -> bool:
        return self.series >= 1 and self.series >= SERIES_SHARE * self.measured

    def describe(self) -> str:
        if self.rule == "agreement":
            return (
                f"it is zero on the target's zero steps and non-zero on its non-zero steps on {self.series} "
                f"of {self.measured} series (on {AGREEMENT:.0%} or more of each; {self.exact} on every step)"
            )
        return (
            f"its step changes explain the target's (R^2 >= {EXPLAINED}) on {self.series} of "
            f"{self.measured} series"
        )


def zero_agreement(target: np.ndarray, covariate: np.ndarray) -> float | None:
    """How well the covariate's zeros match the target's: the share of the target's zero steps on which the
    covariate is zero, or of its non-zero steps on which it is non-zero, whichever is lower (so matching
    only the common state scores nothing). None when either column is (almost) always zero or always
    non-zero, which makes the match meaningless."""
    keep = np.isfinite(target) & np.isfinite(covariate)
    t, c = target[keep] != 0, covariate[keep] != 0
    for states in (t, c):
        if min(states.sum(), (~states).sum()) < MIN_STATE_STEPS:
            return None
    return float(min(np.mean(c[t]), np.mean(~c[~t])))


def explained_changes(target: np.ndarray, covariate: np.ndarray) -> float | None:
    """R^2 of the target's step changes on the covariate's; None when either changes too rarely."""
    dt, dc = np.diff(target), np.diff(covariate)
    keep = np.isfinite(dt) & np.isfinite(dc)
    dt, dc = dt[keep], dc[keep]
    if min(np.count_nonzero(dt), np.count_nonzero(dc)) < MIN_STATE_STEPS:
        return None
    r = np.corrcoef(dt, dc)[0, 1]
    return float(r * r) if np.isfinite(r) else None


def measure(frame: pd.DataFrame, series_id: str, target: str, column: str) -> list[Evidence]:
    """Both rules for one covariate over every series of a long frame (rows in time order per series)."""
    scores: dict[str, list[float]] = {"agreement": [], "explained": []}
    for _, group in frame.groupby(series_id, sort=False):
        t = group[target].to_numpy(np.float64)
        c = group[column].to_numpy(np.float64)
        for rule, score in (("agreement", zero_agreement(t, c)), ("explained", explained_changes(t, c))):
            if score is not None:
                scores[rule].append(score)
    thresholds = {"agreement": AGREEMENT, "explained": EXPLAINED}
    return [
        Evidence(
            column=column,
            rule=rule,
            series=sum(s >= thresholds[rule] for s in values),
            measured=len(values),
            exact=sum(s >= 1.0 - 1e-12 for s in values),
        )
        for rule, values in scores.items()
    ]


def leaking_covariates(
    frame: pd.DataFrame, series_id: str, target: str, columns: list[str] | tuple[str, ...]
) -> list[Evidence]:
    """The evidence against each column the rules refuse, in the order given (at most one per column)."""
    refused = []
    for column in columns:
        found = [e for e in measure(frame, series_id, target, column) if e.refused]
        if found:
            refused.append(found[0])
    return refused

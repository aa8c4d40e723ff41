"""Rolling-origin backtest of the LSTM against the cheap baselines (lstm_model.baselines).

Every fold refits from scratch on data before its cutoff (scaler included, inside `fit`), so no
statistic or weight has seen the test period; all models are scored on the same series and steps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.model_selection import TimeSeriesSplit

from lstm_model.baselines import BASELINES, baseline_quantiles
from lstm_model.calibration import quantile_pairs
from lstm_model.config import ModelConfig, TrainConfig
from lstm_model.metrics import coverage, mae, mase, rmse, smape
from lstm_model.panel import Panel
from lstm_model.prediction import predict, predict_origins
from lstm_model.train import TrainResult, fit

MODELS = ("lstm", *BASELINES)
# `stopped`: why the fold's LSTM fit ended (TrainResult.stopped_reason), the same on every row of a fold
COLUMNS = ("fold", "cutoff", "series_id", "model", "mae", "rmse", "smape", "mase", "coverage", "stopped")
METRICS = ("mae", "rmse", "smape", "mase", "coverage")


def fold_cutoffs(n_steps: int, horizon: int, n_folds: int) -> list[int]:
    """First test index of each fold on the global axis: the last n_folds * horizon steps, in blocks.

    Uses TimeSeriesSplit(n_splits=n_folds, test_size=horizon). sklearn refuses n_splits=1, so a
    single fold is computed directly with the same rule (test = the last `horizon` steps).
    """
    if not isinstance(n_folds, int) or isinstance(n_folds, bool) or n_folds < 1:
        raise ValueError(f"n_folds must be a positive integer, got {n_folds!r}")
    if n_steps - n_folds * horizon < 1:
        raise ValueError(
            f"n_folds * horizon = {n_folds * horizon} test steps leave no training data: "
            f"the longest series has {n_steps} steps"
        )
    if n_folds == 1:
        return [n_steps - horizon]
    splitter = TimeSeriesSplit(n_splits=n_folds, test_size=horizon)
    return [int(test[0]) for _, test in splitter.split(np.arange(n_steps))]


def backtest(
    panel: Panel,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    *,
    n_folds: int,
    season_length: int,
    on_fold: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Long frame with one row per (fold, series, model) and columns `COLUMNS`.

    `fold` is 0-based; `cutoff` is the fold's first test position on the global axis. `coverage` is the
    share of test steps inside the outermost symmetric quantile interval (nan without one). A series takes
    part in a fold only if it has >= lookback + horizon steps before the cutoff. `on_fold(done, n_folds)`
    reports progress after each fold, done = folds finished so far (1..n_folds), so it also fires for
    folds without eligible series.
    """
    horizon, window = model_cfg.horizon, model_cfg.lookback + model_cfg.horizon
    plan = fold_plan(panel, horizon, window, n_folds)
    rows: list[dict[str, object]] = []
    for fold, (cutoff, ids) in enumerate(plan):
        rows += run_fold(panel, model_cfg, train_cfg, fold, cutoff, ids, season_length)
        if on_fold is not None:
            on_fold(fold + 1, n_folds)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def fold_plan(panel: Panel, horizon: int, window: int, n_folds: int) -> list[tuple[int, list[str]]]:
    """(cutoff, eligible series) of each fold: a series takes part if it has `window` steps before it."""
    n_steps, lengths = panel.n_steps, panel.lengths()
    cutoffs = fold_cutoffs(n_steps, horizon, n_folds)
    ids = panel.series_ids
    plan = [
        (c, [sid for sid, t in zip(ids, lengths, strict=True) if t - n_steps + c >= window]) for c in cutoffs
    ]
    if not any(ids for _, ids in plan):
        raise ValueError(
            f"no fold has an eligible series: a series needs lookback + horizon = {window} steps before "
            f"the fold's cutoff, but the earliest cutoff is {cutoffs[0]} and the latest is {cutoffs[-1]} "
            f"(longest series: {n_steps} steps, {n_folds} folds of horizon {horizon})"
        )
    return plan


def _score_rows(
    fold: int, cutoff: int, ids: list[str], forecasts: dict[str, np.ndarray], test: Panel, train: Panel,
    model_cfg: ModelConfig, season_length: int, stopped: str,
) -> list[dict[str, object]]:  # fmt: skip
    median, pairs = model_cfg.median_index, quantile_pairs(model_cfg.quantiles)
    outer = pairs[0] if pairs else None
    rows: list[dict[str, object]] = []
    for i, sid in enumerate(ids):
        y, insample = test.target[i], train.target[i]
        for model, quantiles in forecasts.items():
            q = quantiles[i]  # (horizon, Q)
            yhat = q[:, median]
            covered = coverage(y, q[:, outer[0]], q[:, outer[1]]) if outer else float("nan")
            rows.append(
                {
                    "fold": fold,
                    "cutoff": cutoff,
                    "series_id": sid,
                    "model": model,
                    "mae": mae(y, yhat),
                    "rmse": rmse(y, yhat),
                    "smape": smape(y, yhat),
                    "mase": mase(y, yhat, insample, season_length),
                    "coverage": covered,
                    "stopped": stopped,
                }
            )
    return rows


def run_fold(
    panel: Panel, model_cfg: ModelConfig, train_cfg: TrainConfig, fold: int, cutoff: int, ids: list[str],
    season_length: int,
) -> list[dict[str, object]]:  # fmt: skip
    """One fold: fit on the data before `cutoff`, score every model on the next `horizon` steps. Folds
    share nothing, so they can run anywhere (the flow may send them to a Dask cluster)."""
    if not ids:
        return []
    horizon, levels = model_cfg.horizon, model_cfg.quantiles
    train_panel = panel.truncate(cutoff).select(ids)
    test_panel = panel.slice_global(cutoff, cutoff + horizon).select(ids)
    result = fit(train_panel, model_cfg, train_cfg)
    future = list(test_panel.future_covariates) if panel.n_future > 0 else None
    forecasts = {"lstm": predict(result, train_panel, future)}
    for name in BASELINES:
        forecasts[name] = baseline_quantiles(
            name, train_panel, horizon, season_length, model_cfg.lookback, levels
        )
    return _score_rows(
        fold, cutoff, ids, forecasts, test_panel, train_panel, model_cfg, season_length, result.stopped_reason
    )


def holdout_mase(result: TrainResult, panel: Panel, season_length: int) -> float:
    """Mean MASE of `result` forecasting the last `horizon` steps of every series of `panel` from one
    origin. A model trained on `panel` never fitted those steps (they lie in its validation tail), so a
    champion and a challenger are compared on the same unseen targets."""
    horizon = result.model_config.horizon
    origin = panel.n_steps - horizon
    median = result.model_config.median_index
    preds = predict_origins(result, panel, np.array([origin]))[:, 0]  # (n_series, horizon, Q)
    scores = [
        mase(panel.target[i][-horizon:], preds[i, :, median], panel.target[i][:-horizon], season_length)
        for i in range(panel.n_series)
        if not np.isnan(preds[i, :, median]).any()
    ]
    finite = [s for s in scores if np.isfinite(s)]
    if not finite:
        raise ValueError(
            f"no series has lookback + horizon = {result.model_config.lookback + horizon} steps to score"
        )
    return float(np.mean(finite))


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean of each metric per model over series and folds (nan MASE values are skipped)."""
    missing = [c for c in ("model", *METRICS) if c not in df.columns]
    if missing:
        raise ValueError(f"backtest frame is missing column {missing[0]!r}")
    return df.groupby("model", sort=False)[list(METRICS)].mean()

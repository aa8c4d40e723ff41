"""Validate: the leakage guard on the future covariates, then a rolling-origin backtest of the LSTM against
the cheap baselines on the same folds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from prefect import task
from prefect.artifacts import create_table_artifact

from lstm_model.backtest import COLUMNS, METRICS, fold_plan, run_fold, summarize
from lstm_model.baselines import BASELINES
from lstm_model.features import EVENT_PREFIX, event_names
from lstm_model.leakage import leaking_covariates
from lstm_model.train import TIME_BUDGET
from tasks._log import artifact_key, stage_logger
from tasks.config import PipelineConfig
from tasks.errors import DataError
from tasks.files import write_parquet_atomic
from tasks.panel import load_panel


@dataclass(frozen=True)
class ValidateResult:
    path: str
    summary: dict[str, dict[str, float]]  # model -> metric -> mean over series and folds
    folds: int
    series: int
    seconds: float
    # folds whose LSTM fit was stopped by training.time_budget_s: their scores depend on the machine's load
    time_capped_folds: tuple[int, ...] = ()


@dataclass(frozen=True)
class Fold:
    index: int
    cutoff: int  # first test position on the panel's global axis
    series: tuple[str, ...]  # the series with lookback + horizon steps before the cutoff


def run_guard_covariates(cfg: PipelineConfig, history_path: str) -> tuple[str, ...]:
    """Refuse a future covariate or event that looks recorded from the target (lstm_model/leakage.py has the
    rules): the backtest would score the leak and the forecasts would be made with values nobody knows in
    advance. Returns the columns measured; those in source.checked_covariates are trusted and skipped."""
    source = cfg.source
    events = event_names(pq.read_schema(history_path).names) if source.events_table else ()
    columns = tuple(c for c in (*source.future_covariates, *events) if c not in source.checked_covariates)
    if source.checked_covariates:
        stage_logger().info(
            "leakage guard: %s not measured (source.checked_covariates)", ", ".join(source.checked_covariates)
        )
    if not columns:
        return ()
    history = pd.read_parquet(history_path, columns=["series_id", source.target, *columns])
    refused = leaking_covariates(history, "series_id", source.target, columns)
    if refused:
        raise DataError("; ".join(
            f"{label(e.column)} {e.column!r} looks recorded from the target {source.target!r}, "
            f"not planned in advance: {e.describe()}; remove it, or add it to source.checked_covariates "
            "if it is a plan fixed before each as-of"
            for e in refused
        ))  # fmt: skip
    stage_logger().info("leakage guard: %s look like plans, not records of the target", ", ".join(columns))
    return columns


def label(column: str) -> str:
    """Where a known-future column comes from, as the config names it."""
    return (
        "source.events_table event" if column.startswith(EVENT_PREFIX) else "source.future_covariates column"
    )


def run_plan_folds(cfg: PipelineConfig, history_path: str) -> list[Fold]:
    """The rolling-origin folds of the backtest; each runs on its own, anywhere."""
    panel = load_panel(cfg, history_path)
    horizon = cfg.forecast.horizon
    plan = fold_plan(panel, horizon, cfg.forecast.lookback + horizon, cfg.forecast.folds)
    return [Fold(i, cutoff, tuple(ids)) for i, (cutoff, ids) in enumerate(plan)]


def run_backtest_fold(cfg: PipelineConfig, history_path: str, fold: Fold) -> list[dict[str, object]]:
    """The LSTM and every baseline trained and scored on one fold."""
    panel = load_panel(cfg, history_path)
    stage_logger().info(
        "backtest fold %d: %d series, cutoff %d", fold.index + 1, len(fold.series), fold.cutoff
    )
    return run_fold(
        panel, cfg.model_config_for_lstm(), cfg.train_config(), fold.index, fold.cutoff, list(fold.series),
        cfg.data.season_length,
    )  # fmt: skip


def combine_folds(
    history_path: str, fold_rows: list[list[dict[str, object]]], seconds: float
) -> ValidateResult:
    """The folds' rows as backtest.parquet next to the history, and their mean per model."""
    folds = pd.DataFrame([row for rows in fold_rows for row in rows], columns=list(COLUMNS))
    path = Path(history_path).with_name("backtest.parquet")
    write_parquet_atomic(folds, path)
    table = summarize(folds)
    summary = {model: {m: float(row[m]) for m in METRICS} for model, row in table.iterrows()}
    capped = tuple(sorted(int(f) for f in folds.loc[folds["stopped"] == TIME_BUDGET, "fold"].unique()))
    if capped:
        stage_logger().warning(
            "backtest fold(s) %s stopped by time (training.time_budget_s), not reproducible: their scores "
            "depend on how busy the machine was", ", ".join(str(f + 1) for f in capped)
        )  # fmt: skip
    return ValidateResult(
        path=str(path),
        summary=summary,
        folds=int(folds["fold"].nunique()),
        series=int(folds["series_id"].nunique()),
        seconds=round(seconds, 3),
        time_capped_folds=capped,
    )


def metrics_table(summary: dict[str, dict[str, float]]) -> list[dict[str, object]]:
    return [{"model": model, **{m: round(v, 4) for m, v in row.items()}} for model, row in summary.items()]


class GateFailed(RuntimeError):
    """The LSTM lost its backtest to a baseline and the config says to fail rather than fall back."""


@dataclass(frozen=True)
class GateDecision:
    use_lstm: bool
    lstm_mase: float
    baseline_mase: float
    message: str
    fail: bool = False  # gate = "fail" and the LSTM lost: the run publishes nothing and ends Failed
    baseline: str = "seasonal_naive"  # the best baseline of the backtest: what a fallback publishes


def best_baseline(summary: dict[str, dict[str, float]]) -> tuple[str, float]:
    """(name, MASE) of the baseline with the lowest backtest MASE; ties go to the first in BASELINES, and a
    nan MASE never wins."""
    scores = [(name, summary[name]["mase"]) for name in BASELINES if name in summary]
    if not scores:
        raise ValueError(
            f"the backtest summary has no baseline; expected one of {list(BASELINES)}, got {sorted(summary)}"
        )
    finite = [(name, mase) for name, mase in scores if not math.isnan(mase)]
    return min(finite, key=lambda pair: pair[1]) if finite else scores[0]


def decide_gate(summary: dict[str, dict[str, float]], policy: str) -> GateDecision:
    """Keep the LSTM only if its backtest MASE is strictly below every baseline's (a nan MASE loses)."""
    name, baseline = best_baseline(summary)
    lstm = summary["lstm"]["mase"]
    wins = bool(lstm < baseline)
    verdict = "beats" if wins else "does not beat"
    message = f"LSTM backtest MASE {lstm:.4f} {verdict} the best baseline, {name} ({baseline:.4f})"
    if wins or policy == "off":
        note = "" if wins else "; gate is off, using the LSTM"
        return GateDecision(True, lstm, baseline, message + note, baseline=name)
    if policy == "fail":
        return GateDecision(
            False, lstm, baseline, f"{message}; forecast.gate = 'fail', so nothing is published", True, name
        )
    return GateDecision(False, lstm, baseline, f"{message}; publishing the {name} forecast", baseline=name)


def run_gate(cfg: PipelineConfig, summary: dict[str, dict[str, float]]) -> GateDecision:
    decision = decide_gate(summary, cfg.forecast.gate)
    log = stage_logger()
    (log.info if decision.use_lstm else log.error if decision.fail else log.warning)(decision.message)
    return decision


@task
def gate(cfg: PipelineConfig, summary: dict[str, dict[str, float]]) -> GateDecision:
    """Decide from the backtest whether the LSTM or the best baseline forecasts."""
    return run_gate(cfg, summary)


@task
def guard_covariates(cfg: PipelineConfig, history_path: str) -> tuple[str, ...]:
    """Refuse future covariates that leak the target before anything is fitted on them."""
    return run_guard_covariates(cfg, history_path)


@task
def plan_folds(cfg: PipelineConfig, history_path: str) -> list[Fold]:
    """Plan the rolling-origin folds of the backtest."""
    return run_plan_folds(cfg, history_path)


@task
def backtest_fold(cfg: PipelineConfig, history_path: str, fold: Fold) -> list[dict[str, object]]:
    """Backtest the LSTM and the baselines on one fold."""
    return run_backtest_fold(cfg, history_path, fold)


def publish_backtest_artifact(cfg: PipelineConfig, result: ValidateResult) -> None:
    create_table_artifact(
        metrics_table(result.summary),
        key=artifact_key(cfg.name, "backtest"),
        description=f"Backtest over {result.folds} rolling-origin folds, mean over series and folds",
    )


def run_summarize_backtest(
    cfg: PipelineConfig, history_path: str, fold_rows: list[list[dict[str, object]]], seconds: float
) -> ValidateResult:
    result = combine_folds(history_path, fold_rows, seconds)
    publish_backtest_artifact(cfg, result)
    return result


@task
def summarize_backtest(
    cfg: PipelineConfig, history_path: str, fold_rows: list[list[dict[str, object]]], seconds: float
) -> ValidateResult:
    """Keep the folds' scores and their mean per model, and show them in the UI."""
    return run_summarize_backtest(cfg, history_path, fold_rows, seconds)

"""Validate: rolling-origin backtest of the LSTM against naive baselines on the same folds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_table_artifact

from lstm_model.backtest import METRICS, backtest, summarize
from lstm_model.features import calendar_features, calendar_names
from lstm_model.panel import Panel
from tasks._log import stage_logger
from tasks.clean import write_parquet_atomic
from tasks.config import PipelineConfig


@dataclass(frozen=True)
class ValidateResult:
    path: str
    summary: dict[str, dict[str, float]]  # model -> metric -> mean over series and folds
    folds: int
    series: int
    seconds: float


def future_names(cfg: PipelineConfig) -> tuple[str, ...]:
    """Known-in-advance inputs of the model: the source's future covariates, then calendar features."""
    calendar = calendar_names(cfg.data.freq) if cfg.data.calendar else ()
    return (*cfg.source.future_covariates, *calendar)


def with_calendar(cfg: PipelineConfig, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (with a `ts` column) plus the calendar feature columns the config asks for."""
    if not cfg.data.calendar:
        return frame
    frame = frame.reset_index(drop=True)
    return pd.concat([frame, calendar_features(frame["ts"], cfg.data.freq)], axis=1)


def load_panel(cfg: PipelineConfig, history_path: str) -> Panel:
    frame = with_calendar(cfg, pd.read_parquet(history_path))
    return Panel.from_frame(
        frame, series_col="series_id", time_col="ts", target_col=cfg.source.target,
        past=cfg.source.covariates, future=future_names(cfg),
    )  # fmt: skip


def run_backtest(cfg: PipelineConfig, history_path: str) -> ValidateResult:
    started = time.perf_counter()
    log = stage_logger()
    panel = load_panel(cfg, history_path)
    folds = backtest(
        panel, cfg.model_config_for_lstm(), cfg.train_config(),
        n_folds=cfg.forecast.folds, season_length=cfg.data.season_length,
        on_fold=lambda i, n: log.info("backtest fold %d/%d", i, n),
    )  # fmt: skip
    path = Path(history_path).with_name("backtest.parquet")
    write_parquet_atomic(folds, path)
    table = summarize(folds)
    summary = {model: {m: float(row[m]) for m in METRICS} for model, row in table.iterrows()}
    return ValidateResult(
        path=str(path),
        summary=summary,
        folds=int(folds["fold"].nunique()),
        series=int(folds["series_id"].nunique()),
        seconds=round(time.perf_counter() - started, 3),
    )


def metrics_table(summary: dict[str, dict[str, float]]) -> list[dict[str, object]]:
    return [{"model": model, **{m: round(v, 4) for m, v in row.items()}} for model, row in summary.items()]


class GateFailed(RuntimeError):
    """The LSTM lost its backtest to seasonal naive and the config says to fail rather than fall back."""


@dataclass(frozen=True)
class GateDecision:
    use_lstm: bool
    lstm_mase: float
    baseline_mase: float
    message: str


def decide_gate(summary: dict[str, dict[str, float]], policy: str) -> GateDecision:
    """Keep the LSTM only if its backtest MASE is strictly below seasonal naive's (a nan MASE loses)."""
    lstm, baseline = summary["lstm"]["mase"], summary["seasonal_naive"]["mase"]
    wins = bool(lstm < baseline)
    verdict = "beats" if wins else "does not beat"
    message = f"LSTM backtest MASE {lstm:.4f} {verdict} seasonal naive's {baseline:.4f}"
    if wins or policy == "off":
        return GateDecision(True, lstm, baseline, message + ("" if wins else "; gate is off, using the LSTM"))
    if policy == "fail":
        raise GateFailed(f"{message}; forecast.gate = 'fail', so nothing is published")
    return GateDecision(False, lstm, baseline, message + "; publishing the seasonal-naive forecast")


@task
def gate(cfg: PipelineConfig, summary: dict[str, dict[str, float]]) -> GateDecision:
    decision = decide_gate(summary, cfg.forecast.gate)
    (stage_logger().info if decision.use_lstm else stage_logger().warning)(decision.message)
    return decision


@task
def validate(cfg: PipelineConfig, history_path: str) -> ValidateResult:
    result = run_backtest(cfg, history_path)
    create_table_artifact(
        metrics_table(result.summary),
        key=f"{cfg.name}-backtest".lower().replace("_", "-").replace(".", "-"),
        description=f"Backtest over {result.folds} rolling-origin folds, mean over series and folds",
    )
    return result

"""The nightly forecast flow: extract -> clean -> validate -> train -> forecast -> publish."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from tasks.clean import clean
from tasks.config import load_config
from tasks.extract import extract, resolve_as_of
from tasks.forecast import SEASONAL_NAIVE, forecast
from tasks.publish import build_run_record, publish
from tasks.train import train
from tasks.validate import gate, validate


@flow(name="nightly-forecast", log_prints=True)
def nightly_forecast(config_path: str, as_of: str | None = None) -> dict[str, Any]:
    """Forecast every series `horizon` steps past `as_of` (default: the source's last timestamp)."""
    started_at = datetime.now(UTC).isoformat()
    cfg = load_config(config_path)
    as_of_iso = resolve_as_of(cfg, as_of)
    extracted = extract(cfg, as_of_iso)
    cleaned = clean(cfg, extracted.path, as_of_iso)
    backtest = validate(cfg, cleaned.history_path)
    decision = gate(cfg, backtest.summary)
    stages: dict[str, Any] = {"extract": extracted, "clean": cleaned, "validate": backtest}
    checkpoint, model_version, best_val_loss = None, SEASONAL_NAIVE, None
    if decision.use_lstm:
        trained = stages["train"] = train(cfg, cleaned.history_path)
        checkpoint, model_version = trained.checkpoint_path, trained.model_version
        best_val_loss = trained.best_val_loss
    forecasts = stages["forecast"] = forecast(cfg, checkpoint, cleaned.history_path, cleaned.future_path)
    run = build_run_record(
        cfg,
        run_id=str(flow_run.id),
        as_of=as_of_iso,
        started_at=started_at,
        model_version=model_version,
        metrics={
            "backtest": backtest.summary,
            "folds": backtest.folds,
            "gate": decision.message,
            "interval": forecasts.interval,
            "best_val_loss": best_val_loss,
        },
        timings=run_timings(stages),
        counts={name: dataclasses.asdict(result) for name, result in stages.items()},
    )
    published = publish(cfg, forecasts.path, run, cleaned.quality_path)
    return {
        "pipeline": cfg.name,
        "run_id": run.run_id,
        "as_of": as_of_iso,
        "model_version": model_version,
        "gate": decision.message,
        "interval": forecasts.interval,
        "backtest": backtest.summary,
        "series_forecast": forecasts.series,
        "series_skipped": cleaned.series_skipped,
        "rows_published": published.rows,
        "rows_replaced": published.replaced,
        "output_table": cfg.output.table,
        "quality_rows": published.quality_rows,
        "timings": {**run_timings(stages), "publish": published.seconds},
    }


def run_timings(stages: dict[str, Any]) -> dict[str, float]:
    return {name: result.seconds for name, result in stages.items()}

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
from tasks.forecast import forecast
from tasks.publish import build_run_record, publish
from tasks.train import train
from tasks.validate import validate


@flow(name="nightly-forecast", log_prints=True)
def nightly_forecast(config_path: str, as_of: str | None = None) -> dict[str, Any]:
    """Forecast every series `horizon` steps past `as_of` (default: the source's last timestamp)."""
    started_at = datetime.now(UTC).isoformat()
    cfg = load_config(config_path)
    as_of_iso = resolve_as_of(cfg, as_of)
    extracted = extract(cfg, as_of_iso)
    cleaned = clean(cfg, extracted.path, as_of_iso)
    backtest = validate(cfg, cleaned.history_path)
    trained = train(cfg, cleaned.history_path)
    forecasts = forecast(cfg, trained.checkpoint_path, cleaned.history_path, cleaned.future_path)
    stages = {
        "extract": extracted,
        "clean": cleaned,
        "validate": backtest,
        "train": trained,
        "forecast": forecasts,
    }
    run = build_run_record(
        cfg,
        run_id=str(flow_run.id),
        as_of=as_of_iso,
        started_at=started_at,
        model_version=trained.model_version,
        metrics={
            "backtest": backtest.summary,
            "folds": backtest.folds,
            "best_val_loss": trained.best_val_loss,
        },
        timings=run_timings(stages),
        counts={name: dataclasses.asdict(result) for name, result in stages.items()},
    )
    published = publish(cfg, forecasts.path, run)
    return {
        "pipeline": cfg.name,
        "run_id": run.run_id,
        "as_of": as_of_iso,
        "model_version": trained.model_version,
        "backtest": backtest.summary,
        "series_forecast": forecasts.series,
        "series_skipped": cleaned.series_skipped,
        "rows_published": published.rows,
        "rows_replaced": published.replaced,
        "output_table": cfg.output.table,
        "timings": {**run_timings(stages), "publish": published.seconds},
    }


def run_timings(stages: dict[str, Any]) -> dict[str, float]:
    return {name: result.seconds for name, result in stages.items()}

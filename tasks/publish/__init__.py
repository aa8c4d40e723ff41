"""Publish: forecasts, the data-quality report and the run's record, written in one transaction.

On PostgreSQL a forecast table that lstmcast creates is partitioned by (pipeline, as_of): each publish
copies its forecasts into a new table, keys it with one sorted index build and attaches it in place of
the partition a previous publish of the as-of left (`partitioned.py`). A plain table (SQLite, other
databases, an unpartitioned PostgreSQL table) takes a first publish of an as-of by COPY straight into it
on PostgreSQL; otherwise the rows of (pipeline, as_of) are made equal to a staged set (`plain.py`). Rows
travel by binary COPY where the driver has it, executemany elsewhere (`copy.py`). `transaction.py` orders
the steps. Readers see either the previous forecasts of an as-of or the new ones, never a mix, and a
re-run of a date replaces its rows instead of duplicating them.
"""

from __future__ import annotations

import pandas as pd
from prefect import task

from tasks.config import PipelineConfig
from tasks.publish.transaction import PublishResult, write_forecasts
from tasks.retry import DB_RETRIES
from tasks.summary import RunRecord

__all__ = ["PublishResult", "publish", "run_publish", "write_forecasts"]


def run_publish(
    cfg: PipelineConfig, forecast_path: str, run: RunRecord, quality_path: str | None = None
) -> PublishResult:
    forecasts = pd.read_parquet(forecast_path)
    quality = pd.read_parquet(quality_path) if quality_path is not None else None
    return write_forecasts(
        cfg.output.url, cfg.output.table, cfg.output.runs_table, forecasts, run,
        quality=quality, quality_name=cfg.output.quality_table, partitioned=cfg.output.partitioned,
    )  # fmt: skip


@task(**DB_RETRIES)
def publish(
    cfg: PipelineConfig, forecast_path: str, run: RunRecord, quality_path: str | None = None
) -> PublishResult:
    """Write the run's forecasts, quality report and run record to the output database."""
    return run_publish(cfg, forecast_path, run, quality_path)

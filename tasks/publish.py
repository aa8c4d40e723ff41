"""Publish: forecasts and the run's metadata, written in one transaction.

Readers see either the previous forecasts of an as-of or the new ones, never a mix: the delete of the
earlier rows for (pipeline, as_of), the insert of the new rows and the run record commit together.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from prefect import task
from prefect.tasks import exponential_backoff

from tasks.config import PipelineConfig
from tasks.db import create_engine, retry_if_transient, split_table
from tasks.extract import parse_as_of

INSERT_BATCH = 10_000


@dataclass(frozen=True)
class RunRecord:
    """What the runs table keeps about one run; built by the flow from the stages' results."""

    run_id: str
    pipeline: str
    as_of: str
    started_at: str
    model_version: str
    config_json: str
    metrics_json: str
    timings_json: str
    counts_json: str


@dataclass(frozen=True)
class PublishResult:
    table: str
    rows: int
    replaced: int
    seconds: float


def forecast_table(name: str, metadata: sa.MetaData) -> sa.Table:
    schema, table = split_table(name)
    return sa.Table(
        table, metadata,
        sa.Column("pipeline", sa.Text, primary_key=True),
        sa.Column("series_id", sa.Text, primary_key=True),
        sa.Column("as_of", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("ts", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("yhat", sa.Float(precision=53), nullable=False),
        sa.Column("yhat_lower", sa.Float(precision=53), nullable=True),
        sa.Column("yhat_upper", sa.Float(precision=53), nullable=True),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        schema=schema,
    )  # fmt: skip


def runs_table(name: str, metadata: sa.MetaData) -> sa.Table:
    schema, table = split_table(name)
    return sa.Table(
        table, metadata,
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("pipeline", sa.Text, nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("timings", sa.Text, nullable=False),
        sa.Column("counts", sa.Text, nullable=False),
        schema=schema,
    )  # fmt: skip


def _check_existing(conn: sa.Connection, table: sa.Table) -> None:
    """An existing table must have the columns lstmcast writes; say which are missing before writing."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(table.name, schema=table.schema):
        return
    present = {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}
    missing = [c.name for c in table.columns if c.name not in present]
    if missing:
        raise LookupError(f"output table {table.fullname!r} exists but lacks columns {missing}")


def utc(ts: pd.Timestamp | str) -> datetime:
    return parse_as_of(ts).to_pydatetime()


def write_forecasts(
    url: str, table_name: str, runs_name: str, forecasts: pd.DataFrame, run: RunRecord
) -> PublishResult:
    started = time.perf_counter()
    metadata = sa.MetaData()
    fc_table, run_table = forecast_table(table_name, metadata), runs_table(runs_name, metadata)
    as_of = utc(run.as_of)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [
        {
            "pipeline": run.pipeline,
            "series_id": sid,
            "as_of": as_of,
            "ts": ts.to_pydatetime(),
            "yhat": float(y),
            "yhat_lower": None if np.isnan(lo) else float(lo),
            "yhat_upper": None if np.isnan(hi) else float(hi),
            "model_version": run.model_version,
            "run_id": run.run_id,
            "created_at": now,
        }  # fmt: skip
        for sid, ts, y, lo, hi in zip(
            forecasts["series_id"],
            forecasts["ts"],
            forecasts["yhat"],
            forecasts["yhat_lower"],
            forecasts["yhat_upper"],
            strict=True,
        )  # fmt: skip
    ]
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for table in (fc_table, run_table):
                _check_existing(conn, table)
            metadata.create_all(conn, checkfirst=True)
            replaced = conn.execute(
                sa.delete(fc_table).where(fc_table.c.pipeline == run.pipeline, fc_table.c.as_of == as_of)
            ).rowcount
            for start in range(0, len(rows), INSERT_BATCH):
                conn.execute(sa.insert(fc_table), rows[start : start + INSERT_BATCH])
            conn.execute(sa.delete(run_table).where(run_table.c.run_id == run.run_id))
            conn.execute(
                sa.insert(run_table),
                {
                    "run_id": run.run_id,
                    "pipeline": run.pipeline,
                    "as_of": as_of,
                    "started_at": utc(run.started_at),
                    "finished_at": now,
                    "model_version": run.model_version,
                    "config": run.config_json,
                    "metrics": run.metrics_json,
                    "timings": run.timings_json,
                    "counts": run.counts_json,
                },  # fmt: skip
            )
    finally:
        engine.dispose()
    return PublishResult(
        table=table_name,
        rows=len(rows),
        replaced=int(replaced),
        seconds=round(time.perf_counter() - started, 3),
    )


def build_run_record(
    cfg: PipelineConfig, run_id: str, as_of: str, started_at: str, model_version: str,
    metrics: dict[str, Any], timings: dict[str, float], counts: dict[str, Any],
) -> RunRecord:  # fmt: skip
    return RunRecord(
        run_id=run_id,
        pipeline=cfg.name,
        as_of=as_of,
        started_at=started_at,
        model_version=model_version,
        config_json=json.dumps(cfg.redacted(), sort_keys=True),
        metrics_json=json.dumps(metrics, sort_keys=True),
        timings_json=json.dumps(timings, sort_keys=True),
        counts_json=json.dumps(counts, sort_keys=True),
    )


def publish_forecasts(cfg: PipelineConfig, forecast_path: str, run: RunRecord) -> PublishResult:
    forecasts = pd.read_parquet(forecast_path)
    if forecasts["yhat"].isna().any():
        raise ValueError(f"{forecast_path} holds NaN forecasts; nothing was published")
    return write_forecasts(cfg.output.url, cfg.output.table, cfg.output.runs_table, forecasts, run)


@task(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=retry_if_transient,
)
def publish(cfg: PipelineConfig, forecast_path: str, run: RunRecord) -> PublishResult:
    return publish_forecasts(cfg, forecast_path, run)

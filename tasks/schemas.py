"""The tables lstmcast writes, defined once: forecasts, runs, data quality, accuracy and the model registry.

Publish, score, registry and the CLI build their SQLAlchemy tables from here, so a column is named and
typed in one place whatever stage writes or reads it.
"""

from __future__ import annotations

import re

import pandas as pd
import sqlalchemy as sa

from tasks.db import split_table

FORECAST_KEY = ["as_of", "pipeline", "series_id", "ts"]
QUALITY_KEY = ["pipeline", "as_of", "series_id"]
QUALITY_TEXT = ["status", "reason"]
ACCURACY_KEY = ("pipeline", "as_of", "model_version")
PARTITION_KEY = "RANGE (pipeline, as_of)"  # as pg_get_partkeydef prints it
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def forecast_table(
    name: str, metadata: sa.MetaData, keyed: bool = True, partitioned: bool = False
) -> sa.Table:
    """`keyed=False`: the same columns without the primary key, for a table whose key is built after its
    first load. `partitioned`: PostgreSQL's partitioned table with one partition per (pipeline, as_of)."""
    schema, table = split_table(name)
    return sa.Table(
        table, metadata,
        sa.Column("pipeline", sa.Text, nullable=False),
        sa.Column("series_id", sa.Text, nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("yhat", sa.Float(precision=53), nullable=False),
        sa.Column("yhat_lower", sa.Float(precision=53), nullable=True),
        sa.Column("yhat_upper", sa.Float(precision=53), nullable=True),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # as_of first: a new as-of appends at the right edge of the key's index whichever pipeline writes
        # it, where (pipeline, as_of, ...) would split pages inside the index for every pipeline but the
        # last (docs/BENCHMARKS.md); the same index serves the replace of one (pipeline, as_of)
        *([sa.PrimaryKeyConstraint(*FORECAST_KEY)] if keyed else []),
        schema=schema,
        **({"postgresql_partition_by": PARTITION_KEY} if partitioned else {}),
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


def count_columns(quality: pd.DataFrame) -> list[str]:
    """The repair counts are every integer column of clean's quality frame: new counts need no change here."""
    if "series_id" not in quality.columns:
        raise ValueError(f"the quality frame has no series_id column (columns: {list(quality.columns)})")
    types = pd.api.types
    counts = [
        str(c) for c in quality.columns
        if c != "series_id" and types.is_integer_dtype(quality[c]) and not types.is_bool_dtype(quality[c])
    ]  # fmt: skip
    for name in counts:
        if not _IDENTIFIER.match(name) or name in {"pipeline", "as_of", "run_id", *QUALITY_TEXT}:
            raise ValueError(f"quality column {name!r} cannot be a column of the quality table")
    return counts


def quality_table(name: str, metadata: sa.MetaData, counts: list[str]) -> sa.Table:
    schema, table = split_table(name)
    return sa.Table(
        table, metadata,
        sa.Column("pipeline", sa.Text, primary_key=True),
        sa.Column("as_of", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("series_id", sa.Text, primary_key=True),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        *(sa.Column(c, sa.BigInteger, nullable=True) for c in counts),
        schema=schema,
    )  # fmt: skip


def accuracy_table(name: str, metadata: sa.MetaData) -> sa.Table:
    schema, table = split_table(name)
    return sa.Table(
        table, metadata,
        sa.Column("pipeline", sa.Text, nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("n_series", sa.BigInteger, nullable=False),
        sa.Column("n_points", sa.BigInteger, nullable=False),
        sa.Column("mae", sa.Float(precision=53), nullable=False),
        sa.Column("rmse", sa.Float(precision=53), nullable=False),
        sa.Column("smape", sa.Float(precision=53), nullable=False),
        sa.Column("mase", sa.Float(precision=53), nullable=True),  # undefined for flat in-sample history
        sa.Column("coverage", sa.Float(precision=53), nullable=True),  # NULL: no forecast had an interval
        sa.Column("first_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(*ACCURACY_KEY),
        schema=schema,
    )  # fmt: skip


def models_table(name: str, metadata: sa.MetaData) -> sa.Table:
    schema, table = split_table(name)
    return sa.Table(
        table, metadata,
        sa.Column("pipeline", sa.Text, primary_key=True),
        sa.Column("version", sa.Text, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("parent_version", sa.Text, nullable=True),
        sa.Column("config_hash", sa.Text, nullable=False),
        sa.Column("checkpoint_path", sa.Text, nullable=False),
        sa.Column("device", sa.Text, nullable=False),
        sa.Column("epochs", sa.Integer, nullable=False),
        # why training ended; "time_budget": stopped by training.time_budget_s, not reproducible
        sa.Column("stopped_reason", sa.Text, nullable=True),
        sa.Column("best_val_loss", sa.Float(precision=53), nullable=True),
        sa.Column("backtest", sa.Text, nullable=False),  # the run's backtest summary, JSON
        sa.Column("holdout_mase", sa.Float(precision=53), nullable=True),
        sa.Column("champion_holdout_mase", sa.Float(precision=53), nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_id", sa.Text, nullable=False),
        schema=schema,
    )  # fmt: skip

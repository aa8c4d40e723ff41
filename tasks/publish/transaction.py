"""One publish, one transaction: lock the as-of, make or check the tables, write the forecasts in the
table's layout, replace the quality rows, write the run record; a new partition is swapped in last."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from tasks.db import add_columns, advisory_xact_lock, create_engine, missing_columns
from tasks.parsing import utc
from tasks.publish.context import PublishContext
from tasks.publish.partitioned import Partition, is_partitioned, load_partition, swap_partition
from tasks.publish.plain import write_plain
from tasks.schemas import QUALITY_TEXT, count_columns, forecast_table, quality_table, runs_table
from tasks.sections import PIPELINE_NAME
from tasks.summary import RunRecord


@dataclass(frozen=True)
class PublishResult:
    table: str
    rows: int
    replaced: int  # rows the as-of had before
    seconds: float
    quality_rows: int = 0
    written: int = 0  # rows written: all of them into a partition; a plain table keeps unchanged ones


@dataclass(frozen=True)
class Tables:
    """The tables one publish writes; `quality` None when there is no quality report to write."""

    forecasts: sa.Table
    runs: sa.Table
    quality: sa.Table | None
    counts: list[str]  # the quality report's repair-count columns

    @classmethod
    def named(cls, forecasts: str, runs: str, quality: str, report: pd.DataFrame | None) -> Tables:
        metadata = sa.MetaData()
        counts = count_columns(report) if report is not None else []
        return cls(
            forecast_table(forecasts, metadata), runs_table(runs, metadata),
            quality_table(quality, metadata, counts) if report is not None else None, counts,
        )  # fmt: skip


@dataclass(frozen=True)
class Written:
    replaced: int  # rows the as-of held before
    written: int
    partition: Partition | None  # a loaded partition still to be swapped in, last in the transaction


def check_forecasts(forecasts: pd.DataFrame) -> None:
    """Refuse frames the upsert would silently mangle: NaN medians and repeated keys."""
    nan = forecasts["yhat"].isna()
    if nan.any():
        raise ValueError(
            f"{int(nan.sum())} forecasts have NaN yhat (first: series "
            f"{forecasts['series_id'][nan].iloc[0]!r}); nothing was published"
        )
    dup = forecasts.duplicated(["series_id", "ts"])
    if dup.any():
        first = forecasts[dup].iloc[0]
        raise ValueError(
            f"{int(dup.sum())} forecasts repeat a (series_id, ts) key (first: {first['series_id']!r} at "
            f"{first['ts']}); nothing was published"
        )


def check_existing(conn: sa.Connection, table: sa.Table, addable: frozenset[str] = frozenset()) -> list[str]:
    """An existing table must have the columns lstmcast writes; say which are missing before writing.
    Columns in `addable` (new repair counts) are returned to be added instead."""
    missing = missing_columns(conn, table)
    fatal = [c for c in missing if c not in addable]
    if fatal:
        raise LookupError(f"output table {table.fullname!r} exists but lacks columns {fatal}")
    return missing


def prepare_tables(conn: sa.Connection, tables: Tables, ctx: PublishContext, partitioned: bool) -> bool:
    """Lock the as-of, check existing tables and create missing ones; True when the forecast table was
    created here on PostgreSQL (partitioned if asked, else keyed after its first load)."""
    fc = tables.forecasts
    # first: a concurrent publish of the as-of waits here, before it looks for or creates tables.
    # Two publishes of one (pipeline, as_of) (a retry overlapping a manual re-run) take turns: the later
    # one sees the earlier one's rows, so the final set is one run's.
    advisory_xact_lock(conn, fc.fullname, ctx.pipeline, ctx.as_of.isoformat())
    inspector = sa.inspect(conn)
    if not all(inspector.has_table(t.name, schema=t.schema) for t in fc.metadata.sorted_tables):
        # publishes of other as-ofs that would create the tables take turns: the later one finds them
        advisory_xact_lock(conn, fc.fullname, "create")
    for table in (fc, tables.runs):
        check_existing(conn, table)
    new_counts = []
    if tables.quality is not None:
        new_counts = check_existing(conn, tables.quality, frozenset(tables.counts))
    created = conn.dialect.name == "postgresql" and not sa.inspect(conn).has_table(fc.name, schema=fc.schema)
    if created:
        forecast_table(fc.fullname, sa.MetaData(), keyed=partitioned, partitioned=partitioned).create(conn)
    fc.metadata.create_all(conn, checkfirst=True)
    if tables.quality is not None:
        # a repair count that clean started counting becomes a new nullable column: NULL in older rows
        # means "not counted then"
        add_columns(conn, tables.quality, new_counts)
    return created


def write_forecast_rows(
    conn: sa.Connection, table: sa.Table, forecasts: pd.DataFrame, ctx: PublishContext, created: bool
) -> Written:
    """The forecasts in the table's layout: a new partition (attached later), or rows of a plain table."""
    if is_partitioned(conn, table):
        part = load_partition(conn, table, forecasts, ctx)
        return Written(part.replaced, len(forecasts), part)
    replaced, written = write_plain(conn, table, forecasts, ctx, key_after_load=created)
    return Written(replaced, written, None)


def quality_rows(quality: pd.DataFrame, counts: list[str], ctx: PublishContext) -> list[dict[str, Any]]:
    text = [c for c in QUALITY_TEXT if c in quality.columns]
    frame = quality[["series_id", *text, *counts]]
    rows = []
    for record in frame.astype(object).where(frame.notna(), None).to_dict("records"):
        record = {k: (int(v) if k in counts and v is not None else v) for k, v in record.items()}
        rows.append({"pipeline": ctx.pipeline, "as_of": ctx.as_of, "run_id": ctx.run_id, **record})
    return rows


def replace_quality(conn: sa.Connection, tables: Tables, quality: pd.DataFrame, ctx: PublishContext) -> int:
    """The quality rows of (pipeline, as_of) replaced by this run's; returns how many were written."""
    table = tables.quality
    conn.execute(sa.delete(table).where(table.c.pipeline == ctx.pipeline, table.c.as_of == ctx.as_of))
    rows = quality_rows(quality, tables.counts, ctx)
    if rows:
        conn.execute(sa.insert(table), rows)
    return len(rows)


def quality_totals(quality: pd.DataFrame, counts: list[str]) -> dict[str, int]:
    """What the run record keeps of the report: series per status and the total of every repair count."""
    totals = {"series": len(quality)}
    if "status" in quality.columns:
        totals |= {str(k): int(v) for k, v in quality["status"].value_counts().sort_index().items()}
    return totals | {c: int(quality[c].sum()) for c in counts}


def write_run(conn: sa.Connection, table: sa.Table, run: RunRecord, ctx: PublishContext, counts: str) -> None:
    """The run's row, replacing the one an earlier attempt of the same run wrote."""
    conn.execute(sa.delete(table).where(table.c.run_id == run.run_id))
    conn.execute(
        sa.insert(table),
        {
            "run_id": run.run_id, "pipeline": run.pipeline, "as_of": ctx.as_of,
            "started_at": utc(run.started_at), "finished_at": ctx.now, "model_version": run.model_version,
            "config": run.config_json, "metrics": run.metrics_json, "timings": run.timings_json,
            "counts": counts,
        },
    )  # fmt: skip


def write_forecasts(
    url: str,
    table_name: str,
    runs_name: str,
    forecasts: pd.DataFrame,
    run: RunRecord,
    quality: pd.DataFrame | None = None,
    quality_name: str = "lstmcast_quality",
    partitioned: bool = True,
) -> PublishResult:
    """`partitioned`: a forecast table this publish creates on PostgreSQL gets a partition per (pipeline,
    as_of); an existing table keeps the layout it has."""
    started = time.perf_counter()
    if not PIPELINE_NAME.match(run.pipeline):
        raise ValueError(f"pipeline name {run.pipeline!r} must use letters, digits, '_', '-' or '.'")
    check_forecasts(forecasts)
    tables = Tables.named(table_name, runs_name, quality_name, quality)
    ctx = PublishContext(run.pipeline, run.run_id, run.model_version, utc(run.as_of), datetime.now(UTC))
    run_counts = json.loads(run.counts_json)
    if quality is not None:
        run_counts["quality"] = quality_totals(quality, tables.counts)
    written_quality = 0
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            created = prepare_tables(conn, tables, ctx, partitioned)
            written = write_forecast_rows(conn, tables.forecasts, forecasts, ctx, created)
            if quality is not None:
                written_quality = replace_quality(conn, tables, quality, ctx)
            write_run(conn, tables.runs, run, ctx, json.dumps(run_counts, sort_keys=True))
            if written.partition is not None:
                swap_partition(conn, tables.forecasts, written.partition)
    finally:
        engine.dispose()
    return PublishResult(
        table=table_name,
        rows=len(forecasts),
        replaced=int(written.replaced),
        seconds=round(time.perf_counter() - started, 3),
        quality_rows=written_quality,
        written=int(written.written),
    )

"""Extract: stream the source table or query into Parquet, only rows known at `as_of`.

Rows are read in chunks and written chunk by chunk, so memory is bounded by the chunk size. Target and
past-covariate values after `as_of` never leave the database stage: the only rows kept beyond `as_of` are
the known-in-advance covariates for the forecast horizon, with everything else nulled.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from prefect import task
from prefect.tasks import exponential_backoff

from tasks.config import PipelineConfig, SourceConfig
from tasks.db import create_engine, reflect_table, retry_if_transient

CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class ExtractResult:
    path: str
    as_of: str
    rows: int
    future_rows: int
    series: int
    dropped_without_key: int
    non_numeric: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def run_dir(cfg: PipelineConfig, as_of: pd.Timestamp) -> Path:
    """Where one as-of's intermediate files live: one folder per pipeline and as-of date."""
    return Path(cfg.data.data_dir) / cfg.name / f"as_of={as_of.strftime('%Y%m%dT%H%M%S')}"


def parse_as_of(value: str | pd.Timestamp) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except ValueError:
        raise ValueError(
            f"as_of {value!r} is not a timestamp (expected e.g. 2018-06-26 or 2018-06-26T19:00)"
        ) from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _source_selectable(engine: sa.Engine, src: SourceConfig) -> sa.FromClause:
    """The source as a FROM clause whose configured columns are checked to exist."""
    wanted = [name for _, name in src.column_roles()]
    if src.table is not None:
        table = reflect_table(engine, src.table)
        for role, name in src.column_roles():
            if name not in table.c:
                raise LookupError(
                    f"table {src.table!r} has no column {name!r} (configured as source.{role}); "
                    f"its columns are {sorted(table.c.keys())}"
                )
        return table
    with engine.connect() as conn:
        probe = conn.execute(
            sa.select(sa.text("*")).select_from(sa.text(f"({src.query}) AS lstmcast_probe")).limit(0)
        )
        present = list(probe.keys())
    for role, name in src.column_roles():
        if name not in present:
            raise LookupError(
                f"the source query returns no column {name!r} (configured as source.{role}); "
                f"it returns {present}"
            )
    return sa.text(src.query).columns(*(sa.column(n) for n in wanted)).subquery("lstmcast_source")


def _parse_timestamps(values: pd.Series, src: SourceConfig) -> pd.Series:
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna() & values.notna()
    if bad.any():
        raise ValueError(
            f"{src.label}: column {src.timestamp!r} has a value that is not a timestamp: "
            f"{values[bad].iloc[0]!r}"
        )
    return parsed


def last_timestamp(url: str, src: SourceConfig) -> pd.Timestamp:
    """The latest timestamp that has a target value: the default as-of of a nightly run."""
    engine = create_engine(url)
    try:
        source = _source_selectable(engine, src)
        stmt = sa.select(sa.func.max(source.c[src.timestamp])).where(source.c[src.target].is_not(None))
        with engine.connect() as conn:
            value = conn.execute(stmt).scalar()
    finally:
        engine.dispose()
    if value is None:
        raise ValueError(f"{src.label} has no rows with a value in column {src.target!r}")
    return _parse_timestamps(pd.Series([value]), src).iloc[0]


def _schema(src: SourceConfig) -> pa.Schema:
    numeric = [src.target, *src.covariates, *src.future_covariates]
    return pa.schema(
        [pa.field("series_id", pa.string()), pa.field("ts", pa.timestamp("us", tz="UTC"))]
        + [pa.field(c, pa.float64()) for c in numeric]
    )


def extract_to_parquet(
    cfg: PipelineConfig, as_of: pd.Timestamp, *, chunk_rows: int = CHUNK_ROWS
) -> ExtractResult:
    """Copy the source rows known at `as_of` (plus future covariates for the horizon) to one Parquet file."""
    started = time.perf_counter()
    src = cfg.source
    future_end = as_of + cfg.forecast.horizon * pd.tseries.frequencies.to_offset(cfg.data.freq)
    upper = future_end if src.future_covariates else as_of
    engine = create_engine(src.url)
    out_dir = run_dir(cfg, as_of)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / "extract.parquet"
    tmp = out_dir / f".extract.parquet.{uuid.uuid4().hex}.tmp"
    schema = _schema(src)
    numeric = [src.target, *src.covariates, *src.future_covariates]
    after_as_of = [src.target, *src.covariates]
    rows = future_rows = dropped = 0
    non_numeric = dict.fromkeys(numeric, 0)
    numeric_seen = dict.fromkeys(numeric, 0)
    first_bad: dict[str, object] = {}
    series: set[str] = set()
    try:
        source = _source_selectable(engine, src)
        stmt = sa.select(*(source.c[name] for _, name in src.column_roles()))
        if engine.dialect.name != "sqlite":
            # Native timestamp columns are filtered in the database; SQLite's text is filtered after parsing.
            stmt = stmt.where(source.c[src.timestamp] <= upper.to_pydatetime())
        with engine.connect() as conn, pq.ParquetWriter(tmp, schema) as writer:
            result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(stmt)
            for chunk in result.partitions(chunk_rows):
                df = pd.DataFrame(chunk, columns=[name for _, name in src.column_roles()])
                keyless = df[src.series_id].isna() | df[src.timestamp].isna()
                dropped += int(keyless.sum())
                df = df[~keyless]
                ts = _parse_timestamps(df[src.timestamp], src)
                keep = (ts <= upper).to_numpy()
                df, ts = df[keep], ts[keep]
                out = pd.DataFrame({"series_id": df[src.series_id].astype(str), "ts": ts})
                for col in numeric:
                    raw = df[col]
                    values = pd.to_numeric(raw, errors="coerce")
                    bad = values.isna() & raw.notna()
                    if bad.any():
                        non_numeric[col] += int(bad.sum())
                        first_bad.setdefault(col, raw[bad].iloc[0])
                    numeric_seen[col] += int(values.notna().sum())
                    out[col] = values.astype("float64")
                future = (out["ts"] > as_of).to_numpy()
                out.loc[future, after_as_of] = float("nan")
                future_rows += int(future.sum())
                rows += len(out) - int(future.sum())
                series.update(out["series_id"].unique())
                writer.write_table(pa.Table.from_pandas(out, schema=schema, preserve_index=False))
        if rows == 0:
            raise ValueError(f"{src.label} has no rows with {src.timestamp!r} <= {as_of.isoformat()}")
        for col in numeric:
            if non_numeric[col] and numeric_seen[col] == 0:
                raise TypeError(
                    f"{src.label}: column {col!r} holds no numeric values (first value: {first_bad[col]!r})"
                )
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
        engine.dispose()
    return ExtractResult(
        path=str(final),
        as_of=as_of.isoformat(),
        rows=rows,
        future_rows=future_rows,
        series=len(series),
        dropped_without_key=dropped,
        non_numeric={k: v for k, v in non_numeric.items() if v},
        seconds=round(time.perf_counter() - started, 3),
    )


@task(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=retry_if_transient,
)
def resolve_as_of(cfg: PipelineConfig, as_of: str | None) -> str:
    """The run's as-of timestamp in UTC ISO format: the given one, or the source's last timestamp."""
    return (
        parse_as_of(as_of) if as_of is not None else last_timestamp(cfg.source.url, cfg.source)
    ).isoformat()


@task(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=retry_if_transient,
)
def extract(cfg: PipelineConfig, as_of: str) -> ExtractResult:
    return extract_to_parquet(cfg, parse_as_of(as_of))

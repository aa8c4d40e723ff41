"""Extract: stream the source table or query into Parquet, only rows known at `as_of`.

Target and past-covariate values after `as_of` never leave this stage: the only rows kept beyond `as_of`
are the known-in-advance covariates for the forecast horizon, with everything else nulled. `source.py`
checks the source and `stream.py` reads it as Arrow batches; `store.py` keeps an incremental pipeline's
month files and watermark, so a nightly run reads only the rows after `watermark - source.reread_window`.
Every file is written under a hidden temp name and renamed into place, so readers never see a partial file.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field

import pandas as pd
from prefect import task

from tasks.config import PipelineConfig
from tasks.errors import DataError
from tasks.extract.events import write_events
from tasks.extract.source import SourceQueryError, SourceUnavailable, last_timestamp
from tasks.extract.store import (
    STORE_DIR,
    WATERMARK_FILE,
    current_watermark,
    full_extract,
    incremental_extract,
    read_watermark,
)
from tasks.files import run_dir, swap_dir, temp_path
from tasks.parsing import parse_as_of
from tasks.retry import DB_RETRIES

__all__ = [
    "STORE_DIR", "WATERMARK_FILE", "ExtractResult", "SourceQueryError", "SourceUnavailable", "extract",
    "last_timestamp", "read_watermark", "resolve_as_of", "run_extract",
]  # fmt: skip


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
    rows_read: int = 0  # rows that came from the database in this run (all of them, or only the new ones)
    mode: str = "full"  # full | incremental | backfill
    watermark: str | None = None
    events_path: str | None = None  # source.events_table's rows, all of them: events are fixed in advance


def run_extract(cfg: PipelineConfig, as_of: pd.Timestamp, *, chunk_rows: int | None = None) -> ExtractResult:
    """Write the source rows known at `as_of` (plus future covariates for the horizon) to
    `run_dir/extract.parquet`, a folder with one Parquet file per month that `pd.read_parquet` reads whole.

    Incremental (the default): new rows since the watermark, minus the re-read window, update the store and
    the run's files are taken from it. An as_of before the watermark (a backfill) and `incremental = false`
    read the source in full for that as_of and leave the store and watermark alone.
    """
    started = time.perf_counter()
    src = cfg.source
    batch_rows = chunk_rows or src.batch_rows
    future_end = as_of + cfg.forecast.horizon * pd.tseries.frequencies.to_offset(cfg.data.freq)
    upper = future_end if src.future_covariates else as_of
    out_dir = run_dir(cfg, as_of)
    out_dir.mkdir(parents=True, exist_ok=True)
    events_path = write_events(src.url, src.events_table, out_dir, as_of) if src.events_table else None
    final = out_dir / "extract.parquet"
    work = temp_path(final)
    work.mkdir()
    mark = current_watermark(cfg)
    try:
        if not src.incremental or (mark is not None and as_of < mark.watermark):
            mode = "backfill" if src.incremental else "full"
            counts, stats = full_extract(cfg, as_of, upper, batch_rows, work)
            watermark = mark.watermark if mark is not None else None
        else:
            mode = "incremental" if mark is not None else "full"
            counts, stats, watermark = incremental_extract(cfg, as_of, upper, batch_rows, work, mark)
        if counts.rows == 0:
            raise DataError(f"{src.label} has no rows with {src.timestamp!r} <= {as_of.isoformat()}")
        swap_dir(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExtractResult(
        path=str(final),
        as_of=as_of.isoformat(),
        rows=counts.rows,
        future_rows=counts.future_rows,
        series=len(counts.series),
        dropped_without_key=stats.dropped,
        non_numeric={k: v for k, v in stats.non_numeric.items() if v},
        seconds=round(time.perf_counter() - started, 3),
        rows_read=stats.rows_read,
        mode=mode,
        watermark=watermark.isoformat() if watermark is not None else None,
        events_path=events_path,
    )


def run_resolve_as_of(cfg: PipelineConfig, as_of: str | None) -> str:
    when = parse_as_of(as_of) if as_of is not None else last_timestamp(cfg.source.url, cfg.source)
    return when.isoformat()


@task(**DB_RETRIES)
def resolve_as_of(cfg: PipelineConfig, as_of: str | None) -> str:
    """The run's as-of in UTC ISO format: the given one, or the source's last timestamp."""
    return run_resolve_as_of(cfg, as_of)


@task(**DB_RETRIES)
def extract(cfg: PipelineConfig, as_of: str) -> ExtractResult:
    """Write the source rows known at `as_of` to the run's Parquet files."""
    return run_extract(cfg, parse_as_of(as_of))

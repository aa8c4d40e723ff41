"""The Parquet store of an incremental pipeline: one file per month of the timestamp under
`<data_dir>/<pipeline>/store/`, a watermark next to it (the latest source timestamp <= as-of already
extracted), and each run's snapshot of it. Store files are never modified in place: a month that changes
is written under a temp name and renamed, so a snapshot can hard-link the months before its as-of."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.config import PipelineConfig
from tasks.db import safe_url
from tasks.extract.source import ReadStats, check_numeric, extract_schema
from tasks.extract.stream import read_source
from tasks.files import atomic_write, link_or_copy, pipeline_dir, temp_path, write_error, write_text_atomic
from tasks.parsing import parse_as_of
from tasks.sections import SourceConfig

WATERMARK_FILE = "watermark.json"


STORE_DIR = "store"


# The store's file layout; a store written in another layout is filled afresh from the source.
# 2: the per-row marks of what parsing repaired (tasks.parsing.MARK_COLUMNS).
STORE_LAYOUT = 2


@dataclass(frozen=True)
class Watermark:
    source: str  # fingerprint of the source the store was filled from
    watermark: pd.Timestamp


def _month_end(month: str) -> pd.Timestamp:
    """The first instant after `month` (files hold timestamps strictly before it)."""
    return pd.Timestamp(f"{month}-01", tz="UTC") + pd.offsets.MonthBegin(1)


# Dictionary-encode only the series ids: timestamps and values are nearly all distinct, and dictionary
# pages for them cost more time than they save space.
# Statistics only for the timestamps, which readers of a date range filter on; the files of a month are
# written in source order, so min/max of the series ids would select nothing and cost encoding time.
PARQUET_OPTIONS = {"compression": "snappy", "use_dictionary": ["series_id"], "write_statistics": ["ts"]}


def write_parquet(table: pa.Table, path: Path) -> None:
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp, **PARQUET_OPTIONS)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _months_between(first_us: int, last_us: int) -> tuple[list[str], np.ndarray]:
    """The UTC months from the one holding `first_us` to the one holding `last_us` (microseconds since
    the epoch), as "YYYY-MM" labels, and the instants (microseconds) where the second and later begin."""
    first = _EPOCH + datetime.timedelta(microseconds=first_us)
    last = _EPOCH + datetime.timedelta(microseconds=last_us)
    year, month = first.year, first.month
    labels, starts = [], []
    while (year, month) <= (last.year, last.month):
        labels.append(f"{year:04d}-{month:02d}")
        start = datetime.datetime(year, month, 1, tzinfo=datetime.UTC) - _EPOCH
        starts.append(start // datetime.timedelta(microseconds=1))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return labels, np.asarray(starts[1:], dtype=np.int64)


# Rows that arrive in runs of one month this long on average (sorted by time, or by series and then time)
# are copied out run by run; shorter runs are gathered by a sort. Both keep the rows' order within a month.
MIN_MEAN_RUN = 64


def _split_by_month(table: pa.Table) -> Iterator[tuple[str, pa.Table]]:
    """The rows of `table` grouped by UTC month, from month boundaries found by binary search (much
    cheaper than computing a calendar month for every row)."""
    micros = table.column("ts").cast(pa.int64()).to_numpy()
    labels, bounds = _months_between(int(micros.min()), int(micros.max()))
    if len(labels) == 1:
        yield labels[0], table
        return
    which = np.searchsorted(bounds, micros, side="right").astype(np.int16)
    starts = np.flatnonzero(which[1:] != which[:-1]) + 1
    if len(starts) < len(which) // MIN_MEAN_RUN:  # long runs of one month: copy them out in order
        starts = np.concatenate(([0], starts))
        ends = np.append(starts[1:], len(which))
        runs: dict[int, list[pa.Table]] = {}
        for start, end, k in zip(starts.tolist(), ends.tolist(), which[starts].tolist(), strict=True):
            runs.setdefault(k, []).append(table.slice(start, end - start))
        for k in sorted(runs):
            yield labels[k], pa.concat_tables(runs[k]).combine_chunks()
        return
    order = np.argsort(which, kind="stable")
    counts = np.bincount(which, minlength=len(labels))
    ordered = table.take(pa.array(order))
    start = 0
    for label, n in zip(labels, counts.tolist(), strict=True):
        if n:
            yield label, ordered.slice(start, n)
        start += n


class MonthFiles:
    """One Parquet writer per month of the timestamp, each writing a hidden temp file in `folder`."""

    def __init__(self, folder: Path, schema: pa.Schema) -> None:
        self.folder, self.schema = folder, schema
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.paths: dict[str, Path] = {}

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        for month, part in _split_by_month(table):
            if month not in self.writers:
                self.paths[month] = temp_path(self.folder / f"{month}.parquet")
            try:
                if month not in self.writers:
                    self.writers[month] = pq.ParquetWriter(self.paths[month], self.schema, **PARQUET_OPTIONS)
                self.writers[month].write_table(part)
            except OSError as exc:
                raise write_error(self.paths[month], exc) from exc

    def close(self) -> dict[str, Path]:
        writers, self.writers = self.writers, {}
        for month, writer in writers.items():
            try:
                writer.close()
            except OSError as exc:
                raise write_error(self.paths[month], exc) from exc
        return self.paths


def null_future(table: pa.Table, src: SourceConfig, as_of: pd.Timestamp) -> pa.Table:
    """Rows after as_of keep only their known-in-advance covariates."""
    future = pc.greater(table.column("ts"), pa.scalar(as_of, pa.timestamp("us", tz="UTC")))
    if not pc.any(future).as_py():
        return table
    for col in (src.target, *src.covariates):
        i = table.schema.get_field_index(col)
        table = table.set_column(i, col, pc.if_else(future, pa.scalar(None, pa.float64()), table.column(col)))
    return table


@dataclass
class Counts:
    rows: int = 0
    future_rows: int = 0
    series: set[str] = field(default_factory=set)

    def add(self, table: pa.Table, as_of: pd.Timestamp) -> None:
        future = pc.sum(
            pc.greater(table.column("ts"), pa.scalar(as_of, pa.timestamp("us", tz="UTC")))
        ).as_py()
        self.future_rows += future or 0
        self.rows += table.num_rows - (future or 0)
        self.series.update(pc.unique(table.column("series_id")).to_pylist())


def _publish_months(files: dict[str, Path], folder: Path) -> None:
    for month, path in files.items():
        os.replace(path, folder / f"{month}.parquet")


def source_fingerprint(src: SourceConfig) -> str:
    """What the store was filled from: a different source or column set starts the store afresh."""
    identity = {
        "layout": STORE_LAYOUT,
        "url": safe_url(src.url),
        "table": src.table,
        "query": src.query,
        "columns": src.column_roles(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def read_watermark(cfg: PipelineConfig) -> Watermark | None:
    path = pipeline_dir(cfg) / WATERMARK_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return Watermark(source=data["source"], watermark=parse_as_of(data["watermark"]))


def write_watermark(cfg: PipelineConfig, mark: Watermark) -> None:
    path = pipeline_dir(cfg) / WATERMARK_FILE
    write_text_atomic(json.dumps({"source": mark.source, "watermark": mark.watermark.isoformat()}), path)


def current_watermark(cfg: PipelineConfig) -> Watermark | None:
    """The incremental store's watermark; None when there is none to go on (a first run, a pipeline that
    reads in full, or a source that changed since the store was filled, which starts it afresh)."""
    mark = read_watermark(cfg) if cfg.source.incremental else None
    return mark if mark is not None and mark.source == source_fingerprint(cfg.source) else None


def full_extract(
    cfg: PipelineConfig, as_of: pd.Timestamp, upper: pd.Timestamp, batch_rows: int, work: Path
) -> tuple[Counts, ReadStats]:
    """Every source row up to `upper` straight into month files in `work`, future rows nulled."""
    stats, counts = ReadStats(), Counts()
    months = MonthFiles(work, extract_schema(cfg.source))
    try:
        with closing(read_source(cfg.source.url, cfg.source, None, upper, batch_rows, stats)) as tables:
            for table in tables:
                table = null_future(table, cfg.source, as_of)
                counts.add(table, as_of)
                months.write(table)
    finally:
        files = months.close()
    _publish_months(files, work)
    check_numeric(cfg.source, stats)
    return counts, stats


def update_store(
    cfg: PipelineConfig,
    as_of: pd.Timestamp,
    upper: pd.Timestamp,
    lower: pd.Timestamp | None,
    batch_rows: int,
    store: Path,
) -> tuple[ReadStats, pd.Timestamp | None]:
    """Read rows after `lower` into fresh month files, then replace that time range in the store.

    Returns the read statistics and the latest timestamp <= as_of that was read (None if none was).
    """
    src, stats = cfg.source, ReadStats()
    fresh_dir = store / f".fresh.{uuid.uuid4().hex}"
    fresh_dir.mkdir(parents=True)
    latest: pd.Timestamp | None = None
    as_of_scalar = pa.scalar(as_of, pa.timestamp("us", tz="UTC"))
    try:
        months = MonthFiles(fresh_dir, extract_schema(src))
        try:
            with closing(read_source(src.url, src, lower, upper, batch_rows, stats)) as tables:
                for table in tables:
                    known = table.filter(pc.less_equal(table.column("ts"), as_of_scalar)).column("ts")
                    if len(known):
                        top = pd.Timestamp(pc.max(known).as_py())
                        latest = top if latest is None or top > latest else latest
                    months.write(table)
        finally:
            fresh = months.close()
        check_numeric(src, stats)
        existing = {p.stem: p for p in store.glob("*.parquet")}
        for month in sorted(set(existing) | set(fresh)):
            if lower is not None and month not in fresh and _month_end(month) <= lower:
                continue  # entirely before the re-read window: untouched
            if month in fresh and (lower is None or month not in existing):
                os.replace(fresh[month], store / f"{month}.parquet")  # nothing to keep from before
                continue
            parts = []
            if lower is not None and month in existing:
                old = pq.read_table(existing[month], schema=extract_schema(src))
                parts.append(
                    old.filter(pc.less_equal(old.column("ts"), pa.scalar(lower, old.schema.field("ts").type)))
                )
            if month in fresh:
                parts.append(pq.read_table(fresh[month], schema=extract_schema(src)))
            merged = pa.concat_tables(parts) if parts else None
            if merged is None or merged.num_rows == 0:
                existing[month].unlink(missing_ok=True)
                continue
            write_parquet(
                merged.sort_by([("ts", "ascending"), ("series_id", "ascending")]), store / f"{month}.parquet"
            )
    finally:
        shutil.rmtree(fresh_dir, ignore_errors=True)
    return stats, latest


def snapshot(store: Path, work: Path, src: SourceConfig, as_of: pd.Timestamp, upper: pd.Timestamp) -> Counts:
    """The run's view of the store in `work`: months wholly before as_of are hard links (store files are
    never modified in place), the rest are rewritten with the rows after as_of nulled."""
    counts = Counts()
    for path in sorted(store.glob("*.parquet")):
        month = path.stem
        target = work / path.name
        if _month_end(month) <= as_of:
            link_or_copy(path, target)
            counts.rows += pq.ParquetFile(path).metadata.num_rows
            counts.series.update(pc.unique(pq.read_table(path, columns=["series_id"]).column(0)).to_pylist())
            continue
        table = pq.read_table(path, schema=extract_schema(src))
        table = table.filter(
            pc.less_equal(table.column("ts"), pa.scalar(upper, table.schema.field("ts").type))
        )
        if table.num_rows == 0:
            continue
        table = null_future(table, src, as_of)
        counts.add(table, as_of)
        write_parquet(table, target)
    return counts


def incremental_extract(
    cfg: PipelineConfig, as_of: pd.Timestamp, upper: pd.Timestamp, batch_rows: int, work: Path,
    mark: Watermark | None,
) -> tuple[Counts, ReadStats, pd.Timestamp | None]:  # fmt: skip
    """Update the store with the rows after the watermark less the re-read window (all rows without a
    watermark), move the watermark, and snapshot the store into `work` for this as-of."""
    src = cfg.source
    lower = mark.watermark - pd.Timedelta(src.reread_window) if mark is not None else None
    store = pipeline_dir(cfg) / STORE_DIR
    store.mkdir(parents=True, exist_ok=True)
    stats, latest = update_store(cfg, as_of, upper, lower, batch_rows, store)
    watermark = mark.watermark if mark is not None else None
    if latest is not None and (watermark is None or latest > watermark):
        watermark = latest
    if watermark is not None:
        write_watermark(cfg, Watermark(source=source_fingerprint(src), watermark=watermark))
    return snapshot(store, work, src, as_of, upper), stats, watermark

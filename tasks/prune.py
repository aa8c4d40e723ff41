"""Prune: a pipeline's outputs older than `retention.keep` go, so tables and data_dir stop growing.

The cutoff is the run's as-of minus `keep` (not the wall clock: a backfill of past dates removes only
what is older than the dates it forecasts). What is older goes: the forecasts (on PostgreSQL's
partitioned table, the partitions of those as-ofs are dropped whole; elsewhere the rows are deleted), the
runs and quality rows with those as-ofs, the accuracy rows only with `retention.accuracy`, the run folders
under data_dir and the checkpoints of retired or rejected models trained on data that old. A checkpoint
that a champion row or a newer row points to stays, and registry rows stay (the model history; a
version whose checkpoint is gone is retrained from scratch if it is ever needed). Every table goes in one
transaction on the output database; files are removed after the commit, so a failed prune leaves them.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from prefect import task

from tasks._log import stage_logger
from tasks.config import PipelineConfig
from tasks.db import advisory_xact_lock, create_engine
from tasks.files import models_dir, pipeline_dir
from tasks.parsing import parse_as_of, utc
from tasks.retry import DB_RETRIES
from tasks.schemas import (
    PARTITION_KEY,
    accuracy_table,
    forecast_table,
    models_table,
    quality_table,
    runs_table,
)

PRUNABLE_STATUSES = ("retired", "rejected")  # a registry row in any other status keeps its checkpoint
CHAMPION = "champion"
RUN_DIR = re.compile(r"^as_of=(\d{8}T\d{6})$")  # tasks.files.run_dir's folder names

# Each partition of the forecast table holds one (pipeline, as_of), which only its bound says: both are
# read back from the bound's text and compared on the server, which formatted them.
_OLD_PARTITIONS = sa.text(
    "select c.oid::regclass::text, b.m[2]::timestamptz from pg_inherits i "
    "join pg_class c on c.oid = i.inhrelid "
    "cross join lateral (select regexp_match(pg_get_expr(c.relpartbound, c.oid), :pattern) as m) b "
    "where i.inhparent = to_regclass(:parent) and b.m[1] = :pipeline and b.m[2]::timestamptz < :cutoff "
    "order by 2, 1"
).bindparams(sa.bindparam("cutoff", type_=sa.DateTime(timezone=True)))
_BOUND = r"^FOR VALUES FROM \('((?:[^']|'')*)', '([^']*)'\) TO"


@dataclass(frozen=True)
class PruneResult:
    """What went (with `dry_run`: what would go); names are as-ofs, partitions, folders and files."""

    pipeline: str
    keep: str | None  # None: retention is off and nothing was looked at
    as_of: str | None  # the as-of the cutoff is measured from; None: the pipeline has no runs yet
    cutoff: str | None  # outputs with an as-of before this go
    dry_run: bool
    forecast_as_ofs: tuple[str, ...] = ()
    forecast_rows: int = 0
    partitions: tuple[str, ...] = ()  # dropped partitions of PostgreSQL's partitioned forecast table
    runs: int = 0
    quality_rows: int = 0
    accuracy: bool = False  # whether the accuracy history was pruned too (retention.accuracy)
    accuracy_rows: int = 0
    checkpoints: tuple[str, ...] = ()
    run_dirs: tuple[str, ...] = ()
    seconds: float = field(default=0.0, compare=False)

    def lines(self) -> list[str]:
        """What went, one line per kind of output, for the CLI and the run's log."""
        if self.keep is None:
            return [f"{self.pipeline}: retention is off (no retention.keep): nothing pruned"]
        if self.cutoff is None:
            return [f"{self.pipeline}: no runs yet, no as-of to measure retention.keep from: nothing pruned"]
        verb = "would go" if self.dry_run else "went"
        dry = " (dry run: nothing changed)" if self.dry_run else ""
        accuracy = f"{self.accuracy_rows} rows" if self.accuracy else "kept (retention.accuracy = false)"
        return [
            f"{self.pipeline}: as-of {self.as_of} - keep {self.keep}: before {self.cutoff} {verb}{dry}",
            f"forecasts: {self.forecast_rows} rows of {len(self.forecast_as_ofs)} as-ofs"
            + _names(self.forecast_as_ofs),
            f"partitions: {len(self.partitions)}" + _names(self.partitions),
            f"runs: {self.runs} rows; quality: {self.quality_rows} rows; accuracy: {accuracy}",
            f"run folders: {len(self.run_dirs)}" + _names(self.run_dirs),
            f"checkpoints: {len(self.checkpoints)}" + _names(self.checkpoints),
        ]


def _names(names: Iterable[str]) -> str:
    names = list(names)
    return f" ({', '.join(names)})" if names else ""


@dataclass(frozen=True)
class Pruned:
    """What one transaction removed (or, in a dry run, found) in the output database."""

    as_of: datetime | None
    forecast_as_ofs: tuple[str, ...] = ()
    forecast_rows: int = 0
    partitions: tuple[str, ...] = ()
    runs: int = 0
    quality_rows: int = 0
    accuracy_rows: int = 0
    checkpoints: tuple[str, ...] = ()


def _exists(conn: sa.Connection, table: sa.Table) -> bool:
    return sa.inspect(conn).has_table(table.name, schema=table.schema)


def _iso(value: datetime) -> str:
    return parse_as_of(value).isoformat()


def latest_as_of(conn: sa.Connection, runs: sa.Table, pipeline: str) -> datetime | None:
    """The as-of of the pipeline's newest run: what `lstmcast prune` measures from when given none."""
    if not _exists(conn, runs):
        return None
    newest = conn.execute(sa.select(sa.func.max(runs.c.as_of)).where(runs.c.pipeline == pipeline)).scalar()
    return utc(newest) if newest is not None else None


def delete_older(conn: sa.Connection, table: sa.Table, pipeline: str, cutoff: datetime, dry_run: bool) -> int:
    """Rows of `pipeline` with an as-of before `cutoff`: deleted, or counted in a dry run."""
    if not _exists(conn, table):
        return 0
    old = (table.c.pipeline == pipeline) & (table.c.as_of < cutoff)
    if dry_run:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(old)).scalar_one())
    return int(conn.execute(sa.delete(table).where(old)).rowcount)


def is_partitioned(conn: sa.Connection, table: sa.Table) -> bool:
    """Whether `table` has a partition per (pipeline, as_of), as publish makes it on PostgreSQL."""
    if conn.dialect.name != "postgresql":
        return False
    key = sa.func.pg_get_partkeydef(sa.func.to_regclass(conn.dialect.identifier_preparer.format_table(table)))
    return conn.execute(sa.select(key)).scalar() == PARTITION_KEY


def drop_partitions(
    conn: sa.Connection, table: sa.Table, pipeline: str, cutoff: datetime, dry_run: bool
) -> tuple[list[str], list[str], int]:
    """(as-ofs, partitions, rows) of `pipeline`'s partitions before `cutoff`, dropped unless a dry run."""
    parent = conn.dialect.identifier_preparer.format_table(table)
    params = {"pattern": _BOUND, "parent": parent, "pipeline": pipeline, "cutoff": cutoff}
    found = conn.execute(_OLD_PARTITIONS, params).all()
    rows = 0
    for name, _ in found:  # names as regclass prints them: quoted where SQL needs it
        rows += conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one()
        if not dry_run:
            conn.execute(sa.text(f"DROP TABLE {name}"))
    return [_iso(as_of) for _, as_of in found], [name for name, _ in found], int(rows)


def prune_forecasts(
    conn: sa.Connection, table: sa.Table, pipeline: str, cutoff: datetime, dry_run: bool
) -> tuple[list[str], list[str], int]:
    """(as-ofs, dropped partitions, rows) of the forecasts before `cutoff`."""
    if not _exists(conn, table):
        return [], [], 0
    if is_partitioned(conn, table):
        return drop_partitions(conn, table, pipeline, cutoff, dry_run)
    old = (table.c.pipeline == pipeline) & (table.c.as_of < cutoff)
    per_as_of = conn.execute(
        sa.select(table.c.as_of, sa.func.count()).where(old).group_by(table.c.as_of).order_by(table.c.as_of)
    ).all()
    if not dry_run and per_as_of:
        conn.execute(sa.delete(table).where(old))
    return [_iso(as_of) for as_of, _ in per_as_of], [], sum(int(n) for _, n in per_as_of)


def old_checkpoints(
    conn: sa.Connection, registry: sa.Table, cfg: PipelineConfig, cutoff: datetime
) -> list[str]:
    """Checkpoint files of the pipeline's retired or rejected versions trained for an as-of before
    `cutoff`, under its models folder, that no champion row and no newer row points to."""
    if not _exists(conn, registry):
        return []
    c = registry.c
    rows = conn.execute(sa.select(c.pipeline, c.checkpoint_path, c.status, c.as_of)).all()
    mine = [r for r in rows if r.pipeline == cfg.name and r.status in PRUNABLE_STATUSES]
    old = [r.checkpoint_path for r in mine if utc(r.as_of) < cutoff]
    kept = {_resolved(r.checkpoint_path) for r in rows if r.status == CHAMPION or utc(r.as_of) >= cutoff}
    folder = models_dir(cfg).resolve()
    found = {
        path for path in old
        if _resolved(path) not in kept and _resolved(path).parent == folder and Path(path).is_file()
    }  # fmt: skip
    return sorted(found)


def _resolved(path: str) -> Path:
    return Path(path).resolve()


def old_run_dirs(cfg: PipelineConfig, cutoff: datetime) -> list[Path]:
    """The pipeline's run folders (`as_of=<timestamp>`) of as-ofs before `cutoff`."""
    folder = pipeline_dir(cfg)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = RUN_DIR.match(path.name)
        if match and path.is_dir() and pd.Timestamp(match[1], tz="UTC") < cutoff:
            found.append(path)
    return sorted(found)


def prune_tables(cfg: PipelineConfig, as_of: str | None, window: pd.Timedelta, dry_run: bool) -> Pruned:
    """Every table's old rows in one transaction on the output database (rolled back in a dry run)."""
    out, metadata = cfg.output, sa.MetaData()
    registry = models_table(cfg.registry.table, metadata)
    engine = create_engine(out.url)
    try:
        with engine.connect() as conn, conn.begin() as tx:
            if not dry_run:  # first: promotions of the pipeline wait (SQLite: the write lock, at once)
                advisory_xact_lock(conn, registry.fullname, cfg.name)
            runs = runs_table(out.runs_table, metadata)
            when = utc(as_of) if as_of is not None else latest_as_of(conn, runs, cfg.name)
            if when is None:
                return Pruned(None)
            cutoff = (pd.Timestamp(when) - window).to_pydatetime()
            as_ofs, partitions, rows = prune_forecasts(
                conn, forecast_table(out.table, metadata), cfg.name, cutoff, dry_run
            )
            pruned = Pruned(
                when, tuple(as_ofs), rows, tuple(partitions),
                runs=delete_older(conn, runs, cfg.name, cutoff, dry_run),
                quality_rows=delete_older(conn, quality_table(out.quality_table, metadata, []), cfg.name,
                                          cutoff, dry_run),
                accuracy_rows=delete_older(conn, accuracy_table(out.accuracy_table, metadata), cfg.name,
                                           cutoff, dry_run) if cfg.retention.accuracy else 0,
                checkpoints=tuple(old_checkpoints(conn, registry, cfg, cutoff)),
            )  # fmt: skip
            if dry_run:
                tx.rollback()
    finally:
        engine.dispose()
    return pruned


def run_prune(cfg: PipelineConfig, as_of: str | None = None, dry_run: bool = False) -> PruneResult:
    """`as_of`: what the cutoff is measured from; None: the pipeline's newest run's as-of."""
    started = time.perf_counter()
    window = cfg.retention.window()
    if window is None:
        return PruneResult(cfg.name, None, None, None, dry_run)
    pruned = prune_tables(cfg, as_of, window, dry_run)
    if pruned.as_of is None:
        return PruneResult(cfg.name, cfg.retention.keep, None, None, dry_run)
    cutoff = pd.Timestamp(pruned.as_of) - window
    folders = old_run_dirs(cfg, cutoff.to_pydatetime())
    if not dry_run:  # after the commit: a prune that failed in the database removed no file
        for folder in folders:
            shutil.rmtree(folder)
        for path in pruned.checkpoints:
            Path(path).unlink(missing_ok=True)
    result = PruneResult(
        cfg.name, cfg.retention.keep, _iso(pruned.as_of), cutoff.isoformat(), dry_run,
        pruned.forecast_as_ofs, pruned.forecast_rows, pruned.partitions, pruned.runs, pruned.quality_rows,
        cfg.retention.accuracy, pruned.accuracy_rows, pruned.checkpoints, tuple(str(f) for f in folders),
        round(time.perf_counter() - started, 3),
    )  # fmt: skip
    for line in result.lines():
        stage_logger().info("%s", line)
    return result


@task(**DB_RETRIES)
def prune(cfg: PipelineConfig, as_of: str) -> PruneResult:
    """Remove the pipeline's outputs older than retention.keep before the run's as-of."""
    return run_prune(cfg, as_of)

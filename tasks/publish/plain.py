"""The plain layout (SQLite, other databases, an unpartitioned PostgreSQL table): the rows of (pipeline,
as_of) made equal to the new set through a staging table, or copied straight in on a first publish."""

from __future__ import annotations

import uuid

import pandas as pd
import sqlalchemy as sa

from tasks.publish.context import PublishContext
from tasks.publish.copy import copy_forecasts, load_new_table, load_staging
from tasks.schemas import FORECAST_KEY


def staging_table(conn: sa.Connection) -> sa.Table:
    """A per-transaction temporary table; on PostgreSQL it also drops itself at commit or rollback."""
    stage = sa.Table(
        f"lstmcast_stage_{uuid.uuid4().hex[:12]}", sa.MetaData(),
        sa.Column("series_id", sa.Text, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("yhat", sa.Float(precision=53), nullable=False),
        sa.Column("yhat_lower", sa.Float(precision=53), nullable=True),
        sa.Column("yhat_upper", sa.Float(precision=53), nullable=True),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )  # fmt: skip
    stage.create(conn)
    return stage


def _same_key(table: sa.Table, stage: sa.Table) -> sa.ColumnElement[bool]:
    return (stage.c.series_id == table.c.series_id) & (stage.c.ts == table.c.ts)


def delete_replaced(conn: sa.Connection, table: sa.Table, stage: sa.Table, ctx: PublishContext) -> int:
    """Delete the rows of (pipeline, as_of) that the new set drops or changes: keys not staged (a series
    dropped since), other values, another model version. Unchanged rows stay as they are."""
    unchanged = sa.select(sa.literal(1)).where(
        _same_key(table, stage),
        stage.c.yhat == table.c.yhat,
        stage.c.yhat_lower.is_not_distinct_from(table.c.yhat_lower),
        stage.c.yhat_upper.is_not_distinct_from(table.c.yhat_upper),
        table.c.model_version == ctx.model_version,
    )
    same_as_of = (table.c.pipeline == ctx.pipeline) & (table.c.as_of == ctx.as_of)
    return conn.execute(sa.delete(table).where(same_as_of, ~unchanged.exists())).rowcount


def _keyed(conn: sa.Connection, table: sa.Table) -> bool:
    """Whether the table's primary key makes (as_of, pipeline, series_id, ts) unique, in any column order:
    lstmcast's tables have it; a table made by hand may lack it and hold a key twice."""
    key = sa.inspect(conn).get_pk_constraint(table.name, schema=table.schema)["constrained_columns"]
    return bool(key) and set(key) <= set(FORECAST_KEY)


def upsert_forecasts(
    conn: sa.Connection, table: sa.Table, stage: sa.Table, ctx: PublishContext, staged: int,
    existing: int,
) -> int:  # fmt: skip
    """Make the rows of (pipeline, as_of) equal to the staged set; returns the rows written.

    A first publish of the as-of (`existing` == 0, counted under the as-of's lock, taken first in the
    transaction) is one INSERT ... SELECT, and a re-publish deletes the rows that were dropped or
    changed, then inserts the staged rows whose key is not there any more: unchanged rows are not
    rewritten and keep the run that first wrote them. Unlike INSERT ... ON CONFLICT, it works the same
    on every dialect and rewrites only what changed. A key that appeared anyway fails the primary key
    and the transaction; it never duplicates.
    """
    constants = {c: sa.literal(v, table.c[c].type) for c, v in ctx.constants().items()}
    columns = [c.name for c in table.columns]
    select = sa.select(*(constants.get(c, stage.c.get(c)) for c in columns))
    kept = 0
    if existing:
        kept = existing - delete_replaced(conn, table, stage, ctx)
    if kept == staged and _keyed(conn, table):  # each kept row matches its own staged key: none is missing
        return 0
    if kept:  # only then can a staged key still be there; probing for it costs more than the insert
        there = sa.select(sa.literal(1)).where(
            table.c.pipeline == ctx.pipeline, table.c.as_of == ctx.as_of, _same_key(table, stage)
        )
        select = select.where(~there.exists())
    conn.execute(sa.insert(table).from_select(columns, select))
    if not kept:
        return staged
    # SQLAlchemy reports no row count for INSERT ... SELECT on every driver: count what the as-of holds now
    now_there = sa.select(sa.func.count()).where(table.c.pipeline == ctx.pipeline, table.c.as_of == ctx.as_of)
    return conn.execute(now_there).scalar_one() - kept


def write_plain(
    conn: sa.Connection, table: sa.Table, forecasts: pd.DataFrame, ctx: PublishContext, key_after_load: bool
) -> tuple[int, int]:
    """The forecasts of (pipeline, as_of) into a plain table: the rows it held, and the rows written.
    `key_after_load`: the table was created here without its key, which is built after the load: one
    sorted index build instead of an index insert per row (PostgreSQL's advice for loading a fresh table)."""
    replaced = conn.execute(
        sa.select(sa.func.count()).select_from(table)
        .where(table.c.pipeline == ctx.pipeline, table.c.as_of == ctx.as_of)
    ).scalar_one()  # fmt: skip
    if key_after_load:
        load_new_table(conn, table, forecasts, ctx)
        conn.execute(sa.schema.AddConstraint(table.primary_key))
        return replaced, len(forecasts)
    if replaced == 0 and copy_forecasts(conn, table, forecasts, ctx):
        return replaced, len(forecasts)
    stage = staging_table(conn)
    load_staging(conn, stage, forecasts)
    written = upsert_forecasts(conn, table, stage, ctx, len(forecasts), replaced)
    stage.drop(conn)
    return replaced, written

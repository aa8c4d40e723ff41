"""The partitioned layout (PostgreSQL): one partition per (pipeline, as_of), loaded and keyed as a table of
its own, then attached in place of the one a previous publish of the as-of left."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from tasks.publish.context import PublishContext
from tasks.publish.copy import load_new_table
from tasks.publish.sql import ddl, qualified, string_literal
from tasks.schemas import FORECAST_KEY, PARTITION_KEY, forecast_table

PARTITION_NAME_BYTES = 58  # PostgreSQL's 63-byte identifiers, less the "_pkey" of the partition's key


@dataclass(frozen=True)
class Partition:
    """The new partition of one (pipeline, as_of): loaded and keyed as table `loaded_as`, then attached as
    `name` by `swap_partition` in place of `replaces`, the partition a previous publish of the as-of left
    (as SQL names it)."""

    name: str
    loaded_as: str
    replaces: str | None
    replaced: int  # the rows `replaces` holds
    bound: str  # FOR VALUES ...


def partition_name(table: str, pipeline: str, as_of: datetime) -> str:
    """`<table>_<pipeline>_<as-of>`, e.g. forecasts_sales_20240101_000000. A pipeline name with capitals
    or other characters SQL would need quotes for is lowered to [a-z0-9_] plus a hash of it, so two
    pipelines never share a name; a name too long for PostgreSQL keeps its start and the as-of around a
    hash of table and pipeline."""
    stamp = as_of.strftime("%Y%m%d_%H%M%S") + (f"_{as_of.microsecond:06d}" if as_of.microsecond else "")
    plain = re.sub(r"[^a-z0-9_]", "_", pipeline.lower())
    if plain != pipeline:
        plain += "_" + hashlib.sha1(pipeline.encode()).hexdigest()[:6]
    name = f"{table}_{plain}_{stamp}"
    if len(name.encode()) <= PARTITION_NAME_BYTES:
        return name
    digest = hashlib.sha1(f"{table}\0{pipeline}".encode()).hexdigest()[:8]
    room = PARTITION_NAME_BYTES - len(stamp) - len(digest) - 2
    return f"{name.encode()[:room].decode(errors='ignore')}_{digest}_{stamp}"


def is_partitioned(conn: sa.Connection, table: sa.Table) -> bool:
    """Whether `table` is partitioned by (pipeline, as_of) as lstmcast makes it; a table partitioned
    some other way is written like a plain one (rows routed by PostgreSQL)."""
    if conn.dialect.name != "postgresql":
        return False
    key = sa.func.pg_get_partkeydef(sa.func.to_regclass(qualified(conn, table)))
    return conn.execute(sa.select(key)).scalar() == PARTITION_KEY


# the partition of (pipeline, as_of), found by its bounds whatever its name; the server formats both sides
_PARTITION_OF = sa.text(
    "select c.oid::regclass::text, c.oid = to_regclass(:name) from pg_inherits i "
    "join pg_class c on c.oid = i.inhrelid where i.inhparent = to_regclass(:parent) "
    "and pg_get_expr(c.relpartbound, c.oid) = "
    "format('FOR VALUES FROM (%L, %L) TO (%L, %L)', :pipeline, :start, :pipeline, :end)"
).bindparams(
    sa.bindparam("pipeline", type_=sa.Text),
    *(sa.bindparam(name, type_=sa.DateTime(timezone=True)) for name in ("start", "end")),
)


def load_partition(
    conn: sa.Connection, table: sa.Table, forecasts: pd.DataFrame, ctx: PublishContext
) -> Partition:
    """The forecasts in a new table of their own: COPY, then the key in one sorted index build, with a
    check that it holds only (pipeline, as_of) so attaching it needs no scan. Nothing here locks `table`
    itself, so publishes of other as-ofs go on side by side until `swap_partition`."""
    as_of = ctx.as_of
    name = partition_name(table.name, ctx.pipeline, as_of)
    full_name = qualified(conn, table, name)
    end = as_of + timedelta(microseconds=1)
    params = {"name": full_name, "parent": qualified(conn, table), "pipeline": ctx.pipeline}
    found = conn.execute(_PARTITION_OF, params | {"start": as_of, "end": end}).one_or_none()
    replaces, is_named = found if found is not None else (None, False)
    if not is_named and conn.execute(sa.select(sa.func.to_regclass(full_name))).scalar() is not None:
        raise LookupError(
            f"table {full_name!r} exists but is not the partition of {table.fullname!r} for pipeline "
            f"{ctx.pipeline!r}, as-of {as_of.isoformat()}, whose name it has: rename or drop it"
        )
    loaded_as = f"lstmcast_new_{uuid.uuid4().hex[:16]}"
    new = forecast_table(f"{table.schema}.{loaded_as}" if table.schema else loaded_as, sa.MetaData(), False)
    new.create(conn)
    pipeline, start = string_literal(ctx.pipeline), string_literal(as_of)
    ddl(conn, f"ALTER TABLE {qualified(conn, new)} ADD CONSTRAINT publish CHECK "
               f"(pipeline = {pipeline} AND as_of = {start})")  # fmt: skip
    load_new_table(conn, new, forecasts, ctx)
    key = sa.PrimaryKeyConstraint(*FORECAST_KEY, name=f"{loaded_as}_pkey")
    new.append_constraint(key)
    conn.execute(sa.schema.AddConstraint(key))
    replaced = conn.execute(sa.text(f"SELECT count(*) FROM {replaces}")).scalar_one() if replaces else 0
    bound = f"FOR VALUES FROM ({pipeline}, {start}) TO ({pipeline}, {string_literal(end)})"
    return Partition(name=name, loaded_as=loaded_as, replaces=replaces, replaced=replaced, bound=bound)


def swap_partition(conn: sa.Connection, table: sa.Table, part: Partition) -> None:
    """Put the new partition in place of the one it replaces, under the partition's name; last in the
    transaction, as the only statements that lock `table` itself. Attaching lets readers and other
    publishes on (a second attach waits for the commit); dropping a replaced partition makes readers wait
    for the commit too."""
    quote = conn.dialect.identifier_preparer.quote
    loaded = qualified(conn, table, part.loaded_as)
    named = qualified(conn, table, part.name)
    if part.replaces:
        conn.execute(sa.text(f"DROP TABLE {part.replaces}"))
    conn.execute(sa.text(f"ALTER TABLE {loaded} RENAME TO {quote(part.name)}"))
    conn.execute(
        sa.text(f"ALTER TABLE {named} RENAME CONSTRAINT {quote(part.loaded_as + '_pkey')} "
                f"TO {quote(part.name + '_pkey')}")
    )  # fmt: skip
    ddl(conn, f"ALTER TABLE {qualified(conn, table)} ATTACH PARTITION {named} {part.bound}")
    conn.execute(sa.text(f"ALTER TABLE {named} DROP CONSTRAINT publish"))  # the bound says it now

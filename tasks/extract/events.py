"""Reading the user's events table: (date, name) rows fixed in advance, such as a store closure or a
planned campaign. Each name becomes a known-future input of the model (lstm_model.features.event_features).

An optional column `known_since` says from when a row was known (announced, planned); a run then uses only
the rows known at its as-of, so a backfill does not see an event announced after the date it forecasts
from. A row without it (NULL, or no such column) counts as known all along.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from tasks.db import create_engine, db_message, is_transient, reflect_table, safe_url
from tasks.errors import DataError, SourceError
from tasks.extract.source import SourceQueryError, SourceUnavailable
from tasks.files import write_parquet_atomic

EVENT_COLUMNS = ("date", "name")
KNOWN_SINCE = "known_since"


def read_events(url: str, table_name: str, as_of: pd.Timestamp | None = None) -> pd.DataFrame:
    """The events table's rows known at `as_of` (all without one) as (date, name), checked
    (`checked_events`)."""
    engine = create_engine(url)
    try:
        table = reflect_table(engine, table_name)
        for column in EVENT_COLUMNS:
            if column not in table.c:
                raise SourceError(
                    f"source.events_table {table_name!r} has no column {column!r} (events are rows of "
                    f"{EVENT_COLUMNS}); its columns are {sorted(table.c.keys())}"
                )
        columns = [table.c[c] for c in (*EVENT_COLUMNS, KNOWN_SINCE) if c in table.c]
        with engine.connect() as conn:
            rows = conn.execute(sa.select(*columns)).all()
    except sa.exc.DBAPIError as exc:
        message = f"reading source.events_table {table_name!r} from {safe_url(url)} failed: {db_message(exc)}"
        raise (SourceUnavailable if is_transient(exc) else SourceQueryError)(message) from exc
    finally:
        engine.dispose()
    raw = pd.DataFrame(rows, columns=[c.name for c in columns])
    return checked_events(raw, table_name, as_of)


def parsed_dates(raw: pd.DataFrame, column: str, table_name: str, *, nulls: bool = False) -> pd.Series:
    """`raw[column]` as naive timestamps (wall-clock as stored); a value that is not a date is refused,
    and so is a missing one unless `nulls`."""
    dates = pd.to_datetime(raw[column], errors="coerce", format="mixed")
    bad = dates.isna() & (raw[column].notna() if nulls else True)
    if bad.any():
        raise DataError(
            f"source.events_table {table_name!r}: column {column!r} has a value that is not a date: "
            f"{raw[column][bad].iloc[0]!r}"
        )
    return dates.dt.tz_localize(None) if dates.dt.tz is not None else dates


def checked_events(raw: pd.DataFrame, table_name: str, as_of: pd.Timestamp | None = None) -> pd.DataFrame:
    """(date at midnight, name) sorted and without repeats, of the rows known at `as_of` (`known_since`
    on or before its wall-clock time, or empty); a row without a date or a name is refused."""
    dates = parsed_dates(raw, "date", table_name)
    names = raw["name"].astype("string").str.strip()
    blank = names.isna() | (names == "")
    if blank.any():
        raise DataError(
            f"source.events_table {table_name!r}: column 'name' is empty on the row dated "
            f"{dates[blank].iloc[0].date().isoformat()}"
        )
    frame = pd.DataFrame({"date": dates.dt.normalize(), "name": names.astype(str)})
    if KNOWN_SINCE in raw.columns and as_of is not None:
        known_since = parsed_dates(raw, KNOWN_SINCE, table_name, nulls=True)
        wall_clock = as_of.tz_localize(None) if as_of.tz is not None else as_of
        frame = frame[known_since.isna() | (known_since <= wall_clock)]
    return frame.drop_duplicates().sort_values(["date", "name"], ignore_index=True)


def write_events(url: str, table_name: str, out_dir: Path, as_of: pd.Timestamp | None = None) -> str:
    """The events table's rows known at `as_of` as `out_dir/events.parquet`; its path."""
    path = out_dir / "events.parquet"
    write_parquet_atomic(read_events(url, table_name, as_of), path)
    return str(path)

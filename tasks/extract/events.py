"""Reading the user's events table: (date, name) rows fixed in advance, such as a store closure or a
planned campaign. Each name becomes a known-future input of the model (lstm_model.features.event_features).
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


def read_events(url: str, table_name: str) -> pd.DataFrame:
    """Every row of the events table as (date, name), checked (`checked_events`)."""
    engine = create_engine(url)
    try:
        table = reflect_table(engine, table_name)
        for column in EVENT_COLUMNS:
            if column not in table.c:
                raise SourceError(
                    f"source.events_table {table_name!r} has no column {column!r} (events are rows of "
                    f"{EVENT_COLUMNS}); its columns are {sorted(table.c.keys())}"
                )
        with engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.date, table.c.name)).all()
    except sa.exc.DBAPIError as exc:
        message = f"reading source.events_table {table_name!r} from {safe_url(url)} failed: {db_message(exc)}"
        raise (SourceUnavailable if is_transient(exc) else SourceQueryError)(message) from exc
    finally:
        engine.dispose()
    return checked_events(pd.DataFrame(rows, columns=list(EVENT_COLUMNS)), table_name)


def checked_events(raw: pd.DataFrame, table_name: str) -> pd.DataFrame:
    """(date at midnight, name) sorted and without repeats; a row without a date or a name is refused."""
    dates = pd.to_datetime(raw["date"], errors="coerce", format="mixed")
    bad = dates.isna()
    if bad.any():
        raise DataError(
            f"source.events_table {table_name!r}: column 'date' has a value that is not a date: "
            f"{raw['date'][bad].iloc[0]!r}"
        )
    if dates.dt.tz is not None:
        dates = dates.dt.tz_localize(None)
    names = raw["name"].astype("string").str.strip()
    blank = names.isna() | (names == "")
    if blank.any():
        raise DataError(
            f"source.events_table {table_name!r}: column 'name' is empty on the row dated "
            f"{dates[blank].iloc[0].date().isoformat()}"
        )
    frame = pd.DataFrame({"date": dates.dt.normalize(), "name": names.astype(str)})
    return frame.drop_duplicates().sort_values(["date", "name"], ignore_index=True)


def write_events(url: str, table_name: str, out_dir: Path) -> str:
    """The events table as `out_dir/events.parquet`; its path."""
    path = out_dir / "events.parquet"
    write_parquet_atomic(read_events(url, table_name), path)
    return str(path)

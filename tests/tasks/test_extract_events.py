"""The events table (source.events_table) read from real SQLite and PostgreSQL databases."""

import datetime as dt
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa

from tasks.db import safe_url
from tasks.errors import DataError, SourceError
from tasks.extract import SourceQueryError
from tasks.extract.events import read_events, write_events
from tasks.parsing import parse_as_of


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def events_db(request, tmp_path):
    """(url, table name, load) for a uniquely named events table, dropped afterwards."""
    url = (
        f"sqlite:///{tmp_path / 'src.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    )
    table = f"events_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(url)

    def load(frame: pd.DataFrame) -> None:
        with engine.begin() as conn:
            frame.to_sql(table, conn, if_exists="replace", index=False)

    yield url, table, load
    with engine.begin() as conn:
        conn.execute(sa.text(f'drop table if exists "{table}"'))
    engine.dispose()


def test_events_are_read_as_sorted_dates_without_repeats(events_db, tmp_path):
    url, table, load = events_db
    load(pd.DataFrame({
        "date": [dt.date(2018, 12, 24), dt.date(2018, 3, 1), dt.date(2018, 3, 1), dt.date(2019, 1, 7)],
        "name": ["closure ", "campaign", "campaign", "closure"],
        "note": ["extra columns are ignored"] * 4,
    }))  # fmt: skip
    path = write_events(url, table, tmp_path)
    events = pd.read_parquet(path)
    assert path == str(tmp_path / "events.parquet")
    assert events.to_dict("list") == {
        "date": [pd.Timestamp("2018-03-01"), pd.Timestamp("2018-12-24"), pd.Timestamp("2019-01-07")],
        "name": ["campaign", "closure", "closure"],
    }


def test_timestamps_in_the_date_column_become_their_day(events_db):
    url, table, load = events_db
    stamps = [pd.Timestamp("2018-05-01 09:30"), pd.Timestamp("2018-05-02")]
    load(pd.DataFrame({"date": stamps, "name": ["fair", "fair"]}))
    assert read_events(url, table)["date"].tolist() == [
        pd.Timestamp("2018-05-01"),
        pd.Timestamp("2018-05-02"),
    ]


def test_a_missing_events_table_is_named_with_its_database(events_db):
    url, table, _ = events_db
    with pytest.raises(SourceError) as err:
        read_events(url, table)
    assert str(err.value) == f"table {table!r} does not exist in {safe_url(url)}"


def test_a_missing_column_is_named_with_the_columns_there_are(events_db):
    url, table, load = events_db
    load(pd.DataFrame({"day": [dt.date(2018, 1, 1)], "name": ["x"]}))
    with pytest.raises(SourceError) as err:
        read_events(url, table)
    assert str(err.value) == (
        f"source.events_table {table!r} has no column 'date' (events are rows of ('date', 'name')); "
        "its columns are ['day', 'name']"
    )


def test_a_value_that_is_not_a_date_is_named(events_db):
    url, table, load = events_db
    load(pd.DataFrame({"date": ["2018-01-01", "soon"], "name": ["a", "b"]}))
    with pytest.raises(DataError) as err:
        read_events(url, table)
    assert (
        str(err.value)
        == f"source.events_table {table!r}: column 'date' has a value that is not a date: 'soon'"
    )


@pytest.mark.parametrize("blank", [None, "  "])
def test_an_event_without_a_name_is_named_by_its_date(events_db, blank):
    url, table, load = events_db
    load(pd.DataFrame({"date": [dt.date(2018, 1, 1), dt.date(2018, 2, 3)], "name": ["a", blank]}))
    with pytest.raises(DataError) as err:
        read_events(url, table)
    assert (
        str(err.value) == f"source.events_table {table!r}: column 'name' is empty on the row dated 2018-02-03"
    )


def test_nothing_is_written_when_the_events_are_refused(events_db, tmp_path):
    url, table, load = events_db
    load(pd.DataFrame({"date": ["later"], "name": ["a"]}))
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(DataError):
        write_events(url, table, out)
    assert list(out.iterdir()) == []


@pytest.mark.postgres
def test_a_query_the_database_refuses_is_a_query_error_naming_the_table(pg_url):
    table = f"events_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:  # a role that may connect but not read the table
        conn.execute(sa.text(f'create table "{table}" (date date, name text)'))
        conn.execute(sa.text("drop role if exists lstmcast_events_reader"))
        conn.execute(sa.text("create role lstmcast_events_reader login"))
    reader = sa.make_url(pg_url).set(username="lstmcast_events_reader")
    try:
        with pytest.raises(SourceQueryError) as err:
            read_events(reader.render_as_string(hide_password=False), table)
        assert str(err.value).startswith(
            f"reading source.events_table {table!r} from {safe_url(str(reader))} failed: "
        )
        assert "permission denied" in str(err.value)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop table "{table}"'))
            conn.execute(sa.text("drop role lstmcast_events_reader"))
        engine.dispose()


def test_only_the_events_known_at_the_as_of_are_read(events_db):
    url, table, load = events_db
    load(pd.DataFrame({
        "date": [dt.date(2018, 6, 1), dt.date(2018, 6, 2), dt.date(2018, 6, 3)],
        "name": ["sale", "fair", "closure"],
        "known_since": [dt.date(2018, 1, 10), None, dt.date(2018, 5, 1)],
    }))  # fmt: skip

    def names(as_of: str | None) -> list[str]:
        return read_events(url, table, None if as_of is None else parse_as_of(as_of))["name"].tolist()

    assert names("2018-04-30 23:00") == ["sale", "fair"]  # the closure was announced on May 1
    assert names("2018-05-01 00:00") == ["sale", "fair", "closure"]
    assert names("2018-01-09") == ["fair"]  # a row without known_since counts as known all along
    assert names(None) == ["sale", "fair", "closure"]


def test_a_known_since_that_is_not_a_date_is_named(events_db):
    url, table, load = events_db
    load(pd.DataFrame({"date": ["2018-01-01"], "name": ["a"], "known_since": ["last spring"]}))
    with pytest.raises(DataError) as err:
        read_events(url, table, parse_as_of("2018-01-01"))
    assert str(err.value) == (
        f"source.events_table {table!r}: column 'known_since' has a value that is not a date: 'last spring'"
    )

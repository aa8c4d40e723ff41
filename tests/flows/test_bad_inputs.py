"""Bad inputs, one row per case (the table in docs/RELIABILITY.md lists the same ids).

Every case ends one of two ways. Either the run stops with an error whose message names the culprit (key,
table, column, value or file) and nothing reaches the output tables, or the run goes on: the series the input
concerns is repaired or skipped, that is counted in the quality table, and the other series are published.

Most cases run the nightly flow's stages in order as plain functions (`.fn()`): resolve as-of, extract, clean,
the seasonal-naive forecast the gate falls back to, and publish. What a bad input does is decided before
backtest and training, so those are left out. The cases marked `flow=True` run the Prefect flow itself.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import tomli_w

import tasks.files
from flows.nightly import nightly_forecast
from tasks.clean import COUNT_COLUMNS, MAD_SCALE, clean
from tasks.config import ConfigError, load_config, parse_config
from tasks.db import safe_url, split_table
from tasks.extract import extract, resolve_as_of
from tasks.files import pipeline_dir, run_dir
from tasks.publish import run_publish
from tasks.schemas import forecast_table, quality_table, runs_table
from tasks.summary import build_run_record
from tests.helpers import forecast_all, sensor_config_dict, sensor_slice, write_table

HOURS = 96  # 2016-07-01 00:00 to 2016-07-04 23:00 of three ETTh1 sensors
AS_OF = "2016-07-04 23:00"
AS_OF_TS = pd.Timestamp(AS_OF, tz="UTC")
SERIES = ("HUFL", "HULL", "OT")
HORIZON, LOOKBACK = 12, 24  # from sensor_config_dict
OUTPUTS = ("table", "runs_table", "quality_table")
OUTPUT_DEFAULTS = {"table": "forecasts", "runs_table": "lstmcast_runs", "quality_table": "lstmcast_quality"}


@cache
def _base() -> pd.DataFrame:
    return sensor_slice(HOURS)


def base() -> pd.DataFrame:
    """The source table of every case before the case breaks it: 96 hours of three sensors, ts as text."""
    return _base().copy()


# ---------------------------------------------------------------------------------------------- scenario


@dataclass
class Outcome:
    """What a completed run left in the output database and the run folder."""

    forecasts: pd.DataFrame
    quality: pd.DataFrame  # indexed by series_id
    counts: dict  # the run record's stage counts
    history: pd.DataFrame


@dataclass
class Scenario:
    """The inputs of one case: a source table, a config and an as-of, each changed by the case's setup."""

    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    request: pytest.FixtureRequest
    frame: pd.DataFrame | None = field(default_factory=base)  # None: no source table
    as_of: str | None = AS_OF
    config: dict = field(init=False)
    after_write: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.config = sensor_config_dict(self.source_url, self.tmp_path / "work")

    @property
    def source_url(self) -> str:
        return f"sqlite:///{self.tmp_path / 'source.db'}"

    @property
    def config_path(self) -> Path:
        return self.tmp_path / "sensors.toml"

    @property
    def output_url(self) -> str:
        return self.config["output"]["url"]

    def set(self, section: str, **values: object) -> None:
        self.config[section] = {**self.config.get(section, {}), **values}

    def pg_url(self) -> str:
        return self.request.getfixturevalue("pg_url")

    def series(self) -> set[str]:
        return set(self.frame["series_id"].dropna().astype(str))

    def run_dir(self) -> Path:
        """The folder of the run's intermediate files (the base config's: cases keep name and data_dir)."""
        return run_dir(parse_config(sensor_config_dict(self.source_url, self.tmp_path / "work")), AS_OF_TS)

    def write_inputs(self) -> None:
        if self.frame is not None:
            write_table(self.source_url, "readings", self.frame)
        self.config_path.write_bytes(tomli_w.dumps(self.config).encode())
        for step in self.after_write:
            step()

    def run(self, flow: bool) -> Outcome:
        if flow:
            state = nightly_forecast(str(self.config_path), self.as_of, return_state=True)
            state.result()  # raises the exception of a failed run
        else:
            run_stages(str(self.config_path), self.as_of)
        return self.outcome()

    def outcome(self) -> Outcome:
        out = {key: self.config["output"].get(key, OUTPUT_DEFAULTS[key]) for key in OUTPUTS}
        runs = read_output(self.output_url, out["runs_table"])
        assert runs is not None and len(runs) == 1
        return Outcome(
            forecasts=read_output(self.output_url, out["table"]),
            quality=read_output(self.output_url, out["quality_table"]).set_index("series_id"),
            counts=json.loads(runs["counts"].iloc[0]),
            history=pd.read_parquet(self.run_dir() / "history.parquet"),
        )

    def written(self) -> dict[str, int]:
        """Rows in the output tables, wherever the config points them and in the source database (the default
        output); an output database that cannot even be opened holds nothing."""
        found = {}
        for url in {self.output_url, self.source_url}:
            for key in OUTPUTS:
                name = self.config["output"].get(key, OUTPUT_DEFAULTS[key])
                try:
                    rows = read_output(url, name)
                except sa.exc.NoSuchModuleError:
                    continue
                if rows is not None and len(rows):
                    found[f"{safe_url(url)} {name}"] = len(rows)
        return found

    def expand(self, pattern: str) -> str:
        """A case's message pattern with the scenario's own paths and URLs filled in, escaped."""
        for token, value in (
            ("{config}", str(self.config_path)),
            ("{source}", safe_url(self.source_url)),
            ("{run}", str(self.run_dir())),
            ("{work}", str(self.tmp_path / "work")),
        ):
            pattern = pattern.replace(token, re.escape(value))
        return pattern


def run_stages(config_path: str, as_of: str | None) -> None:
    """The nightly flow's stages up to publish, with the forecast the gate falls back to."""
    cfg = load_config(config_path)
    as_of_iso = resolve_as_of.fn(cfg, as_of)
    extracted = extract.fn(cfg, as_of_iso)
    cleaned = clean.fn(cfg, extracted.path, as_of_iso)
    forecasts = forecast_all(cfg, None, cleaned)
    counts = {"extract": dataclasses.asdict(extracted), "clean": dataclasses.asdict(cleaned)}
    run = build_run_record(
        cfg, run_id=uuid.uuid4().hex, as_of=as_of_iso, started_at=as_of_iso, model_version="seasonal_naive",
        metrics={}, timings={}, counts=counts,
    )  # fmt: skip
    run_publish(cfg, forecasts.path, run, cleaned.quality_path)


def read_output(url: str, name: str) -> pd.DataFrame | None:
    schema, table = split_table(name)
    engine = sa.create_engine(url)
    try:
        if not sa.inspect(engine).has_table(table, schema=schema):
            return None
        return pd.read_sql_table(table, engine, schema=schema)
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Scenario], None]
    error: type[BaseException] | None = None
    message: str = ""  # regex for the whole message; {config}, {source}, {run}, {work} are filled in
    skipped: Mapping[str, str] = field(default_factory=dict)  # series -> reason in the quality table
    counted: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # series -> quality counts
    check: Callable[[Scenario, Outcome | None], None] | None = None
    flow: bool = False


def config(**sections: dict) -> Callable[[Scenario], None]:
    def setup(sc: Scenario) -> None:
        for section, values in sections.items():
            sc.set(section, **values)

    return setup


def as_of(value: str | None) -> Callable[[Scenario], None]:
    def setup(sc: Scenario) -> None:
        sc.as_of = value

    return setup


def rows_of(frame: pd.DataFrame, sid: str) -> pd.Index:
    return frame.index[frame["series_id"] == sid]


def history_of(out: Outcome, sid: str) -> pd.Series:
    rows = out.history[out.history["series_id"] == sid]
    return rows.set_index("ts")["value"]


def hour(i: int) -> pd.Timestamp:
    return pd.Timestamp("2016-07-01", tz="UTC") + pd.Timedelta(hours=i)


def seasonal_naive_yhat(values: np.ndarray) -> np.ndarray:
    """The median forecast of seasonal naive with the config's season of 24 steps."""
    return np.asarray(values, dtype=np.float64)[-24:][:HORIZON]


def forecast_of(out: Outcome, sid: str) -> np.ndarray:
    rows = out.forecasts[out.forecasts["series_id"] == sid]
    return rows.assign(ts=pd.to_datetime(rows["ts"], utc=True)).sort_values("ts")["yhat"].to_numpy()


# --- setups and checks that need more than one line


def extra_table_x(sc: Scenario) -> None:
    """A table the injected SQL would drop: it must still be there afterwards."""
    sc.after_write.append(lambda: write_table(sc.source_url, "x", pd.DataFrame({"a": [1]})))


def tables_survive(sc: Scenario, out: Outcome | None) -> None:
    engine = sa.create_engine(sc.source_url)
    assert {"readings", "x"} <= set(sa.inspect(engine).get_table_names())
    engine.dispose()


def sql_in_source_table(sc: Scenario) -> None:
    extra_table_x(sc)
    sc.set("source", table="readings; drop table x")


def sql_in_column(sc: Scenario) -> None:
    extra_table_x(sc)
    sc.set("source", target='value"--')


def sql_in_output_table(sc: Scenario) -> None:
    extra_table_x(sc)
    sc.set("output", table='forecasts"; drop table x; --')


def empty(sc: Scenario) -> None:
    sc.frame = base().iloc[:0]


def empty_and_latest(sc: Scenario) -> None:
    empty(sc)
    sc.as_of = None


def all_text(sc: Scenario) -> None:
    sc.frame["value"] = "high"


def some_text(sc: Scenario) -> None:
    sc.frame = sc.frame.astype({"value": object})
    sc.frame.loc[rows_of(sc.frame, "HUFL")[40], "value"] = "n/a"
    sc.frame.loc[rows_of(sc.frame, "HULL")[41], "value"] = "--"


def some_text_is_imputed(sc: Scenario, out: Outcome) -> None:
    assert out.counts["extract"]["non_numeric"] == {"value": 2}
    source = base().set_index(["series_id", "ts"])["value"]
    for sid, i in (("HUFL", 40), ("HULL", 41)):
        neighbours = [source[sid, f"{hour(j):%Y-%m-%d %H:%M:%S}"] for j in (i - 1, i + 1)]
        assert history_of(out, sid)[hour(i)] == pytest.approx(np.mean(neighbours))


def bad_timestamp(sc: Scenario) -> None:
    sc.frame.loc[rows_of(sc.frame, "OT")[7], "ts"] = "yesterday-ish"


def all_nan(sc: Scenario) -> None:
    sc.frame.loc[rows_of(sc.frame, "OT"), "value"] = np.nan


def single_row(sc: Scenario) -> None:
    lonely = pd.DataFrame({"series_id": ["lonely"], "ts": ["2016-07-04 23:00:00"], "value": [1.0]})
    sc.frame = pd.concat([sc.frame, lonely], ignore_index=True)


def duplicate_key(sc: Scenario) -> None:
    row = sc.frame.loc[[rows_of(sc.frame, "HUFL")[10]]].assign(value=100.0)
    sc.frame = pd.concat([sc.frame, row], ignore_index=True)


def duplicates_are_averaged(sc: Scenario, out: Outcome) -> None:
    original = base().loc[rows_of(base(), "HUFL")[10], "value"]
    assert history_of(out, "HUFL")[hour(10)] == pytest.approx((original + 100.0) / 2)


def future_rows(sc: Scenario) -> None:
    later = pd.date_range("2016-07-05 00:00", periods=5, freq="h").strftime("%Y-%m-%d %H:%M:%S")
    sc.frame = pd.concat(
        [sc.frame, pd.DataFrame({"series_id": "OT", "ts": later, "value": 1e6})], ignore_index=True
    )


def future_rows_are_not_used(sc: Scenario, out: Outcome) -> None:
    assert out.counts["extract"]["rows"] == 3 * HOURS and out.counts["extract"]["future_rows"] == 0
    assert (out.history.groupby("series_id")["ts"].max() == AS_OF_TS).all()
    assert (out.quality["raw_rows"] == HOURS).all()
    ot = base().loc[rows_of(base(), "OT"), "value"].to_numpy()
    assert forecast_of(out, "OT") == pytest.approx(seasonal_naive_yhat(ot), rel=1e-6)


SPIKE_ROW = 50


def spike(sc: Scenario) -> None:
    sc.frame.loc[rows_of(sc.frame, "HUFL")[SPIKE_ROW], "value"] *= 100


def spike_is_kept(sc: Scenario, out: Outcome) -> None:
    original = base().loc[rows_of(base(), "HUFL")[SPIKE_ROW], "value"]
    assert history_of(out, "HUFL")[hour(SPIKE_ROW)] == pytest.approx(100 * original)


def spike_clipped(sc: Scenario) -> None:
    spike(sc)
    sc.set("data", outliers="clip")


def spike_is_clipped(sc: Scenario, out: Outcome) -> None:
    values = sc.frame.loc[rows_of(sc.frame, "HUFL"), "value"].to_numpy()
    median = np.median(values)
    bound = median + 6.0 * MAD_SCALE * np.median(np.abs(values - median))  # outlier_threshold's default
    assert history_of(out, "HUFL")[hour(SPIKE_ROW)] == pytest.approx(bound)
    assert (history_of(out, "HUFL").drop(hour(SPIKE_ROW)) < bound).all()


SQL_ID = "x'); DROP TABLE readings; --"


def sql_in_series_id(sc: Scenario) -> None:
    extra_table_x(sc)
    sc.frame["series_id"] = sc.frame["series_id"].replace({"OT": SQL_ID})


def sql_id_is_data(sc: Scenario, out: Outcome) -> None:
    tables_survive(sc, out)
    assert SQL_ID in set(out.forecasts["series_id"]) and SQL_ID in out.quality.index


# Composed and decomposed forms of the same text are different ids and must stay different.
UNICODE_IDS = {
    "HUFL": unicodedata.normalize("NFC", "café Zürich"),
    "HULL": unicodedata.normalize("NFD", "café Zürich"),
    "OT": "東京/温度 🌡️ Ω",
}


def unicode_ids(sc: Scenario) -> None:
    sc.frame["series_id"] = sc.frame["series_id"].map(UNICODE_IDS)


def unicode_ids_on_postgres(sc: Scenario) -> None:
    unicode_ids(sc)
    postgres_output(sc)


def unicode_round_trips(sc: Scenario, out: Outcome) -> None:
    ids = sorted(UNICODE_IDS.values())
    assert len(set(ids)) == 3
    assert sorted(out.forecasts["series_id"].unique()) == ids
    assert sorted(out.quality.index) == ids
    assert sorted(out.history["series_id"].unique()) == ids


# The same instants as the base rows, written with four different offsets (or none).
ZONES = (("", 0), ("Z", 0), ("+02:00", 2), ("-05:00", -5))


def mixed_zones(sc: Scenario) -> None:
    rows = rows_of(sc.frame, "OT")
    for k, i in enumerate(rows):
        suffix, hours = ZONES[k % len(ZONES)]
        local = hour(k) + pd.Timedelta(hours=hours)
        sc.frame.loc[i, "ts"] = f"{local:%Y-%m-%dT%H:%M:%S}{suffix}"


def zones_land_on_utc_steps(sc: Scenario, out: Outcome) -> None:
    ot = base().loc[rows_of(base(), "OT"), "value"].to_numpy()
    assert history_of(out, "OT").index.equals(pd.date_range(hour(0), AS_OF_TS, freq="h"))
    assert history_of(out, "OT").to_numpy() == pytest.approx(ot)


def negative_sales(sc: Scenario) -> None:
    sc.set("data", non_negative=True)
    sc.frame.loc[rows_of(sc.frame, "HUFL")[[20, 60]], "value"] = [-3.0, -0.5]


def negatives_are_gone(sc: Scenario, out: Outcome) -> None:
    assert (out.history["value"] >= 0).all() and (out.forecasts["yhat_lower"] >= 0).all()


def long_gap(sc: Scenario) -> None:
    sc.frame = sc.frame.drop(index=rows_of(sc.frame, "HUFL")[30:40])  # 10 steps, max_gap is 6


def history_starts_after_the_gap(sc: Scenario, out: Outcome) -> None:
    assert history_of(out, "HUFL").index[0] == hour(40)


def stale_series(sc: Scenario) -> None:
    sc.frame = sc.frame.drop(index=rows_of(sc.frame, "OT")[-10:])


def short_series(sc: Scenario) -> None:
    ot = sc.frame.loc[rows_of(sc.frame, "OT")]
    sc.frame = pd.concat([sc.frame, ot.tail(20).assign(series_id="short")], ignore_index=True)


def rows_without_keys(sc: Scenario) -> None:
    keyless = pd.DataFrame(
        {"series_id": [None, "OT"], "ts": ["2016-07-02 00:00:00", None], "value": [1.0, 2.0]}
    )
    sc.frame = pd.concat([sc.frame, keyless], ignore_index=True)


def keyless_rows_are_counted(sc: Scenario, out: Outcome) -> None:
    assert out.counts["extract"]["dropped_without_key"] == 2
    assert out.counts["extract"]["rows"] == 3 * HOURS


def postgres_output(sc: Scenario, *, role: str | None = None) -> str:
    """Output tables in a fresh PostgreSQL schema, dropped after the test; returns the schema."""
    url = sc.pg_url()
    schema = f"lstmcast_bad_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    engine.dispose()

    def drop() -> None:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop schema "{schema}" cascade'))
            if role:
                conn.execute(sa.text(f'drop owned by "{role}"'))
                conn.execute(sa.text(f'drop role "{role}"'))
        engine.dispose()

    sc.request.addfinalizer(drop)
    sc.set("output", url=url, **{key: f"{schema}.{name}" for key, name in OUTPUT_DEFAULTS.items()})
    return schema


def read_only_postgres(sc: Scenario) -> None:
    """The output tables exist, and the pipeline's role may read them but not insert."""
    role = f"lstmcast_reader_{uuid.uuid4().hex[:12]}"
    schema = postgres_output(sc, role=role)
    url = sc.pg_url()
    metadata = sa.MetaData()
    forecast_table(f"{schema}.forecasts", metadata)
    runs_table(f"{schema}.lstmcast_runs", metadata)
    quality_table(f"{schema}.lstmcast_quality", metadata, COUNT_COLUMNS)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        metadata.create_all(conn)
        conn.execute(sa.text(f'create role "{role}" login'))
        conn.execute(sa.text(f'grant usage on schema "{schema}" to "{role}"'))
        conn.execute(sa.text(f'grant select on all tables in schema "{schema}" to "{role}"'))
    engine.dispose()
    reader = sa.make_url(url).set(username=role).render_as_string(hide_password=False)
    sc.set("output", url=reader)


def read_only_sqlite(sc: Scenario) -> None:
    if os.geteuid() == 0:
        pytest.skip("file permissions do not bind root; read_only_output_postgres covers a read-only output")
    path = sc.tmp_path / "source.db"
    sc.after_write.append(lambda: path.chmod(0o444))
    sc.request.addfinalizer(lambda: path.chmod(0o644))


FIXED = uuid.UUID(int=0xD15C)


def disk_full_in_clean(sc: Scenario) -> None:
    """history.parquet's temp file is a link to /dev/full: the kernel's own ENOSPC, not a stand-in."""
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    sc.monkeypatch.setattr(tasks.files, "uuid", SimpleNamespace(uuid4=lambda: FIXED))
    folder = sc.run_dir()
    folder.mkdir(parents=True)
    (folder / f".history.parquet.{FIXED.hex}.tmp").symlink_to("/dev/full")


def clean_left_no_file(sc: Scenario, out: None) -> None:
    assert sorted(p.name for p in sc.run_dir().iterdir()) == ["extract.parquet"]


def disk_full_in_extract(sc: Scenario) -> None:
    def full(self, table, row_group_size=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    sc.monkeypatch.setattr(pq.ParquetWriter, "write_table", full)


def extract_left_no_file(sc: Scenario, out: None) -> None:
    pipeline = pipeline_dir(load_config(sc.config_path))
    assert [p for p in pipeline.rglob("*") if not p.is_dir()] == []


def not_toml(sc: Scenario) -> None:
    sc.after_write.append(lambda: sc.config_path.write_text('[source]\nurl = "sqlite:///x.db\n'))


CONFIG_PREFIX = "{config}: "
SA_ERROR = r"\n.*"  # SQLAlchemy adds the statement and a link on the lines after the database's message
SHORT = "{n} usable steps < lookback + horizon = 36"

CASES = [
    # --- the config file
    Case("config_not_toml", not_toml, ConfigError,
         r"{config}: not valid TOML: Illegal character '\\n' \(at line 2, column 22\)"),
    Case("config_negative_horizon", config(forecast={"horizon": -1}), ConfigError,
         CONFIG_PREFIX + r"forecast.horizon must be a positive integer, got -1$"),
    Case("config_zero_lookback", config(forecast={"lookback": 0}), ConfigError,
         CONFIG_PREFIX + r"forecast.lookback must be a positive integer, got 0$"),
    Case("config_unknown_freq", config(data={"freq": "fortnightly"}), ConfigError,
         CONFIG_PREFIX + r"'data.freq': data.freq must be a pandas offset alias such as 'h', 'D' or '15min' "
         r"with a positive step, got 'fortnightly'"),
    Case("config_zero_freq", config(data={"freq": "0h"}), ConfigError,
         CONFIG_PREFIX + r"'data.freq': data.freq must be a pandas offset alias such as 'h', 'D' or '15min' "
         r"with a positive step, got '0h'"),
    Case("config_unknown_key", config(source={"tabel": "readings"}), ConfigError,
         CONFIG_PREFIX + r"unknown key 'source.tabel'"),
    Case("config_string_for_int", config(forecast={"horizon": "12"}), ConfigError,
         CONFIG_PREFIX + r"forecast.horizon must be a positive integer, got '12'$"),
    Case("config_bad_url", config(source={"url": "readings.db"}), ConfigError,
         CONFIG_PREFIX + r"'source.url': source.url is not a valid SQLAlchemy URL "
         r"\(expected dialect\+driver://user:password@host:port/database\) \(got 'readings.db'\)"),
    Case("config_sql_in_table_name", sql_in_source_table, ConfigError,
         CONFIG_PREFIX + r"'source.table': source.table must be a table name, optionally schema-qualified, "
         r"got 'readings; drop table x'", check=tables_survive),
    Case("config_sql_in_column_name", sql_in_column, ConfigError,
         CONFIG_PREFIX + r"'source.target': source.target must be a plain column name \(letters, digits, "
         r"underscore\), got 'value\"--'", check=tables_survive),
    Case("config_sql_in_output_table", sql_in_output_table, ConfigError,
         CONFIG_PREFIX + r"'output.table': output.table must be a table name, "
         r"got 'forecasts\"; drop table x; --'", check=tables_survive),
    # --- the databases
    Case("unknown_source_dialect", config(source={"url": "postgresq://reader@db/plant"}), ConfigError,
         CONFIG_PREFIX + r"'source.url': source.url: no SQLAlchemy dialect 'postgresq' is installed "
         r"\(got 'postgresq://reader@db/plant'\)"),
    Case("unknown_output_dialect", config(output={"url": "postgresq://writer:pw@db/plant"}), ConfigError,
         CONFIG_PREFIX + r"'output.url': output.url: no SQLAlchemy dialect 'postgresq' is installed "
         r"\(got 'postgresq://writer:\*\*\*@db/plant'\)"),
    Case("missing_table", config(source={"table": "readngs"}), LookupError,
         r"table 'readngs' does not exist in {source}"),
    Case("missing_column", config(source={"target": "valeu"}), LookupError,
         r"table 'readings' has no column 'valeu' \(configured as source.target\); "
         r"its columns are \['series_id', 'ts', 'value'\]"),
    Case("empty_source_table", empty, ValueError,
         r"table 'readings' has no rows with 'ts' <= 2016-07-04T23:00:00\+00:00"),
    Case("empty_source_table_default_as_of", empty_and_latest, ValueError,
         r"table 'readings' has no rows with a value in column 'value'"),
    Case("read_only_output_postgres", read_only_postgres, sa.exc.ProgrammingError,
         r"\(psycopg.errors.InsufficientPrivilege\) permission denied for table forecasts" + SA_ERROR),
    Case("read_only_output_sqlite", read_only_sqlite, sa.exc.OperationalError,
         r"\(sqlite3.OperationalError\) attempt to write a readonly database" + SA_ERROR),
    Case("disk_full_in_extract", disk_full_in_extract, OSError,
         r"\[Errno 28\] cannot write {work}/sensors/store/\.fresh\.[0-9a-f]{32}/"
         r"\.2016-07\.parquet\.[0-9a-f]{32}\.tmp: No space left on device", check=extract_left_no_file),
    Case("disk_full_in_clean", disk_full_in_clean, OSError,
         r"\[Errno 28\] cannot write {run}/history\.parquet: No space left on device",
         check=clean_left_no_file),
    # --- as-of
    Case("as_of_before_any_data", as_of("2001-01-01"), ValueError,
         r"table 'readings' has no rows with 'ts' <= 2001-01-01T00:00:00\+00:00"),
    Case("as_of_not_a_timestamp", as_of("soon"), ValueError,
         r"as_of 'soon' is not a timestamp \(expected e.g. 2018-06-26 or 2018-06-26T19:00\)"),
    Case("future_rows_beyond_as_of", future_rows, check=future_rows_are_not_used),
    # --- values and timestamps
    Case("value_column_all_text", all_text, TypeError,
         r"table 'readings': column 'value' holds no numeric values \(first value: 'high'\)"),
    Case("value_column_some_text", some_text, check=some_text_is_imputed,
         counted={"HUFL": {"non_numeric": 1, "missing": 1, "imputed": 1},
                  "HULL": {"non_numeric": 1, "missing": 1, "imputed": 1}}),
    Case("unparseable_timestamp", bad_timestamp, ValueError,
         r"table 'readings': column 'ts' has a value that is not a timestamp: 'yesterday-ish'"),
    Case("mixed_time_zones", mixed_zones, check=zones_land_on_utc_steps,
         counted={"OT": {"tz_normalized": 72, "off_grid": 0, "duplicates": 0, "missing": 0}}),  # 48+24
    Case("rows_without_series_or_timestamp", rows_without_keys, check=keyless_rows_are_counted),
    Case("duplicate_keys", duplicate_key, check=duplicates_are_averaged,
         counted={"HUFL": {"duplicates": 1, "raw_rows": HOURS + 1, "rows": HOURS}}),
    Case("outlier_100x_kept", spike, check=spike_is_kept, counted={"HUFL": {"outliers_clipped": 0}}),
    Case("outlier_100x_clipped", spike_clipped, check=spike_is_clipped,
         counted={"HUFL": {"outliers_clipped": 1}, "HULL": {"outliers_clipped": 0}}),
    Case("negative_values_non_negative", negative_sales, check=negatives_are_gone,
         counted={"HUFL": {"negative": 2, "missing": 2, "imputed": 2}}),
    Case("gap_longer_than_max_gap", long_gap, check=history_starts_after_the_gap,
         counted={"HUFL": {"missing": 10, "imputed": 0, "dropped_before_gap": 40, "rows": 56}}),
    # --- series
    Case("all_nan_series", all_nan, skipped={"OT": "no values in the target column"}),
    Case("single_row_series", single_row, skipped={"lonely": SHORT.format(n=1)}),
    Case("stale_series", stale_series,
         skipped={"OT": "last value at 2016-07-04T13:00:00+00:00 is 10 steps before as_of (max_gap 6)"}),
    Case("series_shorter_than_lookback_plus_horizon", short_series, skipped={"short": SHORT.format(n=20)},
         flow=True),
    Case("all_series_too_short", config(forecast={"lookback": 200}), ValueError,
         r"no series is usable for forecasting after cleaning table 'readings' \("
         + "; ".join(f"{sid}: 96 usable steps < lookback \\+ horizon = 212" for sid in SERIES) + r"\)",
         flow=True),
    Case("sql_in_series_id", sql_in_series_id, check=sql_id_is_data),
    Case("unicode_series_ids", unicode_ids, check=unicode_round_trips, flow=True),
    Case("unicode_series_ids_postgres", unicode_ids_on_postgres, check=unicode_round_trips),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
# The plot's font has no CJK glyphs: unicode_series_ids' plot labels show boxes; the data is unaffected.
@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")
def test_bad_input(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
):
    sc = Scenario(tmp_path, monkeypatch, request)
    case.setup(sc)
    sc.write_inputs()

    if case.error is not None:
        with pytest.raises(case.error) as err:
            sc.run(case.flow)
        assert re.fullmatch(sc.expand(case.message), str(err.value), re.DOTALL), str(err.value)
        assert sc.written() == {}  # raised before anything was published
        if case.check:
            case.check(sc, None)
        return

    out = sc.run(case.flow)
    published = sc.series() - set(case.skipped)
    assert sorted(out.forecasts["series_id"].unique()) == sorted(published)
    assert (out.forecasts.groupby("series_id").size() == HORIZON).all()
    assert out.forecasts["yhat"].notna().all()
    assert sorted(out.quality.index) == sorted(sc.series())  # every series has a row, skipped ones too
    skipped = out.quality[out.quality["status"] == "skipped"]
    assert skipped["reason"].to_dict() == dict(case.skipped)
    assert out.counts["quality"].get("skipped", 0) == len(case.skipped)
    for sid, counts in case.counted.items():
        assert out.quality.loc[sid, list(counts)].to_dict() == dict(counts), sid
    if case.check:
        case.check(sc, out)

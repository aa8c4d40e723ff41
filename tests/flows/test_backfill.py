"""The backfill flow through Prefect on real SQLite databases."""

import hashlib
import re
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import tomli_w
from prefect.client.orchestration import get_client
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from flows.backfill import BackfillFailed, backfill_dates, backfill_forecasts, date_runner, future_outcome
from tasks.config import load_config
from tasks.extract import STORE_DIR, WATERMARK_FILE, run_extract
from tasks.files import pipeline_dir, run_dir
from tasks.parsing import parse_as_of
from tests.helpers import sensor_config_dict, sensor_slice, write_table

DAYS = ["2016-07-14T00:00:00+00:00", "2016-07-15T00:00:00+00:00", "2016-07-16T00:00:00+00:00"]
KEY = ["pipeline", "as_of", "series_id", "ts"]
VALUES = ["yhat", "yhat_lower", "yhat_upper"]


def write_config(path: Path, url: str, data_dir: Path) -> str:
    path.write_bytes(tomli_w.dumps(sensor_config_dict(url, data_dir)).encode())
    return str(path)


@pytest.fixture
def config_path(sensor_db, tmp_path):
    return write_config(tmp_path / "sensors.toml", sensor_db, tmp_path / "work")


def read_table(url: str, table: str, as_of: str | None = None) -> pd.DataFrame:
    engine = sa.create_engine(url)
    frame = pd.read_sql(f"select * from {table}", engine)
    engine.dispose()
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True)
    if as_of is not None:
        frame = frame[frame["as_of"] == pd.Timestamp(as_of)]
    return frame.sort_values([c for c in KEY if c in frame.columns]).reset_index(drop=True)


def most_at_once(flow_run_ids: list[str]) -> int:
    """The largest number of these flow runs that were running at the same moment."""
    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(run_id) for run_id in flow_run_ids]
    events = sorted([(r.start_time, 1) for r in runs] + [(r.end_time, -1) for r in runs])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def parent_flow_run_ids(flow_run_ids: list[str]) -> set[str]:
    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(run_id) for run_id in flow_run_ids]
        return {str(client.read_task_run(run.parent_task_run_id).flow_run_id) for run in runs}


def test_backfill_publishes_one_as_of_set_per_date_and_reruns_add_nothing(config_path, sensor_db):
    state = backfill_forecasts(config_path, "2016-07-14", "2016-07-16", concurrency=2, return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert [d["as_of"] for d in summary["dates"]] == DAYS
    assert all(d["status"] == "Completed" and d["rows_published"] == 3 * 12 for d in summary["dates"])
    assert all(d["model_version"].startswith("lstm-") and d["error"] is None for d in summary["dates"])
    assert (summary["completed"], summary["failed"], summary["rows_published"]) == (3, [], 108)

    first = read_table(sensor_db, "forecasts")
    assert first.groupby("as_of").size().to_dict() == {pd.Timestamp(d): 36 for d in DAYS}
    assert set(first["pipeline"]) == {"sensors"} and first["yhat"].notna().all()
    for as_of, rows in first.groupby("as_of"):  # each set forecasts the 12 hours after its own as-of
        assert pd.to_datetime(rows["ts"], utc=True).min() == as_of + pd.Timedelta(hours=1)

    # The nightly runs are subflows of this backfill, run by worker processes, at most two at a time.
    nightly_ids = [d["flow_run_id"] for d in summary["dates"]]
    assert parent_flow_run_ids(nightly_ids) == {str(state.state_details.flow_run_id)}
    assert most_at_once(nightly_ids) <= 2
    assert isinstance(date_runner(2, 3), ProcessPoolTaskRunner)
    assert isinstance(date_runner(1, 3), ThreadPoolTaskRunner)

    again = backfill_forecasts(config_path, "2016-07-14", "2016-07-16", concurrency=1)
    part = backfill_forecasts(config_path, "2016-07-15T00:00", "2016-07-16T00:00", concurrency=1)
    assert [d["as_of"] for d in part["dates"]] == DAYS[1:]
    assert [d["rows_replaced"] for d in again["dates"] + part["dates"]] == [36] * 5
    after = read_table(sensor_db, "forecasts")
    assert len(after) == 108  # replaced, never added
    pd.testing.assert_frame_equal(after[KEY], first[KEY])
    # The earliest as-of, which no earlier model can serve, keeps its values (training is deterministic,
    # see the planted-value test, and the nightly stages' cache may serve the rerun). A later one may be
    # served by the champion of an earlier as-of, depending on which dates had finished first, but never
    # by a model trained for a later as-of.
    earliest = after["as_of"] == pd.Timestamp(DAYS[0])
    pd.testing.assert_frame_equal(after.loc[earliest, VALUES], first.loc[earliest, VALUES])
    trained = read_table(sensor_db, "lstmcast_models").set_index("version")
    for frame in (first, after):
        assert (trained["as_of"][frame["model_version"]].to_numpy() <= frame["as_of"].to_numpy()).all()
    # the champion is the latest as-of's winner, whichever date finished last
    champion = trained[trained["status"] == "champion"]
    assert (
        len(champion) == 1
        and champion["as_of"].iloc[0] == trained["as_of"][trained["promoted_at"].notna()].max()
    )


def store_state(cfg) -> dict[str, str]:
    folder = pipeline_dir(cfg)
    files = [folder / WATERMARK_FILE, *sorted((folder / STORE_DIR).glob("*.parquet"))]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_a_value_planted_after_the_earliest_as_of_never_reaches_it(sensor_db, tmp_path):
    planted_url = f"sqlite:///{tmp_path / 'planted.db'}"
    frame = sensor_slice()
    spike = (frame["series_id"] == "OT") & (frame["ts"] == "2016-07-14 12:00:00")
    assert spike.sum() == 1
    frame.loc[spike, "value"] = 1e6
    write_table(planted_url, "readings", frame)
    planted = write_config(tmp_path / "planted.toml", planted_url, tmp_path / "work")
    clean = write_config(tmp_path / "clean.toml", sensor_db, tmp_path / "clean-work")

    # An incremental store whose watermark lies before the backfill: the nightly flow would update it.
    cfg = load_config(planted)
    run_extract(cfg, parse_as_of("2016-07-10"))
    before = store_state(cfg)

    backfill_forecasts(planted, "2016-07-14", "2016-07-15", concurrency=2)
    backfill_forecasts(clean, "2016-07-14", "2016-07-14", concurrency=1)

    assert store_state(cfg) == before  # the store and its watermark were neither used nor moved
    first = DAYS[0]
    ours, theirs = read_table(planted_url, "forecasts", first), read_table(sensor_db, "forecasts", first)
    assert len(ours) == 36
    # Equal to the last bit: the two runs share no files or cache, one ran in a worker process, the other
    # in this one, so training is deterministic too.
    pd.testing.assert_frame_equal(ours[KEY + VALUES], theirs[KEY + VALUES])
    quality = [read_table(url, "lstmcast_quality", first) for url in (planted_url, sensor_db)]
    pd.testing.assert_frame_equal(*(q.drop(columns="run_id") for q in quality))
    histories = [
        pd.read_parquet(run_dir(load_config(path), parse_as_of(first)) / "history.parquet")
        for path in (planted, clean)
    ]
    pd.testing.assert_frame_equal(*histories)

    later = pd.read_parquet(run_dir(cfg, parse_as_of(DAYS[1])) / "extract.parquet")
    spike_ts = pd.Timestamp("2016-07-14 12:00", tz="UTC")
    at_spike = later[(later["series_id"] == "OT") & (later["ts"] == spike_ts)]
    assert at_spike["value"].tolist() == [1e6]
    later_history = pd.read_parquet(run_dir(cfg, parse_as_of(DAYS[1])) / "history.parquet")
    assert later_history["value"].max() == 1e6  # and the later as-of trained on it


def test_a_failed_date_does_not_stop_the_others_and_fails_the_backfill(config_path, sensor_db):
    # 2016-06-30 is before the first reading: that date fails; 2016-07-15 still runs, after it.
    state = backfill_forecasts(config_path, "2016-06-30", "2016-07-15", every="15D", concurrency=1,
                               return_state=True)  # fmt: skip
    assert state.is_failed()
    assert "1 of 2 dates failed: 2016-06-30T00:00:00+00:00" in state.message
    assert "no rows with 'ts' <= 2016-06-30T00:00:00+00:00" in state.message
    error = state.result(raise_on_failure=False)
    assert isinstance(error, BackfillFailed)
    assert [(d["as_of"][:10], d["status"], d["rows_published"]) for d in error.summary["dates"]] == [
        ("2016-06-30", "Failed", 0),
        ("2016-07-15", "Completed", 36),
    ]
    assert error.summary["failed"] == ["2016-06-30T00:00:00+00:00"] and error.summary["completed"] == 1
    assert len(read_table(sensor_db, "forecasts", "2016-07-15T00:00:00+00:00")) == 36

    with pytest.raises(BackfillFailed, match="2016-06-30"):
        backfill_forecasts(config_path, "2016-06-30", "2016-06-30", concurrency=1)


POSITIVE = "every must be a positive step such as '1D' or '6h', got "


@pytest.mark.parametrize(
    ("start", "end", "every", "concurrency", "message"),
    [
        ("2016-07-16", "2016-07-14", "1D", 2,
         "start 2016-07-16T00:00:00+00:00 is after end 2016-07-14T00:00:00+00:00"),
        ("2016-07-14", "2016-07-16", "0D", 2, POSITIVE + "'0D'"),
        ("2016-07-14", "2016-07-16", "-1D", 2, POSITIVE + "'-1D'"),
        ("2016-07-14", "2016-07-16", "fortnightly", 2, "every 'fortnightly' is not a pandas offset alias"),
        ("2016-07-14", "2016-07-16", "1D", 0, "concurrency must be a whole number >= 1, got 0"),
        ("2016-07-14", "2016-07-16", "1D", -3, "concurrency must be a whole number >= 1, got -3"),
        ("July 14th-ish", "2016-07-16", "1D", 2, "as_of 'July 14th-ish' is not a timestamp"),
        ("2016-07-14 01:00", "2016-07-14 23:00", "MS", 2, "no date between start 2016-07-14T01:00:00+00:00"),
    ],
)  # fmt: skip
def test_invalid_parameters_fail_before_any_date_runs(config_path, sensor_db, start, end, every, concurrency,
                                                      message):  # fmt: skip
    with pytest.raises(ValueError, match=re.escape(message)):
        backfill_forecasts(config_path, start, end, every=every, concurrency=concurrency)
    assert not sa.inspect(sa.create_engine(sensor_db)).has_table("forecasts")


def test_dates_follow_the_every_grid():
    assert [d.isoformat() for d in backfill_dates("2016-07-14", "2016-07-16 12:00", "1d")] == DAYS
    assert len(backfill_dates("2016-07-14", "2016-07-15", "6h")) == 5
    assert len(backfill_dates("2016-07-14", "2016-07-28", "1 days")) == 15
    assert [d.day for d in backfill_dates("2016-05-15", "2016-08-15", "MS")] == [1, 1, 1]


class DeadFuture:
    """A date's future whose wait raises, as one does when its worker process died."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def wait(self) -> None:
        raise self.exc


def test_a_date_whose_worker_died_is_reported_crashed_and_any_other_error_is_raised():
    from concurrent.futures.process import BrokenProcessPool

    died = BrokenProcessPool("A process in the process pool was terminated abruptly")
    outcome = future_outcome("2016-07-14T00:00:00+00:00", DeadFuture(died))
    assert (outcome["status"], outcome["rows_published"]) == ("Crashed", 0)
    assert outcome["error"] == "BrokenProcessPool: A process in the process pool was terminated abruptly"
    with pytest.raises(KeyError, match="'a bug'"):
        future_outcome("2016-07-14T00:00:00+00:00", DeadFuture(KeyError("a bug")))

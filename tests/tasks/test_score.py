import json
import math
import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from prefect import flow, get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, TaskRunFilter
from prefect.client.schemas.sorting import ArtifactSort

from lstm_model.metrics import mase
from tasks.publish import write_forecasts
from tasks.score import accuracy_artifact_rows, insample_scales, score, score_forecasts
from tasks.summary import build_run_record

START = pd.Timestamp("2020-01-01 00:00", tz="UTC")
# Hourly actuals 00:00..07:00. Lag-2 differences of a: 2, 2, 4, 4, 2, 2, so its seasonal-naive scale is 2
# up to 03:00 and 3 up to 05:00; b is flat, so its MASE is undefined and left out of the mean.
ACTUALS = {"a": [1.0, 2.0, 3.0, 4.0, 7.0, 8.0, 9.0, 10.0], "b": [5.0] * 8}
SEASON = 2
AS_OF_1, AS_OF_2, AS_OF_3 = (START + pd.Timedelta(hours=h) for h in (3, 5, 7))


def at(hour: int) -> pd.Timestamp:
    return START + pd.Timedelta(hours=hour)


def history(actuals: dict[str, list[float]] = ACTUALS, hours: int = 8) -> pd.DataFrame:
    """Shaped like clean's history parquet: series_id, ts, the target column `value`, a covariate."""
    return pd.concat(
        pd.DataFrame({"series_id": sid, "ts": pd.date_range(START, periods=hours, freq="h"),
                      "value": values[:hours], "temp": 20.0})
        for sid, values in actuals.items()
    )  # fmt: skip


def forecast_frame(points: dict[str, dict[int, float]], width: float = 1.0) -> pd.DataFrame:
    """{series: {hour: yhat}} with the interval yhat +- width."""
    rows = [
        {
            "series_id": sid,
            "ts": at(hour),
            "yhat": yhat,
            "yhat_lower": yhat - width,
            "yhat_upper": yhat + width,
        }
        for sid, by_hour in points.items()
        for hour, yhat in by_hour.items()
    ]
    return pd.DataFrame(rows)


# as of 03:00: errors (y - yhat) a: 1, 0, -2 and b: 0, 1, 0; inside +-1: 5 of 6
FORECAST_1 = forecast_frame({"a": {4: 6.0, 5: 8.0, 6: 11.0}, "b": {4: 5.0, 5: 4.0, 6: 5.0}})
# as of 05:00: errors a: 0, -6 and b: 0, -2; 08:00 has no actual yet; b at 06:00 has no lower bound
FORECAST_2 = forecast_frame({"a": {6: 9.0, 7: 16.0, 8: 1.0}, "b": {6: 5.0, 7: 7.0, 8: 1.0}})
FORECAST_2.loc[3, "yhat_lower"] = np.nan
# as of 07:00, the end of the history: nothing of it can be known yet
FORECAST_3 = forecast_frame({"a": {8: 1.0, 9: 1.0}, "b": {8: 1.0, 9: 1.0}})

EXPECTED_1 = {
    "as_of": "2020-01-01T03:00:00+00:00", "model_version": "lstm-v1", "n_series": 2, "n_points": 6,
    "mae": 4 / 6, "rmse": 1.0, "smape": 100 * (2 / 13 + 4 / 20 + 2 / 9) / 6,
    "mase": (3 / 3) / 2,  # a: MAE 1 over scale 2; b: undefined
    "coverage": 5 / 6,
    "first_ts": "2020-01-01T04:00:00+00:00", "last_ts": "2020-01-01T06:00:00+00:00",
}  # fmt: skip
EXPECTED_2 = {
    "as_of": "2020-01-01T05:00:00+00:00", "model_version": "lstm-v2", "n_series": 2, "n_points": 4,
    "mae": 8 / 4, "rmse": math.sqrt(40 / 4), "smape": 100 * (12 / 26 + 4 / 12) / 4,
    "mase": (6 / 2) / 3,  # a: MAE 3 over scale 3
    "coverage": 1 / 3,  # a at 06:00 inside, a and b at 07:00 outside; b at 06:00 has no interval
    "first_ts": "2020-01-01T06:00:00+00:00", "last_ts": "2020-01-01T07:00:00+00:00",
}  # fmt: skip


@dataclass
class Db:
    url: str
    forecasts: str
    runs: str
    accuracy: str

    def publish(self, cfg, frame: pd.DataFrame, as_of: pd.Timestamp, version: str) -> None:
        run = build_run_record(
            cfg, run_id=uuid.uuid4().hex, as_of=as_of.isoformat(), started_at=as_of.isoformat(),
            model_version=version, metrics={}, timings={}, counts={},
        )  # fmt: skip
        write_forecasts(self.url, self.forecasts, self.runs, frame, run)

    def score(self, path, pipeline: str = "sensors"):
        return score_forecasts(self.url, self.forecasts, self.accuracy, pipeline, str(path), SEASON, "value")

    def rows(self) -> pd.DataFrame:
        engine = sa.create_engine(self.url)
        with engine.connect() as conn:
            frame = pd.read_sql(sa.text(f'select * from "{self.accuracy}" order by as_of'), conn)
        engine.dispose()
        return frame


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, sqlite_url):
    if request.param == "sqlite":
        yield Db(sqlite_url, "forecasts", "lstmcast_runs", "lstmcast_accuracy")
        return
    pg_url = request.getfixturevalue("pg_url")
    suffix = uuid.uuid4().hex[:8]
    names = Db(pg_url, f"fc_{suffix}", f"runs_{suffix}", f"acc_{suffix}")
    try:
        yield names
    finally:
        engine = sa.create_engine(pg_url)
        with engine.begin() as conn:
            conn.execute(
                sa.text(f'drop table if exists "{names.forecasts}", "{names.runs}", "{names.accuracy}"')
            )
        engine.dispose()


@pytest.fixture
def published(db, sensor_cfg):
    """Forecasts of three as-ofs of the pipeline, and one of another pipeline that must not be scored."""
    cfg = sensor_cfg()
    db.publish(cfg, FORECAST_1, AS_OF_1, "lstm-v1")
    db.publish(cfg, FORECAST_2, AS_OF_2, "lstm-v2")
    db.publish(cfg, FORECAST_3, AS_OF_3, "lstm-v3")
    db.publish(sensor_cfg(name="other"), FORECAST_1.assign(yhat=0.0), AS_OF_1, "lstm-x")
    return cfg


def check(row: dict, expected: dict) -> None:
    """Every column but scored_at: metrics to the last few bits, the rest exactly."""
    assert set(row) == {*expected, "scored_at"}
    metrics = ("mae", "rmse", "smape", "mase", "coverage")
    assert {k: row[k] for k in metrics} == pytest.approx({k: expected[k] for k in metrics}, rel=1e-12)
    assert {k: row[k] for k in expected if k not in metrics} == {
        k: v for k, v in expected.items() if k not in metrics
    }


def test_earlier_forecasts_are_scored_against_the_actuals(db, published, tmp_path):
    path = tmp_path / "history.parquet"
    history().to_parquet(path)
    result = db.score(path)
    assert (result.scored, result.kept, result.points, result.table) == (2, 0, 10, db.accuracy)
    assert len(result.rows) == 2
    check(result.rows[0], EXPECTED_1)
    check(result.rows[1], EXPECTED_2)
    stored = db.rows()
    assert list(stored["pipeline"]) == ["sensors", "sensors"]
    assert list(stored["model_version"]) == ["lstm-v1", "lstm-v2"]
    assert stored["mae"].tolist() == pytest.approx([4 / 6, 2.0], rel=1e-12)
    assert stored["n_points"].tolist() == [6, 4]


def test_rescoring_replaces_rows_and_never_duplicates(db, published, sensor_cfg, tmp_path):
    path = tmp_path / "history.parquet"
    history().to_parquet(path)
    db.score(path)
    first_scored_at = db.rows()["scored_at"].tolist()

    # a corrected actual: a at 07:00 is 16, exactly as forecast as of 05:00
    corrected = {"a": [*ACTUALS["a"][:7], 16.0], "b": ACTUALS["b"]}
    history(corrected).to_parquet(path)
    result = db.score(path)
    assert (result.scored, result.kept) == (2, 0)
    check(result.rows[0], EXPECTED_1)
    assert result.rows[1]["mae"] == pytest.approx(2 / 4) and result.rows[1]["n_points"] == 4
    stored = db.rows()
    assert len(stored) == 2 and stored["mae"].tolist() == pytest.approx([4 / 6, 0.5])
    assert all(b > a for a, b in zip(first_scored_at, stored["scored_at"], strict=True))

    # as of 03:00 republished under another model: its old score describes forecasts that are gone
    db.publish(published, FORECAST_1.assign(yhat=FORECAST_1["yhat"] + 1.0), AS_OF_1, "seasonal_naive")
    result = db.score(path)
    assert [(r["as_of"], r["model_version"]) for r in result.rows] == [
        ("2020-01-01T03:00:00+00:00", "seasonal_naive"), ("2020-01-01T05:00:00+00:00", "lstm-v2"),
    ]  # fmt: skip
    assert result.rows[0]["mae"] == pytest.approx((0 + 1 + 3 + 1 + 0 + 1) / 6)
    assert len(db.rows()) == 2


def test_a_score_over_fewer_points_does_not_replace_a_fuller_one(db, published, tmp_path):
    path = tmp_path / "history.parquet"
    history().to_parquet(path)
    db.score(path)
    # a backfill of 06:00 knows the actuals up to 06:00 only
    history(hours=7).to_parquet(path)
    result = db.score(path)
    assert (result.scored, result.kept, result.points) == (1, 1, 8)
    check(result.rows[0], EXPECTED_1)  # 6 points again: rescored
    check(result.rows[1], EXPECTED_2)  # 2 points now against 4 before: kept
    assert len(db.rows()) == 2


def test_nothing_to_score_yet_creates_the_table_and_returns_no_rows(db, sensor_cfg, tmp_path):
    db.publish(sensor_cfg(), FORECAST_3, AS_OF_3, "lstm-v3")
    path = tmp_path / "history.parquet"
    history().to_parquet(path)
    result = db.score(path)
    assert (result.scored, result.kept, result.points, result.rows) == (0, 0, 0, [])
    assert db.rows().empty


def test_missing_forecast_table_and_incomplete_accuracy_table_are_refused(sqlite_url, tmp_path):
    path = tmp_path / "history.parquet"
    history().to_parquet(path)
    with pytest.raises(LookupError, match=r"^table 'forecasts' does not exist in sqlite:///.*lstmcast\.db$"):
        score_forecasts(sqlite_url, "forecasts", "lstmcast_accuracy", "sensors", str(path), SEASON, "value")
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table forecasts (x integer)"))
        conn.execute(sa.text("create table lstmcast_accuracy (pipeline text, as_of text, mae real)"))
    engine.dispose()
    with pytest.raises(
        LookupError,
        match=r"^output table 'lstmcast_accuracy' exists but lacks columns \['model_version', 'n_series', "
        r"'n_points', 'rmse', 'smape', 'mase', 'coverage', 'first_ts', 'last_ts', 'scored_at'\]$",
    ):
        score_forecasts(sqlite_url, "forecasts", "lstmcast_accuracy", "sensors", str(path), SEASON, "value")


def test_empty_history_is_refused(sqlite_url, tmp_path):
    path = tmp_path / "history.parquet"
    history().iloc[:0].to_parquet(path)
    with pytest.raises(ValueError, match=r"history\.parquet holds no history to score forecasts against$"):
        score_forecasts(sqlite_url, "forecasts", "lstmcast_accuracy", "sensors", str(path), SEASON, "value")


@pytest.mark.postgres
def test_accuracy_table_types_and_key_on_postgres(pg_url, sensor_cfg, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    db = Db(pg_url, f"fc_{suffix}", f"runs_{suffix}", f"acc_{suffix}")
    engine = sa.create_engine(pg_url)
    try:
        db.publish(sensor_cfg(), FORECAST_1, AS_OF_1, "lstm-v1")
        path = tmp_path / "history.parquet"
        history().to_parquet(path)
        db.score(path)
        with engine.connect() as conn:
            types = dict(
                conn.execute(
                    sa.text(
                        "select column_name, data_type from information_schema.columns where table_name = :t"
                    ),
                    {"t": db.accuracy},
                ).all()
            )
            key = sa.inspect(conn).get_pk_constraint(db.accuracy)["constrained_columns"]
        assert types["as_of"] == "timestamp with time zone" and types["mase"] == "double precision"
        assert types["n_points"] == "bigint" and types["model_version"] == "text"
        assert key == ["pipeline", "as_of", "model_version"]
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop table if exists "{db.forecasts}", "{db.runs}", "{db.accuracy}"'))
        engine.dispose()


def test_insample_scales_follow_the_mase_rules():
    rng = np.random.default_rng(0)
    values = rng.normal(10.0, 3.0, 60)
    lengths = np.array([0, 1, 2, 3, 5, 6, 7, 24, 25, 60])
    scales = insample_scales(values, lengths, season_length=6)
    for n, scale in zip(lengths, scales, strict=True):
        expected = mase(np.array([1.0]), np.array([0.0]), values[:n], 6)  # MAE 1, so MASE = 1 / scale
        assert (math.isnan(scale) and math.isnan(expected)) or 1 / scale == pytest.approx(expected, rel=1e-12)
    assert math.isnan(insample_scales(np.ones(10), np.array([10]), 2)[0])  # flat: MASE undefined
    with pytest.raises(ValueError, match=r"^prefix lengths must be in \[0, 3\], got \[4\]$"):
        insample_scales(values[:3], np.array([4]), 1)
    with pytest.raises(ValueError, match=r"^season_length must be a positive integer, got 0$"):
        insample_scales(values, np.array([4]), 0)


def test_accuracy_artifact_rows_show_the_newest_first_rounded():
    rows = [
        {"as_of": "2020-01-01T03:00:00+00:00", "model_version": "v1", "n_series": 2, "n_points": 6,
         "mae": 0.666666, "rmse": 1.0, "smape": 9.6, "mase": None, "coverage": 0.83333, "first_ts": "x"},
        {"as_of": "2020-01-01T05:00:00+00:00", "model_version": "v2", "n_series": 2, "n_points": 4,
         "mae": 2.0, "rmse": 3.16227766, "smape": 19.87, "mase": 1.0, "coverage": None, "first_ts": "y"},
    ]  # fmt: skip
    assert accuracy_artifact_rows(rows) == [
        {"as_of": "2020-01-01T05:00:00+00:00", "model_version": "v2", "n_series": 2, "n_points": 4,
         "mae": 2.0, "rmse": 3.1623, "smape": 19.87, "mase": 1.0, "coverage": None},
        {"as_of": "2020-01-01T03:00:00+00:00", "model_version": "v1", "n_series": 2, "n_points": 6,
         "mae": 0.6667, "rmse": 1.0, "smape": 9.6, "mase": None, "coverage": 0.8333},
    ]  # fmt: skip
    assert [r["model_version"] for r in accuracy_artifact_rows(rows, limit=1)] == ["v2"]


def test_score_task_writes_the_accuracy_over_time_artifact(sensor_cfg, sqlite_url, tmp_path):
    name = f"score-{uuid.uuid4().hex[:8]}"
    cfg = sensor_cfg(name=name, output={"accuracy_table": "acc"})
    db = Db(sqlite_url, "forecasts", "lstmcast_runs", "acc")
    db.publish(cfg, FORECAST_1, AS_OF_1, "lstm-v1")
    db.publish(cfg, FORECAST_2, AS_OF_2, "lstm-v2")
    path = tmp_path / "history.parquet"
    history().to_parquet(path)

    @flow
    def nightly():
        return score(cfg, str(path))

    result = nightly()
    assert result.scored == 2 and len(db.rows()) == 2
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{name}-accuracy-over-time"])),
            flow_run_filter=FlowRunFilter(),
            task_run_filter=TaskRunFilter(),
            sort=ArtifactSort.CREATED_DESC,  # the sync client sends unset arguments as nulls, which fail
            limit=10,
            offset=0,
        )
    (artifact,) = artifacts
    assert artifact.type == "table"
    assert json.loads(artifact.data) == accuracy_artifact_rows(result.rows)
    assert [r["as_of"] for r in json.loads(artifact.data)] == [EXPECTED_2["as_of"], EXPECTED_1["as_of"]]
    assert artifact.description == (
        f"Accuracy of earlier {name} forecasts once their actuals arrived, newest as-of first "
        "(2 of 2 rows; this run scored 2)"
    )

"""Score: once their actuals are known, the earlier forecasts of a pipeline are compared with them.

Every run joins the forecasts of earlier as-ofs whose timestamps the cleaned history now covers with the
history's values, and scores each (as_of, model_version): points scored, MAE, RMSE, sMAPE, MASE and the
coverage of [yhat_lower, yhat_upper]. The accuracy table keeps one row per (pipeline, as_of,
model_version), written in one transaction: a re-score replaces the row, never adds one, unless the row
already holds a score over more points (a backfill of an earlier date knows fewer actuals than the run
that scored it first); rows of an as-of whose forecasts were republished under another model version go.

The actuals are the cleaned history, so steps that cleaning imputed count as actuals too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from prefect import task
from prefect.artifacts import create_table_artifact

from lstm_model.metrics import coverage, mae, rmse, smape
from tasks._log import artifact_key
from tasks.config import PipelineConfig
from tasks.db import advisory_xact_lock, create_engine, safe_url
from tasks.retry import DB_RETRIES
from tasks.schemas import accuracy_table, forecast_table

METRICS = ("mae", "rmse", "smape", "mase", "coverage")
SCORE_COLUMNS = ("as_of", "model_version", "n_series", "n_points", *METRICS, "first_ts", "last_ts")
ARTIFACT_ROWS = 60


@dataclass(frozen=True)
class ScoreResult:
    table: str
    scored: int  # (as_of, model_version) rows written by this run
    kept: int  # rows left as they were because they already held a score over more points
    points: int  # forecast points scored by this run
    rows: list[dict[str, Any]]  # the pipeline's accuracy over time, oldest as-of first
    seconds: float


def _utc_ns(values: pd.Series) -> pd.Series:
    """Timestamps as UTC at nanosecond resolution, so that frames from SQL and Parquet join exactly."""
    return pd.to_datetime(values, utc=True).dt.as_unit("ns")


def _iso_utc(value: datetime | str) -> str:
    """ISO 8601 in UTC; SQLite hands back the stored UTC wall time without a zone."""
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).isoformat()


def _i8(values: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(values).as_unit("ns").asi8


def read_actuals(history_path: str, target: str) -> pd.DataFrame:
    """(series_id, ts, y) from the cleaned history, sorted by series and time."""
    frame = pd.read_parquet(history_path, columns=["series_id", "ts", target])
    actuals = pd.DataFrame(
        {"series_id": frame["series_id"].astype(str), "ts": _utc_ns(frame["ts"]),
         "y": frame[target].astype("float64")}
    )  # fmt: skip
    return actuals.sort_values(["series_id", "ts"], kind="stable").reset_index(drop=True)


def insample_scales(values: np.ndarray, lengths: np.ndarray, season_length: int) -> np.ndarray:
    """MASE's scale of each prefix `values[:n]` for n in `lengths`, by the rules of
    `lstm_model.metrics.mase`: the in-sample MAE of seasonal naive (lag 1 while the prefix holds no full
    season plus a step), nan when there is no difference to average or the scale is 0.

    Prefix sums of the absolute differences give every prefix at once: scoring a year of nightly
    forecasts needs one pass over each series' history, not one per as-of.
    """
    if not isinstance(season_length, int) or isinstance(season_length, bool) or season_length < 1:
        raise ValueError(f"season_length must be a positive integer, got {season_length!r}")
    values = np.asarray(values, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if (lengths > len(values)).any() or (lengths < 0).any():
        raise ValueError(f"prefix lengths must be in [0, {len(values)}], got {lengths.tolist()}")
    lags = np.where(lengths > season_length, season_length, 1)
    scales = np.full(lengths.shape, np.nan)
    for lag in np.unique(lags):
        sums = np.concatenate([[0.0], np.cumsum(np.abs(values[lag:] - values[:-lag]))])
        pick = (lags == lag) & (lengths > lag)
        steps = lengths[pick] - lag
        scales[pick] = sums[steps] / steps
    scales[scales == 0.0] = np.nan
    return scales


def _series_scales(pairs: pd.DataFrame, actuals: pd.DataFrame, season_length: int) -> pd.Series:
    """MASE scale of each (series_id, as_of) in `pairs` from the series' history up to and including as_of."""
    parts = []
    history = dict(list(actuals.groupby("series_id", sort=False)))
    for sid, group in pairs.groupby("series_id", sort=False):
        past = history[sid]
        lengths = np.searchsorted(_i8(past["ts"]), _i8(group["as_of"]), side="right")
        scale = insample_scales(past["y"].to_numpy(), lengths, season_length)
        parts.append(pd.Series(scale, index=pd.MultiIndex.from_frame(group[["series_id", "as_of"]])))
    return pd.concat(parts).rename("scale")


def score_points(forecasts: pd.DataFrame, actuals: pd.DataFrame, season_length: int) -> pd.DataFrame:
    """One row per (as_of, model_version) with columns `SCORE_COLUMNS`, oldest as-of first.

    MAE, RMSE, sMAPE and coverage pool every scored point; MASE is the mean over series of each series'
    MAE divided by its scale (series with an undefined MASE are skipped, as in the backtest summary);
    coverage counts only points with both bounds and is nan when none has them.
    """
    joined = forecasts.merge(actuals, on=["series_id", "ts"], how="inner")
    joined = joined[joined["y"].notna()]
    if joined.empty:
        return pd.DataFrame(columns=list(SCORE_COLUMNS))
    pairs = joined[["series_id", "as_of"]].drop_duplicates()
    scales = _series_scales(pairs, actuals, season_length)
    errors = joined.assign(abs_error=(joined["y"] - joined["yhat"]).abs())
    per_series = errors.groupby(["as_of", "model_version", "series_id"], sort=False)["abs_error"].mean()
    per_series = per_series.to_frame().join(scales, on=["series_id", "as_of"])
    # mean() skips series whose MASE is undefined; nan when no series has one
    mase_by = (per_series["abs_error"] / per_series["scale"]).groupby(level=["as_of", "model_version"]).mean()
    rows = []
    for (as_of, version), group in joined.groupby(["as_of", "model_version"], sort=True):
        y, yhat = group["y"].to_numpy(), group["yhat"].to_numpy()
        bounded = group[group["yhat_lower"].notna() & group["yhat_upper"].notna()]
        rows.append(
            {
                "as_of": as_of,
                "model_version": version,
                "n_series": int(group["series_id"].nunique()),
                "n_points": len(group),
                "mae": mae(y, yhat),
                "rmse": rmse(y, yhat),
                "smape": smape(y, yhat),
                "mase": float(mase_by[(as_of, version)]),
                "coverage": (
                    coverage(bounded["y"], bounded["yhat_lower"], bounded["yhat_upper"])
                    if len(bounded)
                    else float("nan")
                ),
                "first_ts": group["ts"].min(),
                "last_ts": group["ts"].max(),
            }
        )
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def read_forecasts(
    conn: sa.Connection, table: sa.Table, pipeline: str, start: datetime, end: datetime
) -> pd.DataFrame:
    """Forecasts of as-ofs before `end` for timestamps within [start, end], where actuals can exist."""
    c = table.c
    result = conn.execute(
        sa.select(c.as_of, c.model_version, c.series_id, c.ts, c.yhat, c.yhat_lower, c.yhat_upper).where(
            c.pipeline == pipeline, c.as_of < end, c.ts >= start, c.ts <= end
        )
    )
    frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    frame["series_id"] = frame["series_id"].astype(str)
    frame["model_version"] = frame["model_version"].astype(str)
    for col in ("as_of", "ts"):
        frame[col] = _utc_ns(frame[col])
    for col in ("yhat", "yhat_lower", "yhat_upper"):
        frame[col] = frame[col].astype("float64")
    return frame


def lock_pipeline(conn: sa.Connection, table: sa.Table, pipeline: str) -> None:
    """Two scorings of one pipeline at once take turns (tasks.db.advisory_xact_lock), so the later one sees
    the earlier one's rows when it decides what to replace."""
    advisory_xact_lock(conn, table.fullname, pipeline)


def _check_tables(conn: sa.Connection, forecasts: sa.Table, accuracy: sa.Table, url: str) -> None:
    inspector = sa.inspect(conn)
    if not inspector.has_table(forecasts.name, schema=forecasts.schema):
        raise LookupError(f"table {forecasts.fullname!r} does not exist in {safe_url(url)}")
    if inspector.has_table(accuracy.name, schema=accuracy.schema):
        present = {c["name"] for c in inspector.get_columns(accuracy.name, schema=accuracy.schema)}
        missing = [c.name for c in accuracy.columns if c.name not in present]
        if missing:
            raise LookupError(f"output table {accuracy.fullname!r} exists but lacks columns {missing}")


def _value(value: Any) -> Any:
    """A value the database driver takes: None for nan, Python datetimes and numbers for numpy ones."""
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, float | np.floating) and np.isnan(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def replace_scores(
    conn: sa.Connection, table: sa.Table, pipeline: str, scores: pd.DataFrame, now: datetime
) -> tuple[int, int]:
    """Write `scores` over the pipeline's rows of the same as-ofs; (rows written, rows kept).

    A row already holding a score over more points stays; rows of these as-ofs under a model version
    that was not scored now describe forecasts that have since been republished, and go.
    """
    if scores.empty:
        return 0, 0
    c = table.c
    as_ofs = [ts.to_pydatetime() for ts in scores["as_of"].drop_duplicates()]
    existing = conn.execute(
        sa.select(c.as_of, c.model_version, c.n_points).where(c.pipeline == pipeline, c.as_of.in_(as_ofs))
    ).all()
    held = {(pd.Timestamp(_iso_utc(as_of)), version): int(n) for as_of, version, n in existing}
    keys = list(zip(scores["as_of"], scores["model_version"], strict=True))
    write = [held.get(key, 0) <= n for key, n in zip(keys, scores["n_points"], strict=True)]
    gone = [key for key in held if key not in set(keys)]
    gone += [key for key, w in zip(keys, write, strict=True) if w and key in held]
    if gone:
        same_key = (c.as_of == sa.bindparam("key_as_of")) & (c.model_version == sa.bindparam("key_version"))
        conn.execute(
            sa.delete(table).where(c.pipeline == pipeline, same_key),
            [{"key_as_of": as_of.to_pydatetime(), "key_version": version} for as_of, version in gone],
        )
    new = [
        {"pipeline": pipeline, **{k: _value(v) for k, v in row.items()}, "scored_at": now}
        for row in scores[write].to_dict("records")
    ]
    if new:
        conn.execute(sa.insert(table), new)
    return len(new), len(scores) - len(new)


def read_accuracy(conn: sa.Connection, table: sa.Table, pipeline: str) -> list[dict[str, Any]]:
    """The pipeline's rows, oldest as-of first, with timestamps as ISO 8601 UTC text."""
    columns = [c for c in table.columns if c.name != "pipeline"]
    result = conn.execute(
        sa.select(*columns).where(table.c.pipeline == pipeline).order_by(table.c.as_of, table.c.model_version)
    )
    stamps = ("as_of", "first_ts", "last_ts", "scored_at")
    return [{k: _iso_utc(v) if k in stamps else v for k, v in row.items()} for row in result.mappings()]


def score_forecasts(
    url_out: str, forecast_name: str, accuracy_name: str, pipeline: str, history_path: str,
    season_length: int, target: str,
) -> ScoreResult:  # fmt: skip
    """Score the pipeline's earlier forecasts against the actuals in `history_path` (its `target` column)."""
    started = time.perf_counter()
    actuals = read_actuals(history_path, target)
    if actuals.empty:
        raise ValueError(f"{history_path} holds no history to score forecasts against")
    start, end = (ts.to_pydatetime() for ts in (actuals["ts"].min(), actuals["ts"].max()))
    metadata = sa.MetaData()
    fc_table, acc_table = forecast_table(forecast_name, metadata), accuracy_table(accuracy_name, metadata)
    now = datetime.now(UTC)
    engine = create_engine(url_out)
    try:
        with engine.begin() as conn:
            lock_pipeline(conn, acc_table, pipeline)  # first: two first scorings must not both create it
            _check_tables(conn, fc_table, acc_table, url_out)
            acc_table.create(conn, checkfirst=True)
            scores = score_points(
                read_forecasts(conn, fc_table, pipeline, start, end), actuals, season_length
            )
            scored, kept = replace_scores(conn, acc_table, pipeline, scores, now)
            rows = read_accuracy(conn, acc_table, pipeline)
    finally:
        engine.dispose()
    return ScoreResult(
        table=accuracy_name,
        scored=scored,
        kept=kept,
        points=int(scores["n_points"].sum()),
        rows=rows,
        seconds=round(time.perf_counter() - started, 3),
    )


def accuracy_artifact_rows(rows: list[dict[str, Any]], limit: int = ARTIFACT_ROWS) -> list[dict[str, Any]]:
    """The newest `limit` as-ofs first, metrics rounded for reading."""
    shown = sorted(rows, key=lambda r: (r["as_of"], r["model_version"]), reverse=True)[:limit]
    keep = ("as_of", "model_version", "n_series", "n_points", *METRICS)
    return [{k: (round(r[k], 4) if k in METRICS and r[k] is not None else r[k]) for k in keep} for r in shown]


def run_score(cfg: PipelineConfig, history_path: str) -> ScoreResult:
    out = cfg.output
    result = score_forecasts(
        out.url, out.table, out.accuracy_table, cfg.name, history_path, cfg.data.season_length,
        cfg.source.target,
    )  # fmt: skip
    shown = accuracy_artifact_rows(result.rows)
    description = (
        f"Accuracy of earlier {cfg.name} forecasts once their actuals arrived, newest as-of first "
        f"({len(shown)} of {len(result.rows)} rows; this run scored {result.scored})"
    )
    create_table_artifact(shown, key=artifact_key(cfg.name, "accuracy-over-time"), description=description)
    return result


@task(**DB_RETRIES)
def score(cfg: PipelineConfig, history_path: str) -> ScoreResult:
    """Score earlier forecasts whose actuals have arrived; show the accuracy over time."""
    return run_score(cfg, history_path)

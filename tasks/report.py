"""Report: what a run did, as Prefect artifacts under stable per-pipeline keys, so the UI lists every
run's summary, backtest, data quality and forecast plot side by side over time.

The forecast plot is a PNG embedded in a markdown artifact as a `data:image/png;base64,...` URL. An image
artifact only stores a URL that the browser must fetch, and a run's local files are no such URL; both
Prefect UIs render markdown images from data URLs (the v2 UI's markdown renderer allows `data:image/`
sources explicitly, the v1 renderer passes the source to `<img>` unchanged). The PNG is also written next
to the run's files for use outside the UI.
"""

from __future__ import annotations

import base64
import io
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from lstm_model.backtest import METRICS, MODELS
from lstm_model.baselines import BASELINES
from tasks._log import artifact_key
from tasks.config import PipelineConfig
from tasks.files import write_bytes_atomic
from tasks.schemas import count_columns

# Keys of the flow's run summary that the markdown summary needs; the other keys it shows are optional.
SUMMARY_KEYS = (
    "pipeline", "as_of", "model_version", "gate", "reproducible", "rows_published", "series_forecast",
    "series_skipped", "interval", "timings",
)  # fmt: skip
# Sizes of a series rather than repairs made to it.
NOT_REPAIRS = frozenset({"raw_rows", "rows"})
QUALITY_ROWS = 50
PLOT_SERIES = 4
PLOT_SEASONS = 3
PLOT_DPI = 80
PLOT_NAME = "forecast_plot.png"


@dataclass(frozen=True)
class ReportResult:
    keys: tuple[str, ...]  # artifact keys, in the order they were created
    plot_path: str
    seconds: float


def _cell(value: object) -> str:
    """Text that stays inside one markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _plain(value: object) -> object:
    """A numpy scalar as the Python value JSON takes; a missing value as None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _number(value: float) -> float | None:
    """Rounded for display; NaN (an undefined MASE, no interval) becomes an empty cell."""
    return None if value is None or math.isnan(value) else round(float(value), 4)


def interval_text(
    interval: float | None, model_version: str, backtest: Mapping[str, Mapping[str, float]] | None
) -> str:
    """Nominal coverage of the published interval and, when the backtest measured it, the coverage the
    published model reached there."""
    if interval is None:
        return "none: the quantiles have no symmetric pair"
    text = f"{interval:.0%} nominal"
    model = model_version if model_version in BASELINES else "lstm"
    measured = (backtest or {}).get(model, {}).get("coverage")
    if measured is not None and not math.isnan(measured):
        text += f"; backtest coverage {measured:.1%} ({model})"
    return text


def summary_markdown(run: Mapping[str, Any]) -> str:
    """The run at a glance, from the flow's run summary (the mapping the nightly flow returns)."""
    missing = [k for k in SUMMARY_KEYS if k not in run]
    if missing:
        raise KeyError(f"the run summary lacks {missing} (it has {sorted(run)})")
    published = f"{run['rows_published']}"
    if "rows_replaced" in run:
        published += f" ({run['rows_replaced']} replaced)"
    if "output_table" in run:
        published += f" into `{run['output_table']}`"
    facts = [
        ("Model version", f"`{run['model_version']}`"),
        ("Gate", run["gate"]),
        ("Reproducible", run["reproducible"]),
        ("Rows published", published),
        ("Series forecast", run["series_forecast"]),
        ("Series skipped", run["series_skipped"]),
        ("Prediction interval", interval_text(run["interval"], run["model_version"], run.get("backtest"))),
    ]
    if "run_id" in run:
        facts.append(("Run", f"`{run['run_id']}`"))
    timings: Mapping[str, float] = run["timings"]
    lines = [
        f"# {run['pipeline']}: forecast as of {run['as_of']}",
        "",
        f"| Pipeline | {_cell(run['pipeline'])} |",
        "|---|---|",
        *(f"| {name} | {_cell(value)} |" for name, value in facts),
        "",
        "## Stage timings",
        "",
        "| Stage | Seconds |",
        "|---|---:|",
        *(f"| {_cell(stage)} | {seconds:.3f} |" for stage, seconds in timings.items()),
        f"| **total** | **{sum(timings.values()):.3f}** |",
    ]
    return "\n".join(lines) + "\n"


def backtest_fold_rows(folds: pd.DataFrame) -> list[dict[str, object]]:
    """Mean of each metric over series, per fold and model; within a fold the LSTM comes first, then the
    baselines, so the rows read as a comparison."""
    missing = [c for c in ("fold", "cutoff", "series_id", "model", *METRICS) if c not in folds.columns]
    if missing:
        raise ValueError(f"the backtest frame lacks columns {missing}")
    grouped = folds.groupby(["fold", "cutoff", "model"], sort=False)
    table = grouped[list(METRICS)].mean().join(grouped["series_id"].nunique().rename("series")).reset_index()
    order = {model: i for i, model in enumerate(MODELS)}
    table["_order"] = table["model"].map(order).fillna(len(order))
    table = table.sort_values(["fold", "_order", "model"], kind="stable")
    return [
        {"fold": int(row.fold), "cutoff": int(row.cutoff), "model": str(row.model), "series": int(row.series),
         **{m: _number(getattr(row, m)) for m in METRICS}}
        for row in table.itertuples(index=False)
    ]  # fmt: skip


@dataclass(frozen=True)
class QualityTable:
    rows: list[dict[str, object]]
    flagged: int  # series with a repair or a status other than ok
    total: int  # series in the quality report

    @property
    def description(self) -> str:
        if not self.flagged:
            return f"All {self.total} series are clean: no repairs, none skipped"
        shown = f"{len(self.rows)} of {self.flagged}" if len(self.rows) < self.flagged else f"{self.flagged}"
        return (
            f"{shown} series with a repair or not ok, of {self.total} in all: not ok first, then the most "
            "repaired; repair columns that are zero in every listed series are left out"
        )


def quality_table_rows(quality: pd.DataFrame, limit: int = QUALITY_ROWS) -> QualityTable:
    """The series cleaning had to repair or skip, the worst first, at most `limit` of them."""
    repairs = [c for c in count_columns(quality) if c not in NOT_REPAIRS]
    status = quality["status"] if "status" in quality.columns else pd.Series("ok", index=quality.index)
    total_repairs = quality[repairs].sum(axis=1) if repairs else pd.Series(0, index=quality.index)
    not_ok = status != "ok"
    flagged = quality.assign(_not_ok=not_ok, _repairs=total_repairs)[not_ok | (total_repairs > 0)]
    flagged = flagged.sort_values(["_not_ok", "_repairs", "series_id"], ascending=[False, False, True])
    shown = flagged.head(limit)
    nonzero = [c for c in repairs if (shown[c] != 0).any()]
    sizes = [c for c in ("raw_rows", "rows") if c in quality.columns]
    text = [c for c in ("status", "reason") if c in quality.columns]
    columns = ["series_id", *text, *sizes[:1], *nonzero, *sizes[1:]]
    rows = [
        {c: _plain(v) for c, v in zip(columns, values, strict=True)}
        for values in shown[columns].itertuples(index=False)
    ]
    return QualityTable(rows=rows, flagged=len(flagged), total=len(quality))


def plot_series(lengths: pd.Series, forecast_ids: list[Any], n: int = PLOT_SERIES) -> list[Any]:
    """The `n` forecast series with the longest history (rows per series in `lengths`), ties by id.

    Ids keep the type the source gave them (text or numbers), so they still select rows of the history.
    """
    counts = lengths.reindex(forecast_ids).dropna()
    order = sorted(counts.index, key=lambda sid: (-counts[sid], str(sid)))
    return [_plain(sid) for sid in order[:n]]


def _naive_utc(ts: pd.Series) -> pd.Series:
    """UTC wall times without a zone, which matplotlib's date axis takes as they are."""
    ts = pd.to_datetime(ts, utc=True)
    return ts.dt.tz_localize(None)


def forecast_png(
    history: pd.DataFrame, forecast: pd.DataFrame, target: str, series: list[Any], steps: int,
    interval: float | None = None,
) -> bytes:  # fmt: skip
    """One panel per series: the last `steps` of history, the forecast median and its interval band."""
    if not series:
        raise ValueError("no series to plot")
    fig = Figure(figsize=(9, 2.2 * len(series)), dpi=PLOT_DPI, layout="constrained")
    axes = fig.subplots(len(series), 1, squeeze=False)[:, 0]
    band = f"{interval:.0%} interval" if interval is not None else "interval"
    for ax, sid in zip(axes, series, strict=True):
        past = history[history["series_id"] == sid].sort_values("ts").tail(steps)
        ahead = forecast[forecast["series_id"] == sid].sort_values("ts")
        past_ts, ahead_ts = _naive_utc(past["ts"]), _naive_utc(ahead["ts"])
        ax.plot(past_ts, past[target], color="C0", linewidth=1.0, label="history")
        if ahead[["yhat_lower", "yhat_upper"]].notna().all().all():
            ax.fill_between(
                ahead_ts, ahead["yhat_lower"], ahead["yhat_upper"], color="C1", alpha=0.25, linewidth=0,
                label=band,
            )  # fmt: skip
        ax.plot(ahead_ts, ahead["yhat"], color="C1", linewidth=1.2, label="forecast (median)")
        if len(past_ts):
            ax.axvline(past_ts.iloc[-1], color="0.6", linewidth=0.8, linestyle=":")
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.set_title(str(sid), loc="left", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3, linewidth=0.5)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper left", fontsize=8, ncols=3, frameon=False)
    axes[-1].set_xlabel("UTC", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_markdown(png: bytes, series: list[Any], of: int, steps: int, path: str) -> str:
    """The PNG inline as a data URL, with what it shows and where the file is."""
    encoded = base64.b64encode(png).decode("ascii")
    listed = ", ".join(map(str, series))
    return (
        f"![forecast of {listed}](data:image/png;base64,{encoded})\n\n"
        f"History (last {steps} steps), forecast median and prediction interval of {len(series)} of the "
        f"{of} forecast series, those with the longest history. The PNG is also saved as `{path}`.\n"
    )


def render_plot(
    cfg: PipelineConfig, history_path: str, forecast_path: str, interval: float | None
) -> tuple[str, str]:
    """(markdown with the plot inline, path of the saved PNG); reads only the plotted series' history."""
    forecast = pd.read_parquet(forecast_path)
    lengths = pd.read_parquet(history_path, columns=["series_id"])["series_id"].value_counts()
    ids = list(forecast["series_id"].unique())
    series = plot_series(lengths, ids)
    history = pd.read_parquet(
        history_path, columns=["series_id", "ts", cfg.source.target], filters=[("series_id", "in", series)]
    )
    steps = max(PLOT_SEASONS * cfg.data.season_length, 2 * cfg.forecast.horizon)
    png = forecast_png(history, forecast, cfg.source.target, series, steps, interval)
    path = Path(forecast_path).with_name(PLOT_NAME)
    write_bytes_atomic(png, path)
    return plot_markdown(png, series, len(ids), steps, str(path)), str(path)


def run_report(
    cfg: PipelineConfig, run: Mapping[str, Any], backtest_path: str, quality_path: str, history_path: str,
    forecast_path: str,
) -> ReportResult:  # fmt: skip
    """`run` is the nightly flow's run summary (see `SUMMARY_KEYS`)."""
    started = time.perf_counter()
    kinds = ("summary", "backtest-folds", "quality", "forecast-plot")
    keys = {kind: artifact_key(cfg.name, kind) for kind in kinds}
    summary = summary_markdown(run)
    as_of = run["as_of"]
    create_markdown_artifact(
        summary, key=keys["summary"], description=f"Run summary of {cfg.name} as of {as_of}"
    )
    folds = pd.read_parquet(backtest_path)
    create_table_artifact(
        backtest_fold_rows(folds), key=keys["backtest-folds"],
        description=f"Backtest per rolling-origin fold, mean over series: LSTM vs the baselines "
                    f"(as of {as_of})",
    )  # fmt: skip
    quality = quality_table_rows(pd.read_parquet(quality_path))
    create_table_artifact(quality.rows, key=keys["quality"], description=quality.description)
    markdown, plot_path = render_plot(cfg, history_path, forecast_path, run["interval"])
    create_markdown_artifact(
        markdown, key=keys["forecast-plot"], description=f"Forecast of {cfg.name} as of {as_of}"
    )
    return ReportResult(
        keys=tuple(keys.values()), plot_path=plot_path, seconds=round(time.perf_counter() - started, 3)
    )


@task
def report(
    cfg: PipelineConfig, run: Mapping[str, Any], backtest_path: str, quality_path: str, history_path: str,
    forecast_path: str,
) -> ReportResult:  # fmt: skip
    """Publish the run's artifacts: summary, backtest per fold, data quality and the forecast plot."""
    return run_report(cfg, run, backtest_path, quality_path, history_path, forecast_path)

import base64
import io
import json
import re
import uuid

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from prefect import flow, get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, TaskRunFilter
from prefect.client.schemas.sorting import ArtifactSort

from tasks.clean import COUNT_COLUMNS, QUALITY_COLUMNS
from tasks.report import (
    PLOT_DPI,
    artifact_key,
    backtest_fold_rows,
    forecast_png,
    interval_text,
    plot_series,
    quality_table_rows,
    render_plot,
    report,
    summary_markdown,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_summary(**changes) -> dict:
    """Shaped like the nightly flow's return value."""
    run = {
        "pipeline": "sensors",
        "run_id": "run-1",
        "as_of": "2020-01-17T00:00:00+00:00",
        "model_version": "lstm-abc",
        "gate": "LSTM backtest MASE 0.8000 beats the best baseline, seasonal_naive (1.0000)",
        "reproducible": "reproducible",
        "interval": 0.8,
        "backtest": {
            "lstm": {"mase": 0.8, "coverage": 0.7834},
            "seasonal_naive": {"mase": 1.0, "coverage": 0.5},
        },
        "series_forecast": 3,
        "series_skipped": 1,
        "rows_published": 36,
        "rows_replaced": 12,
        "output_table": "forecasts",
        "quality_rows": 4,
        "timings": {"extract": 1.25, "clean": 0.5, "publish": 0.125},
    }
    return run | changes


def folds_frame() -> pd.DataFrame:
    """Two folds, two series, the three models in backtest's long format, models deliberately shuffled."""
    rows = []
    for fold, cutoff in ((0, 100), (1, 112)):
        for sid, mase in (("a", 0.5), ("b", float("nan"))):
            for model, mae in (("naive", 3.0), ("lstm", 1.0), ("seasonal_naive", 2.0)):
                rows.append(
                    {"fold": fold, "cutoff": cutoff, "series_id": sid, "model": model, "mae": mae + fold,
                     "rmse": mae * 2 + (sid == "b"), "smape": 10.0, "mase": mase * mae, "coverage": 0.75}
                )  # fmt: skip
    return pd.DataFrame(rows)


def quality_frame(n: int = 5) -> pd.DataFrame:
    """Shaped like clean's quality report: series s0..s{n-1}, all clean unless changed."""
    frame = pd.DataFrame(
        [
            dict.fromkeys(COUNT_COLUMNS, 0) | {"series_id": f"s{i}", "status": "ok", "reason": ""}
            for i in range(n)
        ]
    )
    frame["raw_rows"] = frame["rows"] = 100
    return frame[QUALITY_COLUMNS].astype(dict.fromkeys(COUNT_COLUMNS, "int64"))


def history_and_forecast(series=("a", "b", "c"), lengths=(100, 120, 120), horizon=12):
    frames, forecasts = [], []
    end = pd.Timestamp("2020-01-10", tz="UTC")
    for i, (sid, n) in enumerate(zip(series, lengths, strict=True)):
        ts = pd.date_range(end=end, periods=n, freq="h")
        frames.append(pd.DataFrame({"series_id": sid, "ts": ts, "value": np.sin(np.arange(n) / 4) + i}))
        ahead = pd.date_range(end + pd.Timedelta(hours=1), periods=horizon, freq="h")
        forecasts.append(
            pd.DataFrame(
                {
                    "series_id": sid,
                    "ts": ahead,
                    "yhat": float(i),
                    "yhat_lower": i - 0.5,
                    "yhat_upper": i + 0.5,
                }
            )
        )
    return pd.concat(frames, ignore_index=True), pd.concat(forecasts, ignore_index=True)


def test_artifact_keys_are_valid_and_stable_per_pipeline():
    assert artifact_key("Sales_EU.v2", "summary") == "sales-eu-v2-summary"
    assert artifact_key("sensors", "forecast-plot") == "sensors-forecast-plot"
    assert re.fullmatch(r"[a-z0-9-]+", artifact_key("A.b_C-9", "backtest-folds"))


def test_summary_markdown_shows_the_run_at_a_glance():
    assert summary_markdown(run_summary()) == (
        "# sensors: forecast as of 2020-01-17T00:00:00+00:00\n"
        "\n"
        "| Pipeline | sensors |\n"
        "|---|---|\n"
        "| Model version | `lstm-abc` |\n"
        "| Gate | LSTM backtest MASE 0.8000 beats the best baseline, seasonal_naive (1.0000) |\n"
        "| Reproducible | reproducible |\n"
        "| Rows published | 36 (12 replaced) into `forecasts` |\n"
        "| Series forecast | 3 |\n"
        "| Series skipped | 1 |\n"
        "| Prediction interval | 80% nominal; backtest coverage 78.3% (lstm) |\n"
        "| Run | `run-1` |\n"
        "\n"
        "## Stage timings\n"
        "\n"
        "| Stage | Seconds |\n"
        "|---|---:|\n"
        "| extract | 1.250 |\n"
        "| clean | 0.500 |\n"
        "| publish | 0.125 |\n"
        "| **total** | **1.875** |\n"
    )


def test_summary_markdown_needs_only_the_required_keys_and_keeps_cells_intact():
    run = run_summary(gate="a | b\nc")
    for optional in ("run_id", "rows_replaced", "output_table", "backtest", "quality_rows"):
        del run[optional]
    text = summary_markdown(run)
    assert "| Gate | a \\| b c |\n" in text
    assert "| Rows published | 36 |\n" in text
    assert "| Prediction interval | 80% nominal |\n" in text
    assert "| Run |" not in text


def test_summary_markdown_names_missing_keys():
    run = run_summary()
    del run["gate"], run["timings"]
    with pytest.raises(KeyError, match=r"the run summary lacks \['gate', 'timings'\]"):
        summary_markdown(run)


def test_interval_text_reports_the_published_models_backtest_coverage():
    backtest = run_summary()["backtest"]
    assert (
        interval_text(0.8, "seasonal_naive", backtest)
        == "80% nominal; backtest coverage 50.0% (seasonal_naive)"
    )
    assert interval_text(0.9, "lstm-1", {"lstm": {"coverage": float("nan")}}) == "90% nominal"
    assert interval_text(None, "lstm-1", backtest) == "none: the quantiles have no symmetric pair"


def test_backtest_fold_rows_average_over_series_with_the_lstm_first():
    rows = backtest_fold_rows(folds_frame())
    assert [(r["fold"], r["cutoff"], r["model"]) for r in rows] == [
        (0, 100, "lstm"), (0, 100, "seasonal_naive"), (0, 100, "naive"),
        (1, 112, "lstm"), (1, 112, "seasonal_naive"), (1, 112, "naive"),
    ]  # fmt: skip
    assert rows[0] == {
        "fold": 0, "cutoff": 100, "model": "lstm", "series": 2,
        "mae": 1.0, "rmse": 2.5, "smape": 10.0, "mase": 0.5, "coverage": 0.75,
    }  # fmt: skip
    assert rows[5]["mae"] == 4.0 and rows[5]["mase"] == 1.5  # the series without a MASE is skipped
    undefined = folds_frame().assign(mase=float("nan"))
    assert {r["mase"] for r in backtest_fold_rows(undefined)} == {None}


def test_backtest_fold_rows_refuse_a_frame_without_metrics():
    with pytest.raises(ValueError, match=r"^the backtest frame lacks columns \['mase', 'coverage'\]$"):
        backtest_fold_rows(folds_frame().drop(columns=["mase", "coverage"]))


def test_quality_table_lists_skipped_then_most_repaired_series():
    quality = quality_frame(6)
    quality.loc[1, "imputed"] = 3
    quality.loc[2, ["status", "reason"]] = ["skipped", "too short"]
    quality.loc[3, ["duplicates", "imputed"]] = [4, 1]
    quality.loc[5, "negative"] = 1
    table = quality_table_rows(quality)
    assert table.rows == [
        {"series_id": "s2", "status": "skipped", "reason": "too short", "raw_rows": 100, "negative": 0,
         "duplicates": 0, "imputed": 0, "rows": 100},
        {"series_id": "s3", "status": "ok", "reason": "", "raw_rows": 100, "negative": 0, "duplicates": 4,
         "imputed": 1, "rows": 100},
        {"series_id": "s1", "status": "ok", "reason": "", "raw_rows": 100, "negative": 0, "duplicates": 0,
         "imputed": 3, "rows": 100},
        {"series_id": "s5", "status": "ok", "reason": "", "raw_rows": 100, "negative": 1, "duplicates": 0,
         "imputed": 0, "rows": 100},
    ]  # fmt: skip
    assert (table.flagged, table.total) == (4, 6)
    assert table.description == (
        "4 series with a repair or not ok, of 6 in all: not ok first, then the most repaired; "
        "repair columns that are zero in every listed series are left out"
    )
    capped = quality_table_rows(quality, limit=2)
    assert [r["series_id"] for r in capped.rows] == ["s2", "s3"]
    assert capped.description.startswith("2 of 4 series with a repair or not ok, of 6 in all")
    assert json.dumps(capped.rows)  # plain Python values, ready for an artifact


def test_quality_table_of_clean_data_is_empty_and_says_so():
    table = quality_table_rows(quality_frame(3))
    assert table.rows == [] and table.description == "All 3 series are clean: no repairs, none skipped"


def test_plot_series_prefers_the_longest_history_then_the_id():
    lengths = pd.Series({"a": 100, "b": 120, "c": 120, "d": 500})
    assert plot_series(lengths, ["a", "b", "c"], n=2) == ["b", "c"]  # d has no forecast
    assert plot_series(lengths, ["a", "b", "c", "d"]) == ["d", "b", "c", "a"]


def test_forecast_png_has_one_panel_per_series():
    history, forecast = history_and_forecast()
    png = forecast_png(history, forecast, "value", ["b", "c"], steps=72, interval=0.8)
    assert png.startswith(PNG_SIGNATURE)
    assert Image.open(io.BytesIO(png)).size == (9 * PLOT_DPI, round(2 * 2.2 * PLOT_DPI))
    without_band = forecast.assign(yhat_lower=np.nan, yhat_upper=np.nan)
    assert forecast_png(history, without_band, "value", ["a"], steps=24).startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match=r"^no series to plot$"):
        forecast_png(history, forecast, "value", [], steps=24)


def test_render_plot_keeps_numeric_series_ids_and_saves_the_png(sensor_cfg, tmp_path):
    history, forecast = history_and_forecast(series=(7, 11, 3), lengths=(100, 120, 50))
    history.to_parquet(tmp_path / "history.parquet")
    forecast.to_parquet(tmp_path / "forecast.parquet")
    markdown, path = render_plot(
        sensor_cfg(), str(tmp_path / "history.parquet"), str(tmp_path / "forecast.parquet"), 0.8
    )
    assert path == str(tmp_path / "forecast_plot.png")
    png = (tmp_path / "forecast_plot.png").read_bytes()
    assert markdown.startswith(
        f"![forecast of 11, 7, 3](data:image/png;base64,{base64.b64encode(png).decode()})"
    )
    assert "of 3 of the 3 forecast series" in markdown
    assert not list(tmp_path.glob(".*.tmp"))


def read_artifacts(key: str):
    """Every artifact under `key`, newest first. The sync client sends unset arguments as nulls, which the
    server refuses, so all of them are given."""
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(),
            task_run_filter=TaskRunFilter(),
            sort=ArtifactSort.CREATED_DESC,
            limit=10,
            offset=0,
        )


def test_report_publishes_four_artifacts_under_stable_keys(sensor_cfg, tmp_path):
    name = f"report-{uuid.uuid4().hex[:8]}"
    cfg = sensor_cfg(name=name)
    history, forecast = history_and_forecast()
    paths = {kind: tmp_path / f"{kind}.parquet" for kind in ("backtest", "quality", "history", "forecast")}
    folds_frame().to_parquet(paths["backtest"])
    quality = quality_frame(4)
    quality.loc[1, "imputed"] = 2
    quality.to_parquet(paths["quality"])
    history.to_parquet(paths["history"])
    forecast.to_parquet(paths["forecast"])

    @flow
    def nightly():
        return report(cfg, run_summary(pipeline=name), *(str(p) for p in paths.values()))

    result = nightly()
    assert result.keys == (
        f"{name}-summary", f"{name}-backtest-folds", f"{name}-quality", f"{name}-forecast-plot"
    )  # fmt: skip
    assert result.plot_path == str(tmp_path / "forecast_plot.png")

    (summary,) = read_artifacts(f"{name}-summary")
    assert summary.type == "markdown" and summary.data == summary_markdown(run_summary(pipeline=name))
    assert summary.flow_run_id is not None and summary.task_run_id is not None
    (folds,) = read_artifacts(f"{name}-backtest-folds")
    assert folds.type == "table" and json.loads(folds.data) == json.loads(
        json.dumps(backtest_fold_rows(folds_frame()))
    )
    assert folds.description.startswith("Backtest per rolling-origin fold, mean over series")
    (dq,) = read_artifacts(f"{name}-quality")
    assert [r["series_id"] for r in json.loads(dq.data)] == ["s1"]
    assert dq.description.startswith("1 series with a repair or not ok, of 4 in all")
    (plot,) = read_artifacts(f"{name}-forecast-plot")
    assert plot.type == "markdown"
    embedded = re.match(r"^!\[forecast of b, c, a\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)\n", plot.data)
    assert embedded, plot.data[:80]
    png = base64.b64decode(embedded.group(1))
    assert png == (tmp_path / "forecast_plot.png").read_bytes()
    assert Image.open(io.BytesIO(png)).size == (9 * PLOT_DPI, round(3 * 2.2 * PLOT_DPI))
    assert plot.data.endswith(
        "History (last 72 steps), forecast median and prediction interval of 3 of the 3 forecast series, "
        f"those with the longest history. The PNG is also saved as `{tmp_path / 'forecast_plot.png'}`.\n"
    )

    nightly()  # the next run's artifacts join the same keys, so the UI shows them over time
    assert len(read_artifacts(f"{name}-summary")) == 2
    assert len(read_artifacts(f"{name}-forecast-plot")) == 2

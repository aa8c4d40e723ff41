import numpy as np
import pandas as pd
import pytest

from tasks.panel import future_names, load_panel, with_calendar
from tasks.validate import best_baseline, decide_gate

BASELINES_ = {"seasonal_naive": {"mase": 1.0}, "naive": {"mase": 1.2}, "recent_median": {"mase": 0.9},
              "seasonal_mean": {"mase": 0.95}}  # fmt: skip
SUMMARY_WIN = {"lstm": {"mase": 0.8}, **BASELINES_}
SUMMARY_LOSE = {"lstm": {"mase": 0.92}, **BASELINES_}


def test_gate_keeps_the_lstm_when_it_beats_every_baseline():
    for policy in ("fallback", "fail", "off"):
        decision = decide_gate(SUMMARY_WIN, policy)
        assert decision.use_lstm and decision.baseline == "recent_median"
        assert decision.message == "LSTM backtest MASE 0.8000 beats the best baseline, recent_median (0.9000)"


def test_gate_falls_back_to_the_best_baseline_when_one_beats_the_lstm():
    # The LSTM beats seasonal naive (1.0) but not the flat recent median (0.9): the median is published.
    decision = decide_gate(SUMMARY_LOSE, "fallback")
    assert not decision.use_lstm and (decision.lstm_mase, decision.baseline_mase) == (0.92, 0.9)
    assert decision.baseline == "recent_median"
    assert decision.message == (
        "LSTM backtest MASE 0.9200 does not beat the best baseline, recent_median (0.9000); "
        "publishing the recent_median forecast"
    )


def test_gate_fails_when_configured_to_and_a_tie_or_nan_is_a_loss():
    decision = decide_gate({"lstm": {"mase": 1.0}, "seasonal_naive": {"mase": 1.0}}, "fail")
    assert decision.fail and not decision.use_lstm
    assert decision.message == (
        "LSTM backtest MASE 1.0000 does not beat the best baseline, seasonal_naive (1.0000); "
        "forecast.gate = 'fail', so nothing is published"
    )
    assert not decide_gate({"lstm": {"mase": np.nan}, "seasonal_naive": {"mase": 1.0}}, "fallback").use_lstm


def test_gate_off_keeps_a_losing_lstm_and_says_so():
    decision = decide_gate(SUMMARY_LOSE, "off")
    assert decision.use_lstm and decision.message.endswith("; gate is off, using the LSTM")


def test_best_baseline_skips_nan_and_needs_a_baseline():
    nan_median = {**BASELINES_, "recent_median": {"mase": np.nan}}
    assert best_baseline(nan_median) == ("seasonal_mean", 0.95)
    assert best_baseline({"lstm": {"mase": 0.5}, "naive": {"mase": np.nan}})[0] == "naive"
    with pytest.raises(ValueError) as exc:
        best_baseline({"lstm": {"mase": 0.5}})
    assert str(exc.value) == (
        "the backtest summary has no baseline; expected one of "
        "['seasonal_naive', 'naive', 'recent_median', 'seasonal_mean'], got ['lstm']"
    )


def test_calendar_features_are_future_covariates_after_the_source_ones(sales_cfg, sensor_cfg):
    assert future_names(sales_cfg) == (
        "promo", "day_of_week_sin", "day_of_week_cos", "day_of_year_sin", "day_of_year_cos",
    )  # fmt: skip
    assert future_names(sensor_cfg())[:2] == ("hour_of_day_sin", "hour_of_day_cos")
    assert future_names(sensor_cfg(data={"calendar": False})) == ()


def test_load_panel_adds_calendar_columns_aligned_with_the_rows(sensor_cfg, tmp_path):
    cfg = sensor_cfg()
    ts = pd.date_range("2020-01-06", periods=30, freq="h", tz="UTC")  # a Monday
    frame = pd.DataFrame({"series_id": "a", "ts": ts, "value": np.arange(30.0)})
    path = tmp_path / "history.parquet"
    frame.iloc[::-1].reset_index(drop=True).iloc[::-1].to_parquet(path)  # a non-default index
    panel = load_panel(cfg, str(path))
    assert panel.future_names == future_names(cfg)
    hour_sin = panel.future_covariates[0][:, 0]
    np.testing.assert_allclose(hour_sin[:7], np.sin(2 * np.pi * np.arange(7) / 24), atol=1e-6)
    extended = with_calendar(cfg, frame.iloc[5:])
    assert len(extended) == 25 and extended["hour_of_day_cos"].iloc[0] == pytest.approx(
        np.cos(2 * np.pi * 5 / 24)
    )

import numpy as np
import pandas as pd
import pytest

from tasks.clean import clean
from tasks.config import ConfigError, PipelineConfig, parse_config
from tasks.errors import DataError
from tasks.extract import extract, resolve_as_of
from tasks.panel import future_names, load_panel, with_calendar
from tasks.validate import best_baseline, decide_gate, run_guard_covariates
from tests.helpers import LEAKY_PRODUCTS, PROMO_REFUSED, sales_slice, sensor_config_dict, write_table

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


def unchecked(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` with no covariate marked as checked."""
    return cfg.model_copy(update={"source": cfg.source.model_copy(update={"checked_covariates": ()})})


@pytest.fixture
def promo_history(sales_cfg, sqlite_url) -> str:
    """The cleaned history of four pasta products with their promotion flags."""
    write_table(sqlite_url, "sales", sales_slice(products=LEAKY_PRODUCTS))
    as_of = resolve_as_of.fn(sales_cfg, None)
    return clean.fn(sales_cfg, extract.fn(sales_cfg, as_of).path, as_of).history_path


def test_guard_refuses_the_pasta_promotion_flags(sales_cfg, promo_history):
    with pytest.raises(DataError) as exc:
        run_guard_covariates(unchecked(sales_cfg), promo_history)
    assert str(exc.value) == PROMO_REFUSED


def test_guard_lets_a_checked_covariate_through(sales_cfg, promo_history, sensor_cfg):
    assert sales_cfg.source.checked_covariates == ("promo",)
    assert run_guard_covariates(sales_cfg, promo_history) == ()
    assert run_guard_covariates(sensor_cfg(), promo_history) == ()  # no future covariates: nothing to check


def test_guard_passes_the_default_pasta_slice_flags(sales_cfg, sqlite_url):
    # on B1_1, B1_2, B2_1 and B3_1 the flags do not follow the sales: the guard has no evidence
    as_of = resolve_as_of.fn(sales_cfg, None)
    history = clean.fn(sales_cfg, extract.fn(sales_cfg, as_of).path, as_of).history_path
    assert run_guard_covariates(unchecked(sales_cfg), history) == ("promo",)


def test_checked_covariates_must_be_future_covariates(tmp_path):
    raw = sensor_config_dict("sqlite:///x.db", tmp_path, source={
        "future_covariates": ["promo"], "checked_covariates": ["promo", "price"],
    })  # fmt: skip
    with pytest.raises(ConfigError) as exc:
        parse_config(raw)
    assert str(exc.value) == (
        "<config>: source.checked_covariates entry 'price' is not one of source.future_covariates ['promo']"
    )


def with_events(cfg: PipelineConfig, table: str = "events", holidays: str | None = None) -> PipelineConfig:
    """`cfg` reading events from `table` of its source database, with the holiday calendar `holidays`."""
    return cfg.model_copy(update={
        "source": cfg.source.model_copy(update={"events_table": table}),
        "data": cfg.data.model_copy(update={"holidays": holidays}),
    })  # fmt: skip


def events_history(cfg: PipelineConfig, events: pd.DataFrame) -> str:
    """`events` written as the source's events table, then extract and clean: the history's path."""
    write_table(cfg.source.url, cfg.source.events_table, events)
    as_of = resolve_as_of.fn(cfg, None)
    extracted = extract.fn(cfg, as_of)
    return clean.fn(cfg, extracted.path, as_of, extracted.events_path).history_path


def test_guard_refuses_an_event_on_the_days_a_product_sold(sales_cfg, sqlite_url):
    write_table(sqlite_url, "sales", sales_slice(products=LEAKY_PRODUCTS))
    sales = sales_slice(products=("B2_10",))
    # every day but those with no sales: the file's absent days (shops closed) are imputed as selling days
    days = pd.date_range(sales["day"].min(), sales["day"].max(), freq="D").strftime("%Y-%m-%d")
    sold = pd.DataFrame({"date": days[~days.isin(sales["day"][sales["qty"] == 0])], "name": "sold"})
    cfg = with_events(sales_cfg)
    with pytest.raises(DataError) as exc:
        run_guard_covariates(cfg, events_history(cfg, sold))
    assert str(exc.value) == (
        "source.events_table event 'event:sold' looks recorded from the target 'qty', not planned in "
        "advance: it is zero on the target's zero steps and non-zero on its non-zero steps on 1 of 4 series "
        "(on 99% or more of each; 1 on every step); remove it, or add it to source.checked_covariates if it "
        "is a plan fixed before each as-of"
    )


def test_guard_measures_and_accepts_a_planned_event(sales_cfg, sqlite_url):
    write_table(sqlite_url, "sales", sales_slice(products=LEAKY_PRODUCTS))
    saturdays = pd.date_range("2014-01-04", "2014-12-27", freq="7D")
    cfg = with_events(sales_cfg)
    history = events_history(cfg, pd.DataFrame({"date": saturdays, "name": "market day"}))
    assert run_guard_covariates(cfg, history) == ("event:market day",)  # promo is marked checked


def test_holidays_and_events_follow_the_calendar_in_the_future_covariates(sales_cfg):
    cfg = with_events(sales_cfg, holidays="IT")
    assert future_names(cfg, ("event:fair",)) == (
        "promo", "event:fair", "day_of_week_sin", "day_of_week_cos", "day_of_year_sin", "day_of_year_cos",
        "holiday", "holiday_before", "holiday_after",
    )  # fmt: skip


def test_load_panel_takes_event_and_holiday_columns_from_the_history(sales_cfg, sqlite_url):
    write_table(sqlite_url, "sales", sales_slice())
    cfg = with_events(sales_cfg, holidays="IT")
    fair = pd.DataFrame({"date": ["2014-04-10", "2014-04-11"], "name": "fair"})
    panel = load_panel(cfg, events_history(cfg, fair))
    names = panel.future_names
    assert names == future_names(cfg, ("event:fair",))
    days = pd.date_range("2014-01-02", periods=panel.future_covariates[0].shape[0], freq="D")
    values = pd.DataFrame(panel.future_covariates[0], index=days, columns=names)
    assert values.index[values["event:fair"] == 1].strftime("%Y-%m-%d").tolist() == [
        "2014-04-10",
        "2014-04-11",
    ]
    # Epiphany, Easter and Easter Monday, Liberation Day, Labour Day and Republic Day of 2014
    assert values.index[values["holiday"] == 1].strftime("%m-%d").tolist() == [
        "01-06", "04-20", "04-21", "04-25", "05-01", "06-02",
    ]  # fmt: skip
    near = values.loc["2014-04-23":"2014-04-26", ["holiday_before", "holiday_after"]]
    np.testing.assert_allclose(
        near.to_numpy(), [[6 / 7, 6 / 7], [1, 5 / 7], [2 / 7, 4 / 7], [3 / 7, 1]], atol=1e-6
    )

"""The leakage guard's measure on real data: the pasta promotion flags (recorded from the sales) are refused,
calendar columns and a planned price are not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstm_model.leakage import Evidence, explained_changes, leaking_covariates, measure, zero_agreement
from lstmcast.demo import sales_frame, sensor_frame

# Italian public holidays on fixed dates: known years ahead
HOLIDAYS = ("01-01", "01-06", "04-25", "05-01", "06-02", "08-15", "11-01", "12-08", "12-25", "12-26")


@pytest.fixture(scope="module")
def sales() -> pd.DataFrame:
    """All 118 pasta series (Mancuso et al. 2021), with calendar columns and a planned price added."""
    frame = sales_frame()
    day = pd.to_datetime(frame["day"])
    frame["day_of_week"] = day.dt.day_of_week.astype(float)
    frame["holiday"] = day.dt.strftime("%m-%d").isin(HOLIDAYS).astype(float)
    # a price list fixed in advance: 2.0, cut to 1.6 every sixth ISO week; sales respond to it
    frame["price"] = np.where(day.dt.isocalendar().week.to_numpy() % 6 == 0, 1.6, 2.0)
    frame["qty_priced"] = np.round(frame["qty"] * (2.0 / frame["price"]) ** 2)
    return frame


def test_the_pasta_promotion_flags_are_refused_with_the_measured_evidence(sales):
    agreement, explained = measure(sales, "product", "qty", "promo")
    # 27 of the 118 flags are 1 on exactly the days with sales, 4 more miss by one day in ~1,800
    assert agreement == Evidence("promo", "agreement", series=31, measured=118, exact=27)
    assert agreement.refused and not explained.refused
    assert explained == Evidence("promo", "explained", series=0, measured=118, exact=0)
    assert leaking_covariates(sales, "product", "qty", ["promo"]) == [agreement]
    assert agreement.describe() == (
        "it is zero on the target's zero steps and non-zero on its non-zero steps on 31 of 118 series "
        "(on 99% or more of each; 27 on every step)"
    )


def test_calendar_columns_are_accepted(sales):
    for column in ("day_of_week", "holiday"):
        agreement, explained = measure(sales, "product", "qty", column)
        assert (agreement.series, agreement.measured) == (0, 118)
        assert (explained.series, explained.measured) == (0, 118)
    assert leaking_covariates(sales, "product", "qty", ["day_of_week", "holiday"]) == []


def test_a_planned_price_that_drives_the_sales_is_accepted(sales):
    agreement, explained = measure(sales, "product", "qty_priced", "price")
    assert agreement.measured == 0  # a price is never zero: nothing to match
    assert (explained.series, explained.measured) == (0, 118)
    assert leaking_covariates(sales, "product", "qty_priced", ["price"]) == []


def test_a_continuous_record_of_the_target_is_refused_by_its_changes():
    # ETTh1's sensors (Zhou et al. 2021) with a "plan" that is the reading rounded to 2 decimals
    frame = sensor_frame()
    frame["recorded"] = frame["value"].round(2)
    frame["lagged"] = frame.groupby("series_id")["value"].shift(1)
    [evidence] = leaking_covariates(frame, "series_id", "value", ["recorded", "lagged"])
    assert evidence.column == "recorded" and evidence.refused
    assert measure(frame, "series_id", "value", "recorded")[1] == Evidence(
        "recorded", "explained", series=7, measured=7, exact=0
    )
    assert Evidence("recorded", "explained", 7, 7, 0).describe() == (
        "its step changes explain the target's (R^2 >= 0.95) on 7 of 7 series"
    )


def test_agreement_needs_both_states_and_weighs_them_equally():
    target = np.array([0.0] * 10 + [3.0] * 990)
    assert zero_agreement(target, np.ones(1000)) is None  # a covariate that is never zero
    assert zero_agreement(np.ones(1000), target) is None  # a target that is never zero
    # 98.5% of all steps match, but none of the target's 10 zero steps do: no evidence
    elsewhere = np.array([3.0] * 10 + [0.0] * 5 + [3.0] * 985)
    assert np.mean((elsewhere != 0) == (target != 0)) == 0.985
    assert zero_agreement(target, elsewhere) == 0.0
    assert zero_agreement(target, target * 2) == 1.0
    nan_target = target.copy()
    nan_target[:6] = np.nan  # missing steps are left out: 4 zero steps are too few
    assert zero_agreement(nan_target, target) is None


def test_explained_changes_needs_changes_on_both_sides():
    steps = np.arange(100.0)
    assert explained_changes(steps, np.ones(100)) is None
    assert explained_changes(steps**2, 3 * steps**2 + 1) == pytest.approx(1.0)


def test_refused_needs_a_tenth_of_the_measured_series_and_one_at_least():
    assert not Evidence("c", "agreement", series=0, measured=0, exact=0).refused
    assert not Evidence("c", "agreement", series=9, measured=100, exact=9).refused
    assert Evidence("c", "agreement", series=10, measured=100, exact=0).refused
    assert Evidence("c", "agreement", series=1, measured=1, exact=1).refused

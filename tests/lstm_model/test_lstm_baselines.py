from statistics import NormalDist

import numpy as np
import pytest

from lstm_model.baselines import (
    BASELINES,
    baseline_quantiles,
    naive,
    naive_quantiles,
    recent_median_quantiles,
    seasonal_mean_quantiles,
    seasonal_naive,
)
from lstm_model.panel import Panel


def panel_of(*series) -> Panel:
    target = tuple(np.asarray(s, dtype=np.float32) for s in series)
    empty = tuple(np.zeros((len(s), 0), np.float32) for s in series)
    return Panel(tuple(f"s{i}" for i in range(len(series))), target, empty, empty)


def test_naive_repeats_the_last_value():
    out = naive(panel_of([1, 2, 3], [5, 6]), horizon=3)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[3, 3, 3], [6, 6, 6]])


def test_seasonal_naive_repeats_the_last_season():
    out = seasonal_naive(panel_of([1, 2, 3, 4, 5], [7, 8], [9]), horizon=5, season_length=2)
    np.testing.assert_array_equal(
        out,
        [
            [4, 5, 4, 5, 4],  # last season is (4, 5)
            [7, 8, 7, 8, 7],  # exactly one season long
            [9, 9, 9, 9, 9],  # shorter than a season: naive
        ],
    )
    np.testing.assert_array_equal(seasonal_naive(panel_of([1, 2, 3, 4, 5, 6]), 2, 3), [[4, 5]])


@pytest.mark.parametrize(
    ("horizon", "season", "message"),
    [
        (0, 2, "horizon must be a positive integer, got 0"),
        (2, 0, "season_length must be a positive integer, got 0"),
        (2, 1.5, "season_length must be a positive integer, got 1.5"),
    ],
)
def test_invalid_arguments(horizon, season, message):
    with pytest.raises(ValueError) as exc:
        seasonal_naive(panel_of([1, 2, 3]), horizon, season)
    assert str(exc.value) == message
    with pytest.raises(ValueError) as exc:
        naive_quantiles(panel_of([1, 2, 3]), horizon, season, (0.1, 0.5, 0.9))
    assert str(exc.value) == message


LEVELS = (0.1, 0.5, 0.9)
Z90 = NormalDist().inv_cdf(0.9)


def test_naive_quantiles_median_is_the_seasonal_naive_forecast():
    panel = panel_of([1, 2, 3, 4, 5], [7, 8], [9], [3, 1, 4, 1, 5, 9, 2, 6])
    q = naive_quantiles(panel, horizon=5, season_length=2, quantiles=LEVELS)
    assert q.shape == (4, 5, 3) and q.dtype == np.float64
    np.testing.assert_array_equal(q[..., 1], seasonal_naive(panel, 5, 2))
    np.testing.assert_array_equal(naive_quantiles(panel, 3, 1, LEVELS)[..., 1], naive(panel, 3))


def test_naive_quantiles_spread_grows_with_the_square_root_of_seasons_ahead():
    y = [0.0, 1.0, 0.0, 3.0, 0.0, 5.0]
    # lag-2 differences 0, 2, 0, 2 -> sigma = sqrt(mean([0, 4, 0, 4])) = sqrt(2)
    q = naive_quantiles(panel_of(y), horizon=5, season_length=2, quantiles=LEVELS)[0]
    seasons_ahead = np.array([1, 1, 2, 2, 3])
    np.testing.assert_allclose(q[:, 1], [0.0, 5.0, 0.0, 5.0, 0.0])
    np.testing.assert_allclose(q[:, 2] - q[:, 1], Z90 * np.sqrt(2) * np.sqrt(seasons_ahead))
    np.testing.assert_allclose(q[:, 1] - q[:, 0], q[:, 2] - q[:, 1])  # symmetric levels, symmetric spread
    # naive (season 1): lag-1 differences 1, -1, 3, -3, 5 -> sigma = sqrt(45 / 5) = 3, spread 3 * sqrt(h)
    q = naive_quantiles(panel_of(y), horizon=4, season_length=1, quantiles=LEVELS)[0]
    np.testing.assert_allclose(q[:, 2] - q[:, 1], Z90 * 3.0 * np.sqrt([1, 2, 3, 4]))


def test_naive_quantiles_short_series():
    # shorter than a season: lag 1 (differences 2, -1 -> sigma = sqrt(2.5)); a single value has no spread
    q = naive_quantiles(panel_of([1.0, 3.0, 2.0], [4.0]), horizon=2, season_length=5, quantiles=LEVELS)
    np.testing.assert_allclose(q[0, :, 1], [2.0, 2.0])
    np.testing.assert_allclose(q[0, :, 2] - q[0, :, 1], Z90 * np.sqrt(2.5) * np.sqrt([1, 2]))
    np.testing.assert_array_equal(q[1], np.full((2, 3), 4.0))


def test_recent_median_is_flat_at_the_window_median_with_empirical_quantiles():
    panel = panel_of([100, 0, 0, 3, 0, 5, 1], [2, 4])
    q = recent_median_quantiles(panel, horizon=3, window=5, quantiles=LEVELS)
    assert q.shape == (2, 3, 3) and q.dtype == np.float64
    # window of the first series: 0, 3, 0, 5, 1 (the 100 and the first 0 are older)
    np.testing.assert_allclose(q[0], np.tile(np.quantile([0, 3, 0, 5, 1], LEVELS), (3, 1)))
    assert (q[0, :, 1] == 1.0).all()
    np.testing.assert_allclose(q[1, :, 1], 3.0)  # a series shorter than the window uses all it has


def test_seasonal_mean_averages_each_season_position_over_whole_seasons():
    # season 3, window 7 -> two whole seasons: (1, 2, 6) and (3, 4, 8); the oldest value (50) is left out
    y = [50, 1, 2, 6, 3, 4, 8]
    q = seasonal_mean_quantiles(panel_of(y), horizon=4, season_length=3, window=7, quantiles=LEVELS)[0]
    np.testing.assert_allclose(q[:, 1], [2, 3, 7, 2])  # step h forecasts position h of the next season
    # residuals around the means are +-1 at every position: sigma = sqrt(1 * 2 / 1) = sqrt(2), k = 2
    np.testing.assert_allclose(q[:, 2] - q[:, 1], Z90 * np.sqrt(2) * np.sqrt(1.5))
    # a window of one season is seasonal naive, intervals included
    one = seasonal_mean_quantiles(panel_of(y), horizon=4, season_length=3, window=3, quantiles=LEVELS)[0]
    np.testing.assert_array_equal(one, naive_quantiles(panel_of(y), 4, 3, LEVELS)[0])


def test_baseline_quantiles_by_name():
    panel = panel_of([3, 1, 4, 1, 5, 9, 2, 6])
    assert set(BASELINES) == {"seasonal_naive", "naive", "recent_median", "seasonal_mean"}
    np.testing.assert_array_equal(
        baseline_quantiles("naive", panel, 3, 2, 4, LEVELS), naive_quantiles(panel, 3, 1, LEVELS)
    )
    np.testing.assert_array_equal(
        baseline_quantiles("recent_median", panel, 3, 2, 4, LEVELS),
        recent_median_quantiles(panel, 3, 4, LEVELS),
    )
    with pytest.raises(ValueError) as exc:
        baseline_quantiles("ets", panel, 3, 2, 4, LEVELS)
    assert str(exc.value) == (
        "unknown baseline 'ets'; choose one of ['naive', 'recent_median', 'seasonal_mean', 'seasonal_naive']"
    )

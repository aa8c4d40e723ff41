import numpy as np
import pytest

from lstm_model.baselines import naive, seasonal_naive
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

import math

import numpy as np
import pytest

from lstm_model.metrics import coverage, mae, mase, rmse, smape

Y, YHAT = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0])


def test_mae_rmse_by_hand():
    assert mae(Y, YHAT) == pytest.approx(1.0)  # (1 + 0 + 2) / 3
    assert rmse(Y, YHAT) == pytest.approx(math.sqrt(5 / 3))  # sqrt((1 + 0 + 4) / 3)


def test_smape_by_hand_and_zero_over_zero():
    # 100 * mean(2*1/3, 0, 2*2/8)
    assert smape(Y, YHAT) == pytest.approx(100 * (2 / 3 + 0 + 0.5) / 3)
    assert smape([0.0, 1.0], [0.0, 1.0]) == 0.0  # 0/0 is a perfect forecast, not nan
    assert smape([0.0, 0.0], [1.0, 0.0]) == pytest.approx(100.0)  # (200 + 0) / 2
    assert smape([-1.0], [1.0]) == pytest.approx(200.0)


def test_mase_by_hand():
    insample = np.array([1.0, 3.0, 2.0, 4.0, 3.0, 5.0])
    # lag-2 in-sample errors: |2-1|, |4-3|, |3-2|, |5-4| -> scale 1
    assert mase(Y, YHAT, insample, season_length=2) == pytest.approx(1.0)
    # lag-1 errors: 2, 1, 2, 1, 2 -> scale 1.6
    assert mase(Y, YHAT, insample, season_length=1) == pytest.approx(1.0 / 1.6)


def test_mase_falls_back_to_lag_one_and_is_nan_when_undefined():
    # two values, season 2: no full season + 1, so lag 1 -> scale |3 - 1| = 2
    assert mase(Y, YHAT, np.array([1.0, 3.0]), season_length=2) == pytest.approx(0.5)
    assert math.isnan(mase(Y, YHAT, np.array([4.0, 4.0, 4.0]), season_length=1))  # zero scale
    assert math.isnan(mase(Y, YHAT, np.array([1.0, 2.0, 1.0, 2.0]), season_length=2))  # perfectly periodic
    assert math.isnan(mase(Y, YHAT, np.array([1.0]), season_length=1))  # no scale at all


def test_coverage_by_hand_with_inclusive_bounds():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    lower, upper = np.array([0.0, 2.0, 3.5, 0.0]), np.array([2.0, 2.5, 5.0, 3.9])
    assert coverage(y, lower, upper) == 0.5  # 1 inside, 2 on the lower edge; 3 below, 4 above
    assert coverage(y, y, y) == 1.0
    with pytest.raises(ValueError) as exc:
        coverage(y, lower, upper[:3])
    assert str(exc.value) == "y, lower and upper must have the same shape, got (4,), (4,) and (3,)"
    with pytest.raises(ValueError, match="^y, lower and upper are empty$"):
        coverage([], [], [])


def test_input_validation():
    with pytest.raises(ValueError, match=r"^y and yhat must have the same shape, got \(3,\) and \(2,\)$"):
        mae(Y, YHAT[:2])
    with pytest.raises(ValueError, match="^y and yhat are empty$"):
        rmse([], [])
    with pytest.raises(ValueError, match="^season_length must be a positive integer, got 0$"):
        mase(Y, YHAT, Y, season_length=0)
    with pytest.raises(ValueError, match=r"^insample must be 1-D, got shape \(1, 3\)$"):
        mase(Y, YHAT, Y[None], season_length=1)

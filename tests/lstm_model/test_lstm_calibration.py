"""Pinball loss and split-conformal interval calibration, on hand-computed examples."""

import numpy as np
import pytest
import torch

from lstm_model.calibration import apply_calibration, conformal_widths, quantile_pairs
from lstm_model.losses import pinball_loss
from lstm_model.metrics import coverage

LEVELS = (0.1, 0.5, 0.9)


def loss(pred, y, levels) -> float:
    return float(pinball_loss(torch.tensor(pred), torch.tensor(y), torch.tensor(levels)))


def test_pinball_loss_by_hand():
    # y = 1, predictions 0, 1, 2 for levels 0.1, 0.5, 0.9: errors y - pred = 1, 0, -1
    # 0.1 * 1 = 0.1 (under), 0 (exact), (0.9 - 1) * -1 = 0.1 (over) -> mean 0.2 / 3
    assert loss([[[0.0, 1.0, 2.0]]], [[1.0]], LEVELS) == pytest.approx(0.2 / 3)
    # asymmetric: a P90 that is too low costs 9x more than one too high by the same amount
    assert loss([[[-1.0]]], [[0.0]], [0.9]) == pytest.approx(0.9)
    assert loss([[[1.0]]], [[0.0]], [0.9]) == pytest.approx(0.1)
    # the median's pinball loss is half the absolute error, averaged over batch and horizon
    assert loss([[[0.0], [2.0]], [[5.0], [1.0]]], [[1.0, 1.0], [1.0, 1.0]], [0.5]) == pytest.approx(
        0.5 * (1 + 1 + 4 + 0) / 4
    )


def test_pinball_loss_is_float32_for_bf16_predictions():
    pred = torch.tensor([[[0.0, 1.0, 2.0]]], dtype=torch.bfloat16)
    out = pinball_loss(pred, torch.tensor([[1.0]]), torch.tensor(LEVELS))
    assert out.dtype == torch.float32 and float(out) == pytest.approx(0.2 / 3)


@pytest.mark.parametrize(
    ("levels", "pairs"),
    [
        ((0.1, 0.5, 0.9), [(0, 2)]),
        ((0.05, 0.1, 0.5, 0.9, 0.95), [(0, 4), (1, 3)]),  # outermost first
        ((0.1, 0.2, 0.5, 0.8), [(1, 3)]),  # 0.1 has no mirror image; 0.2/0.8 still pair up
        ((0.1, 0.25, 0.5, 0.9), [(0, 3)]),
        ((0.25, 0.5), []),
        ((0.5,), []),
    ],
)
def test_quantile_pairs_match_by_value(levels, pairs):
    assert quantile_pairs(levels) == pairs


def test_conformal_widths_widen_a_too_narrow_interval_to_the_right_rank():
    """n = 9, nominal 80%: the correction is the ceil(10 * 0.8) = 8th smallest score."""
    y = np.array([0.0, 0.5, -0.5, 1.5, -2.0, 3.0, 0.2, -0.2, 0.1])[:, None]  # (n, horizon=1)
    pred = np.broadcast_to(np.array([-1.0, 0.0, 1.0]), (9, 1, 3))  # the interval [-1, 1] every time
    # scores max(lo - y, y - hi): -1, -0.5, -0.5, 0.5, 1, 2, -0.8, -0.8, -0.9 -> sorted 8th is 1.0
    widths = conformal_widths(pred, y, LEVELS, quantile_pairs(LEVELS))
    np.testing.assert_array_equal(widths, [[1.0]])
    calibrated = apply_calibration(pred, widths, LEVELS)
    np.testing.assert_array_equal(calibrated[0, 0], [-2.0, 0.0, 2.0])
    assert coverage(y[:, 0], calibrated[:, 0, 0], calibrated[:, 0, 2]) == pytest.approx(8 / 9)
    assert coverage(y[:, 0], pred[:, 0, 0], pred[:, 0, 2]) == pytest.approx(6 / 9)  # before: too narrow


def test_conformal_widths_narrow_a_too_wide_interval():
    # quarters are exact in binary, so the window on the new edge stays inside (y <= upper holds exactly)
    y = np.array([0.0, 0.25, -0.5, 0.75, -1.0, 1.25, -1.5, 1.75, -2.0])[:, None]
    pred = np.broadcast_to(np.array([-8.0, 0.0, 8.0]), (9, 1, 3))
    # scores |y| - 8: the 8th smallest is 1.75 - 8 = -6.25, so the interval shrinks to [-1.75, 1.75]
    widths = conformal_widths(pred, y, LEVELS, quantile_pairs(LEVELS))
    np.testing.assert_array_equal(widths, [[-6.25]])
    calibrated = apply_calibration(pred, widths, LEVELS)
    np.testing.assert_array_equal(calibrated[0, 0], [-1.75, 0.0, 1.75])
    assert coverage(y[:, 0], calibrated[:, 0, 0], calibrated[:, 0, 2]) == pytest.approx(8 / 9)


def test_conformal_widths_per_pair_and_per_horizon_step():
    levels = (0.05, 0.1, 0.5, 0.9, 0.95)
    n = 9
    scores = np.arange(1.0, n + 1)  # the window with score s lies s above the top of each interval
    pred = np.zeros((n, 2, 5))
    y = np.stack([scores, 10 * scores], axis=1)  # (n, horizon=2): step 2's errors are 10x larger
    widths = conformal_widths(pred, y, levels, quantile_pairs(levels))
    # 90% (0.05, 0.95): rank ceil(10 * 0.9) = 9 -> the largest; 80% (0.1, 0.9): rank 8
    np.testing.assert_allclose(widths, [[9.0, 90.0], [8.0, 80.0]])


def test_conformal_widths_with_few_or_no_windows():
    pred, y = np.zeros((3, 1, 3)), np.array([[1.0], [3.0], [2.0]])
    # rank ceil(4 * 0.8) = 4 > 3 windows: no finite rank guarantees 80%, so the largest score is used
    np.testing.assert_array_equal(conformal_widths(pred, y, LEVELS, [(0, 2)]), [[3.0]])
    empty = conformal_widths(np.zeros((0, 4, 3)), np.zeros((0, 4)), LEVELS, [(0, 2)])
    np.testing.assert_array_equal(empty, np.zeros((1, 4)))
    assert conformal_widths(pred, y, (0.25, 0.5), []).shape == (0, 1)


def test_apply_calibration_sorts_crossing_quantiles():
    scaled = np.array([[[0.0, 1.0, 2.0], [3.0, 1.0, 2.0]]])  # (1, horizon=2, Q); step 2 crosses already
    out = apply_calibration(scaled, np.array([[0.5, 0.0]]), LEVELS)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[[-0.5, 1.0, 2.5], [1.0, 2.0, 3.0]]])
    # narrowing past the median: 0 + 3 = 3 and 2 - 3 = -1 swap around the median, sorted again
    np.testing.assert_array_equal(
        apply_calibration(scaled[:, :1], np.array([[-3.0]]), LEVELS), [[[-1.0, 1.0, 3.0]]]
    )
    # a level without a mirror image has no correction; the rest is only sorted
    np.testing.assert_array_equal(
        apply_calibration(np.array([[[2.0, 1.0]]]), np.zeros((0, 1)), (0.25, 0.5)), [[[1.0, 2.0]]]
    )


def test_apply_calibration_rejects_a_calibration_of_the_wrong_shape():
    with pytest.raises(ValueError) as exc:
        apply_calibration(np.zeros((2, 4, 3)), np.zeros((1, 3)), LEVELS)
    assert str(exc.value) == (
        "calibration must have shape (1, 4) (symmetric quantile pairs of (0.1, 0.5, 0.9), horizon), "
        "got (1, 3)"
    )

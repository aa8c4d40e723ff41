import dataclasses

import numpy as np
import pytest
import torch

import lstm_model.train as train_mod
from lstm_model.baselines import naive
from lstm_model.config import ModelConfig, TrainConfig
from lstm_model.metrics import mae
from lstm_model.model import LSTMForecaster
from lstm_model.train import fit, predict

HISTORY_KEYS = {"epoch", "train_loss", "val_loss", "lr", "seconds"}


@pytest.fixture(scope="module")
def covariate_fit(make_panel):
    """One tiny fit with past and future covariates, shared by the predict tests."""
    panel = make_panel(n_series=3, length=80, n_past=1, n_future=1)
    model_cfg = ModelConfig(lookback=12, horizon=4, hidden_size=8, num_layers=2, dropout=0.1)
    train_cfg = TrainConfig(max_epochs=2, steps_per_epoch=3, batch_size=16, max_val_windows=64, device="cpu")
    return panel, fit(panel, model_cfg, train_cfg)


def test_fit_learns_a_clean_seasonal_panel_and_beats_naive(make_panel):
    panel = make_panel(n_series=3, length=150)
    horizon = 6
    cutoff = panel.n_steps - horizon
    train, test = panel.truncate(cutoff), panel.slice_global(cutoff, panel.n_steps)
    result = fit(
        train,
        ModelConfig(lookback=24, horizon=horizon, hidden_size=16, num_layers=1, dropout=0.0),
        TrainConfig(
            max_epochs=4,
            steps_per_epoch=15,
            batch_size=32,
            learning_rate=1e-2,
            max_val_windows=64,
            device="cpu",
        ),
    )
    val = [h["val_loss"] for h in result.history]
    assert min(val) < 0.5 * val[0]
    y = np.stack(test.target)
    assert mae(y, predict(result, train)) < 0.5 * mae(y, naive(train, horizon))


def test_result_fields_history_and_callback(tiny_model, tiny_train, make_panel):
    seen = []
    result = fit(make_panel(), tiny_model, tiny_train, on_epoch=seen.append)
    assert [set(h) for h in result.history] == [HISTORY_KEYS] * 2
    assert seen == result.history
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.history[0]["lr"] == tiny_train.learning_rate
    assert result.stopped_reason == "max_epochs"
    assert result.best_epoch == 1 + int(np.argmin([h["val_loss"] for h in result.history]))
    assert result.device == "cpu"
    assert not result.model.training
    assert all(p.device.type == "cpu" for p in result.model.parameters())
    assert (result.model_config, result.train_config) == (tiny_model, tiny_train)
    assert result.scaler.series_ids == ("s0", "s1", "s2")
    assert (result.past_names, result.future_names) == ((), ())


def test_same_seed_gives_bit_identical_predictions(tiny_model, tiny_train, make_panel):
    panel = make_panel(n_series=3, length=80, n_past=1, n_future=1, noise=0.3)
    future = [np.ones((tiny_model.horizon, 1), np.float32)] * 3
    first = predict(fit(panel, tiny_model, tiny_train), panel, future)
    second = predict(fit(panel, tiny_model, tiny_train), panel, future)
    np.testing.assert_array_equal(first, second)
    other = predict(fit(panel, tiny_model, dataclasses.replace(tiny_train, seed=1)), panel, future)
    assert not np.array_equal(first, other)


def test_non_finite_loss_raises_naming_the_epoch(monkeypatch, tiny_model, tiny_train, make_panel):
    original = LSTMForecaster.forward

    def exploding(self, x_past, x_future=None):
        return original(self, x_past, x_future) * float("nan")

    monkeypatch.setattr(LSTMForecaster, "forward", exploding)
    with pytest.raises(FloatingPointError, match=r"^training loss became nan in epoch 1; try a lower"):
        fit(make_panel(), tiny_model, tiny_train)


def test_no_full_training_window_is_a_clear_error(make_panel):
    panel = make_panel(n_series=2, length=30)
    cfg = ModelConfig(lookback=24, horizon=6)
    with pytest.raises(ValueError) as exc:
        fit(panel, cfg, TrainConfig(device="cpu"))
    assert str(exc.value) == (
        "no series has a full training window: a window needs lookback + horizon = 30 steps before the "
        "validation region (the last max(horizon, val_fraction * length) steps of each series), "
        "but the longest series has only 30 steps"
    )


def scripted_val_losses(monkeypatch, losses):
    """Replace validation with a fixed sequence; keep a copy of the weights at each evaluation."""
    snapshots = []

    def fake_evaluate(model, source, starts, batch_size):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return losses[len(snapshots) - 1]

    monkeypatch.setattr(train_mod, "_evaluate", fake_evaluate)
    return snapshots


def test_early_stopping_restores_best_weights_and_reduces_lr(monkeypatch, tiny_model, make_panel):
    snapshots = scripted_val_losses(monkeypatch, [1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.1, 0.1])
    cfg = TrainConfig(
        max_epochs=8, steps_per_epoch=2, batch_size=8, patience=4, learning_rate=1e-2, device="cpu"
    )
    result = fit(make_panel(), tiny_model, cfg)
    assert result.stopped_reason == "early_stopping"
    assert len(result.history) == 6  # epochs 3..6 did not improve on epoch 2
    assert result.best_epoch == 2
    # scheduler patience = 4 // 2 - 1 = 1: halved after the 2nd bad epoch (4), used from epoch 5 on
    assert [h["lr"] for h in result.history] == [1e-2] * 4 + [5e-3] * 2
    for name, value in result.model.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][name], rtol=0, atol=0)
    assert not all(torch.equal(v, snapshots[-1][k]) for k, v in result.model.state_dict().items())


def test_time_budget_stops_after_the_current_step_and_keeps_a_model(tiny_model, make_panel):
    panel = make_panel()
    cfg = TrainConfig(max_epochs=50, steps_per_epoch=5, batch_size=8, time_budget_s=1e-6, device="cpu")
    result = fit(panel, tiny_model, cfg)
    assert result.stopped_reason == "time_budget"
    assert len(result.history) == 1 and result.best_epoch == 1
    assert predict(result, panel).shape == (3, tiny_model.horizon)


def test_predict_shape_dtype_and_only_the_last_lookback_matters(covariate_fit):
    panel, result = covariate_fit
    future = [np.zeros((4, 1)), np.ones((4, 1)), np.zeros((4, 1))]
    out = predict(result, panel, future)
    assert out.shape == (3, 4) and out.dtype == np.float64 and np.isfinite(out).all()
    recent = panel.slice_global(panel.n_steps - 12, panel.n_steps)  # exactly one lookback per series
    np.testing.assert_array_equal(predict(result, recent, future), out)


def test_predict_scales_inputs_exactly_like_training(covariate_fit):
    panel, result = covariate_fit
    sid, i, lb = "s1", 1, 12
    sc = result.scaler
    x = np.concatenate(
        [
            sc.transform_target(sid, panel.target[i][-lb:])[:, None],
            sc.transform_past(sid, panel.past_covariates[i][-lb:]),
            sc.transform_future(sid, panel.future_covariates[i][-lb:]),
        ],
        axis=1,
    )
    fut = np.full((4, 1), 1.0)
    with torch.no_grad():
        x_future = torch.from_numpy(sc.transform_future(sid, fut)[None])
        scaled = result.model(torch.from_numpy(x[None]), x_future)
    expected = sc.inverse_target(sid, scaled.numpy()[0].astype(np.float64))
    out = predict(result, panel, [np.zeros((4, 1)), fut, np.zeros((4, 1))])
    np.testing.assert_allclose(out[i], expected, rtol=1e-6)  # batch size may change the last float32 bit


def test_predict_future_covariate_errors(covariate_fit):
    panel, result = covariate_fit
    with pytest.raises(ValueError, match=r"^future covariates \('f0',\) for the 4 forecast steps are"):
        predict(result, panel)
    with pytest.raises(ValueError, match=r"^future has 2 entries but the panel has 3 series$"):
        predict(result, panel, [np.zeros((4, 1))] * 2)
    with pytest.raises(ValueError, match=r"^series 's2': future must have shape \(4, 1\), got \(3, 1\)$"):
        predict(result, panel, [np.zeros((4, 1))] * 2 + [np.zeros((3, 1))])
    with pytest.raises(ValueError, match=r"^series 's0': future covariates contain non-finite values$"):
        predict(result, panel, [np.full((4, 1), np.nan)] + [np.zeros((4, 1))] * 2)


def test_predict_panel_errors(covariate_fit, tiny_model, tiny_train, make_panel):
    panel, result = covariate_fit
    future = [np.zeros((4, 1))] * 3
    short = panel.slice_global(panel.n_steps - 11, panel.n_steps)
    with pytest.raises(ValueError) as exc:
        predict(result, short, future)
    assert str(exc.value) == (
        "series shorter than lookback=12: 's0' (11 steps), 's1' (11 steps), 's2' (11 steps)"
    )
    with pytest.raises(ValueError, match=r"^panel covariates past=\(\) future=\(\) do not match the model's"):
        predict(result, make_panel(n_series=3, length=80), future)
    unseen = make_panel(n_series=4, length=80, n_past=1, n_future=1).select(["s3"])
    with pytest.raises(KeyError, match="series 's3' was not seen when the scaler was fitted"):
        predict(result, unseen, future[:1])
    plain = fit(make_panel(n_series=2, length=60), tiny_model, tiny_train)
    with pytest.raises(ValueError, match="^future covariates were given but the model was trained without"):
        predict(plain, make_panel(n_series=2, length=60), [np.zeros((4, 0))] * 2)


def test_predict_in_chunks_matches_one_pass(covariate_fit, monkeypatch):
    panel, result = covariate_fit
    future = [np.full((4, 1), float(i % 2)) for i in range(3)]
    whole = predict(result, panel, future)
    monkeypatch.setattr(train_mod, "PREDICT_CHUNK", 2)  # 3 series -> chunks of 2 and 1
    # float32 kernels round differently for another batch size, hence close rather than equal
    np.testing.assert_allclose(predict(result, panel, future), whole, rtol=1e-6)

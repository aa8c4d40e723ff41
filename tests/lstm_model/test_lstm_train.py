import dataclasses

import numpy as np
import pytest
import torch

import lstm_model.prediction as prediction_mod
import lstm_model.train as train_mod
from lstm_model.baselines import naive
from lstm_model.config import ModelConfig
from lstm_model.metrics import mae
from lstm_model.model import LSTMForecaster
from lstm_model.prediction import predict, predict_origins
from lstm_model.train import TrainingFailed, fit, warm_start_problem
from lstm_model.windows import WindowSource

HISTORY_KEYS = {"epoch", "train_loss", "val_loss", "lr", "seconds"}
TINY = ModelConfig(lookback=12, horizon=4, hidden_size=8, num_layers=2, dropout=0.1)
WINDOW = TINY.lookback + TINY.horizon


@pytest.fixture(scope="module")
def covariate_fit(make_panel, make_train):
    """One tiny fit with past and future covariates, shared by the predict tests."""
    panel = make_panel(n_series=3, length=80, n_past=1, n_future=1)
    return panel, fit(panel, TINY, make_train())


@pytest.fixture(scope="module")
def plain_fit(make_panel, make_train):
    """Lengths 80, 70, 60 on an 80-step axis (s2 starts at global position 20); no covariates."""
    panel = make_panel(n_series=3, length=80, noise=0.3)
    return panel, fit(panel, TINY, make_train())


def test_fit_learns_a_clean_seasonal_panel_and_beats_naive(make_panel, make_train):
    panel = make_panel(n_series=3, length=150)
    horizon = 6
    cutoff = panel.n_steps - horizon
    train, test = panel.truncate(cutoff), panel.slice_global(cutoff, panel.n_steps)
    result = fit(
        train,
        ModelConfig(lookback=24, horizon=horizon, hidden_size=16, num_layers=1, dropout=0.0),
        make_train(max_epochs=4, steps_per_epoch=15, batch_size=32, learning_rate=1e-2),
    )
    val = [h["val_loss"] for h in result.history]
    assert min(val) < 0.5 * val[0]
    y = np.stack(test.target)
    median = predict(result, train)[..., result.model_config.median_index]
    assert mae(y, median) < 0.5 * mae(y, naive(train, horizon))


def test_result_fields_history_and_callback(tiny_model, tiny_train, make_panel):
    seen = []
    result = fit(make_panel(), tiny_model, tiny_train, on_epoch=seen.append)
    assert [set(h) for h in result.history] == [HISTORY_KEYS] * 3
    assert seen == result.history
    # epoch 0 is the model before training: validated, not trained
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert result.history[0]["train_loss"] is None and result.history[1]["train_loss"] > 0
    assert result.history[0]["lr"] == tiny_train.learning_rate
    assert result.stopped_reason == "max_epochs"
    assert result.best_epoch == int(np.argmin([h["val_loss"] for h in result.history]))
    assert result.device == "cpu"
    assert not result.model.training
    assert all(p.device.type == "cpu" for p in result.model.parameters())
    assert (result.model_config, result.train_config) == (tiny_model, tiny_train)
    assert result.scaler.series_ids == ("s0", "s1", "s2")
    assert (result.past_names, result.future_names) == ((), ())
    # one (0.1, 0.9) pair, one correction per horizon step; an untrained-ish model's intervals are too
    # narrow, so calibration widens them
    assert result.calibration.shape == (1, tiny_model.horizon) and (result.calibration > 0).all()


def test_calibrate_false_leaves_the_intervals_alone(tiny_model, make_train, make_panel):
    result = fit(make_panel(), tiny_model, make_train(calibrate=False))
    np.testing.assert_array_equal(result.calibration, np.zeros((1, tiny_model.horizon)))


@pytest.mark.parametrize(
    "model_cfg",
    [TINY, dataclasses.replace(TINY, patch_len=3, embedding_dim=2, instance_norm=False)],
    ids=["default", "patches_embedding"],
)
def test_same_seed_gives_bit_identical_predictions(model_cfg, tiny_train, make_panel):
    panel = make_panel(n_series=3, length=80, n_past=1, n_future=1, noise=0.3)
    future = [np.ones((model_cfg.horizon, 1), np.float32)] * 3
    first = predict(fit(panel, model_cfg, tiny_train), panel, future)
    second = predict(fit(panel, model_cfg, tiny_train), panel, future)
    np.testing.assert_array_equal(first, second)
    other = predict(fit(panel, model_cfg, dataclasses.replace(tiny_train, seed=1)), panel, future)
    assert not np.array_equal(first, other)


def test_non_finite_loss_raises_naming_the_epoch(monkeypatch, tiny_model, tiny_train, make_panel):
    original = LSTMForecaster.forward

    def exploding(self, x_past, x_future=None, series=None):
        return original(self, x_past, x_future, series) * float("nan")

    monkeypatch.setattr(LSTMForecaster, "forward", exploding)
    with pytest.raises(TrainingFailed) as exc:
        fit(make_panel(), tiny_model, tiny_train)
    assert (
        str(exc.value) == "validation loss of the model before training is nan: its forecasts are not finite"
    )

    calls = []

    def exploding_after_validation(self, x_past, x_future=None, series=None):
        calls.append(self.training)
        out = original(self, x_past, x_future, series)
        return out * float("nan") if self.training else out

    monkeypatch.setattr(LSTMForecaster, "forward", exploding_after_validation)
    with pytest.raises(TrainingFailed, match=r"^training loss became nan in epoch 1; try a lower"):
        fit(make_panel(), tiny_model, tiny_train)
    assert calls[0] is False and calls[-1] is True  # validated before training, then trained


def test_a_non_finite_validation_loss_after_an_epoch_fails_the_fit(
    monkeypatch, tiny_model, tiny_train, make_panel
):
    scripted_val_losses(monkeypatch, [1.0, float("inf")])
    with pytest.raises(TrainingFailed, match=r"^validation loss became inf in epoch 1$"):
        fit(make_panel(), tiny_model, tiny_train)


def test_training_failed_is_a_floating_point_error_and_other_errors_are_not_training_failures(
    make_panel, make_train
):
    """Callers that caught FloatingPointError still catch it; a bad setup is no reason to fall back."""
    assert issubclass(TrainingFailed, FloatingPointError)
    with pytest.raises(ValueError, match="^no series has a full training window") as exc:
        fit(make_panel(n_series=2, length=30), ModelConfig(lookback=24, horizon=6), make_train())
    assert not isinstance(exc.value, TrainingFailed)


def test_no_full_training_window_is_a_clear_error(make_panel, make_train):
    panel = make_panel(n_series=2, length=30)
    cfg = ModelConfig(lookback=24, horizon=6)
    with pytest.raises(ValueError) as exc:
        fit(panel, cfg, make_train())
    assert str(exc.value) == (
        "no series has a full training window: a window needs lookback + horizon = 30 steps before the "
        "validation region (the last max(horizon, val_fraction * length) steps of each series), "
        "but the longest series has only 30 steps"
    )


def scripted_val_losses(monkeypatch, losses):
    """Replace validation with a fixed sequence; keep a copy of the weights at each evaluation."""
    snapshots = []

    def fake_evaluate(run, starts, batch_size, levels):
        snapshots.append({k: v.clone() for k, v in run.model.state_dict().items()})
        return losses[len(snapshots) - 1]

    monkeypatch.setattr(train_mod, "_evaluate", fake_evaluate)
    return snapshots


def test_early_stopping_restores_best_weights_and_reduces_lr(monkeypatch, tiny_model, make_panel, make_train):
    # epoch 0 (before training), then epochs 1..
    snapshots = scripted_val_losses(monkeypatch, [2.0, 1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.1, 0.1])
    cfg = make_train(max_epochs=8, steps_per_epoch=2, batch_size=8, patience=4, learning_rate=1e-2)
    result = fit(make_panel(), tiny_model, cfg)
    assert result.stopped_reason == "early_stopping"
    assert len(result.history) == 7  # epochs 0..6; epochs 3..6 did not improve on epoch 2
    assert result.best_epoch == 2
    # scheduler patience = 4 // 2 - 1 = 1: halved after the 2nd bad epoch (4), used from epoch 5 on
    assert [h["lr"] for h in result.history] == [1e-2] * 5 + [5e-3] * 2
    for name, value in result.model.state_dict().items():
        torch.testing.assert_close(value, snapshots[2][name], rtol=0, atol=0)
    assert not all(torch.equal(v, snapshots[-1][k]) for k, v in result.model.state_dict().items())


def test_the_model_before_training_is_kept_when_no_epoch_beats_it(
    monkeypatch, tiny_model, make_panel, make_train
):
    snapshots = scripted_val_losses(monkeypatch, [0.1, 0.5, 0.6, 0.7, 0.8])
    result = fit(make_panel(), tiny_model, make_train(max_epochs=8, steps_per_epoch=2, patience=4))
    assert (result.best_epoch, result.stopped_reason, len(result.history)) == (0, "early_stopping", 5)
    for name, value in result.model.state_dict().items():
        torch.testing.assert_close(value, snapshots[0][name], rtol=0, atol=0)


def test_linear_init_starts_at_the_least_squares_linear_forecaster(make_panel, make_train):
    """A noiseless seasonal panel is a linear function of its lookback: the linear skip path alone, before
    any step, forecasts it almost exactly, while the zero start (the naive forecast) is far off."""
    panel = make_panel(n_series=3, length=150, noise=0.0)
    cfg = ModelConfig(lookback=24, horizon=6, hidden_size=8, num_layers=1, dropout=0.0)
    linear = fit(panel, cfg, make_train(max_epochs=1, steps_per_epoch=1, linear_init=True))
    naive_start = fit(panel, cfg, make_train(max_epochs=1, steps_per_epoch=1, linear_init=False))
    assert linear.history[0]["val_loss"] < 0.01 * naive_start.history[0]["val_loss"]
    assert naive_start.history[0]["val_loss"] > 0.1


def test_mse_loss_trains_one_point_forecast(make_panel, make_train):
    cfg = dataclasses.replace(TINY, quantiles=(0.5,))
    result = fit(make_panel(), cfg, make_train(loss="mse"))
    assert predict(result, make_panel()).shape == (3, TINY.horizon, 1)
    with pytest.raises(ValueError) as exc:
        fit(make_panel(), TINY, make_train(loss="mse"))
    assert str(exc.value) == (
        "train.loss 'mse' trains one point forecast: model.quantiles must be [0.5], got [0.1, 0.5, 0.9]"
    )


def test_time_budget_stops_after_the_current_step_and_keeps_a_model(tiny_model, make_panel, make_train):
    panel = make_panel()
    cfg = make_train(max_epochs=50, steps_per_epoch=5, batch_size=8, time_budget_s=1e-6)
    result = fit(panel, tiny_model, cfg)
    assert result.stopped_reason == "time_budget"
    assert len(result.history) == 2 and result.best_epoch in (0, 1)  # epoch 0, then one step of epoch 1
    assert predict(result, panel).shape == (3, tiny_model.horizon, 3)


def test_predict_shape_dtype_and_only_the_last_lookback_matters(covariate_fit):
    panel, result = covariate_fit
    future = [np.zeros((4, 1)), np.ones((4, 1)), np.zeros((4, 1))]
    out = predict(result, panel, future)
    assert out.shape == (3, 4, 3) and out.dtype == np.float64 and np.isfinite(out).all()
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
        scaled = result.model(torch.from_numpy(x[None]), x_future).numpy()[0].astype(np.float64)  # (4, 3)
    scaled[:, 0] -= result.calibration[0]  # the (0.1, 0.9) interval, widened by its correction
    scaled[:, 2] += result.calibration[0]
    expected = sc.inverse_target(sid, np.sort(scaled, axis=1))
    out = predict(result, panel, [np.zeros((4, 1)), fut, np.zeros((4, 1))])
    np.testing.assert_allclose(out[i], expected, rtol=1e-6)  # batch size may change the last float32 bit


def test_quantiles_are_ordered_on_a_trained_model(covariate_fit):
    panel, result = covariate_fit
    future = [np.full((4, 1), float(i % 2)) for i in range(3)]
    q = predict(result, panel, future)
    assert (q[..., 0] <= q[..., 1]).all() and (q[..., 1] <= q[..., 2]).all()
    assert (q[..., 2] - q[..., 0] > 0).all()  # a real interval, not a point
    everywhere = predict_origins(result, panel, np.arange(panel.n_steps))
    finite = ~np.isnan(everywhere).any(axis=(2, 3))
    assert finite.sum() > 100 and (np.diff(everywhere[finite], axis=-1) >= 0).all()
    # A correction that narrows the interval past the median still yields ordered quantiles.
    crossed = dataclasses.replace(result, calibration=np.full_like(result.calibration, -50.0))
    q = predict(crossed, panel, future)
    assert (np.diff(q, axis=-1) >= 0).all()


def test_calibrated_intervals_cover_the_validation_windows(make_panel, make_train):
    """Split-conformal: with the ceil((n + 1) c)-th smallest score added, at least that many of the n
    calibration windows lie inside the interval, per horizon step (one window may sit exactly on the
    edge and drop out through float32 rounding in another batch size)."""
    panel = make_panel(n_series=3, length=100, noise=0.5)
    cfg = make_train(val_fraction=0.3)
    calibrated = fit(panel, TINY, cfg)
    raw = fit(panel, TINY, dataclasses.replace(cfg, calibrate=False))
    source = WindowSource.from_panel(panel, TINY.lookback, TINY.horizon)
    starts = source.split(cfg.val_fraction)[1].all()
    series = source.series_of(starts)
    local = starts - source.offsets[series]  # first lookback step, local to the series
    origins = local + TINY.lookback + (panel.n_steps - panel.lengths()[series])
    targets = [panel.target[s][t + TINY.lookback : t + WINDOW] for s, t in zip(series, local, strict=True)]
    y = np.stack(targets)  # (n, horizon)

    def covered(result):
        q = predict_origins(result, panel, origins)[series, np.arange(len(starts))]  # (n, horizon, Q)
        return ((q[..., 0] <= y) & (y <= q[..., 2])).sum(axis=0)  # (horizon,)

    n = len(starts)
    assert n >= 50
    assert (covered(calibrated) >= np.ceil((n + 1) * 0.8) - 1).all()
    assert (covered(raw) < 0.8 * n).all()  # so the calibration did the work


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


def test_predict_panel_errors(covariate_fit, plain_fit, make_panel):
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
    plain_panel, plain = plain_fit
    with pytest.raises(ValueError, match="^future covariates were given but the model was trained without"):
        predict(plain, plain_panel, [np.zeros((4, 0))] * 3)


def test_predict_in_chunks_matches_one_pass(covariate_fit, monkeypatch):
    panel, result = covariate_fit
    future = [np.full((4, 1), float(i % 2)) for i in range(3)]
    whole = predict(result, panel, future)
    monkeypatch.setattr(prediction_mod, "PREDICT_BATCH", 2)  # 3 windows -> batches of 2 and 1
    # float32 kernels round differently for another batch size, hence close rather than equal
    np.testing.assert_allclose(predict(result, panel, future), whole, rtol=1e-6)


def test_predict_origins_is_nan_where_a_window_would_leave_its_series(plain_fit):
    panel, result = plain_fit  # series start at global 0, 10, 20; 80 steps; lookback 12, horizon 4
    origins = np.array([-1, 0, 11, 12, 25, 40, 76, 77, 80])
    out = predict_origins(result, panel, origins)
    assert out.shape == (3, len(origins), 4, 3)
    missing = np.isnan(out).all(axis=(2, 3))
    assert (missing == np.isnan(out).any(axis=(2, 3))).all()  # a window is all nan or all finite
    expected = np.array(
        [
            # -1  0    11     12     25     40     76     77    80
            [1, 1, 1, 0, 0, 0, 0, 1, 1],  # s0: needs 12 steps of history and 4 after
            [1, 1, 1, 1, 0, 0, 0, 1, 1],  # s1 starts at 10: origin 22 at the earliest
            [1, 1, 1, 1, 1, 0, 0, 1, 1],  # s2 starts at 20: origin 32 at the earliest
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(missing, expected)
    assert predict_origins(result, panel, np.array([], dtype=np.int64)).shape == (3, 0, 4, 3)


def test_predict_origins_equals_predict_at_each_origin(plain_fit):
    panel, result = plain_fit
    last = panel.n_steps - 4  # the last origin with a full horizon
    np.testing.assert_array_equal(
        predict_origins(result, panel, np.array([last]))[:, 0], predict(result, panel.truncate(last))
    )
    out = predict_origins(result, panel, np.array([25, 40, last]))
    np.testing.assert_allclose(out[:, 1], predict(result, panel.truncate(40)), rtol=1e-6)
    np.testing.assert_allclose(out[:, 2], predict(result, panel.truncate(last)), rtol=1e-6)
    early = predict(result, panel.truncate(25).select(["s0", "s1"]))  # s2 has no full lookback yet
    np.testing.assert_allclose(out[:2, 0], early, rtol=1e-6)


def test_predict_with_future_covariates_matches_the_windows_seen_in_training(covariate_fit):
    """predict appends `future` after the lookback; predict_origins reads the panel's own future rows."""
    panel, result = covariate_fit
    last = panel.n_steps - 4
    future = [f[-4:] for f in panel.future_covariates]
    np.testing.assert_array_equal(
        predict(result, panel.truncate(last), future),
        predict_origins(result, panel, np.array([last]))[:, 0],
    )


def test_series_embedding_follows_the_series_ids_not_their_position(make_panel, make_train):
    panel = make_panel(n_series=3, length=80, noise=0.3)
    result = fit(panel, dataclasses.replace(TINY, embedding_dim=2), make_train())
    assert result.model.n_series == 3
    full = predict(result, panel)
    np.testing.assert_allclose(predict(result, panel.select(["s2", "s0"])), full[[2, 0]], rtol=1e-6)
    # and the embedding matters: s2's window read as series 0 gives another forecast
    source = WindowSource.from_panel(panel.select(["s2"]), TINY.lookback, TINY.horizon, result.scaler)
    batch = source.gather(np.array([source.lengths[0] - WINDOW]))
    with torch.no_grad():
        own = result.model(batch.x_past, batch.x_future, batch.series)
        other = result.model(batch.x_past, batch.x_future, torch.zeros_like(batch.series))
    assert batch.series.tolist() == [2]
    assert (own - other).abs().max() > 1e-4
    unseen = make_panel(n_series=4, length=80).select(["s3"])
    with pytest.raises(KeyError, match="series 's3' was not seen when the scaler was fitted"):
        predict(result, unseen)


def test_warm_start_continues_from_the_given_weights_and_keeps_its_scaler(tiny_model, make_panel, make_train):
    panel = make_panel(n_series=3, length=120)
    base = fit(panel, tiny_model, make_train())
    longer = make_panel(n_series=3, length=140)  # the same series, newer data
    tuned = fit(
        longer, tiny_model, make_train(max_epochs=1, steps_per_epoch=1, learning_rate=1e-9), init=base
    )
    assert tuned.scaler is base.scaler
    # a negligible learning rate leaves the weights where the champion had them
    for name, weights in base.model.state_dict().items():
        torch.testing.assert_close(tuned.model.state_dict()[name], weights, atol=1e-6, rtol=0)
    fresh = fit(longer, tiny_model, make_train(max_epochs=1, steps_per_epoch=1, learning_rate=1e-9, seed=1))
    differs = any(
        not torch.allclose(fresh.model.state_dict()[k], v) for k, v in base.model.state_dict().items()
    )
    assert differs


def test_warm_start_problems_are_named(tiny_model, make_panel, make_train):
    base = fit(make_panel(n_series=3), tiny_model, make_train())
    assert warm_start_problem(base, make_panel(n_series=3), tiny_model) is None
    assert warm_start_problem(base, make_panel(n_series=4), tiny_model) == (
        "the series changed (new: ['s3'], gone: [])"
    )
    wider = dataclasses.replace(tiny_model, hidden_size=16)
    assert (
        warm_start_problem(base, make_panel(n_series=3), wider) == "the model settings changed (hidden_size)"
    )
    assert (
        warm_start_problem(base, make_panel(n_series=3, n_future=1), tiny_model) == "the covariates changed"
    )
    with pytest.raises(ValueError, match=r"^cannot warm-start: the model settings changed \(hidden_size\)$"):
        fit(make_panel(n_series=3), wider, make_train(), init=base)


def test_a_diverging_model_is_stopped_with_the_reason(monkeypatch, tiny_model, make_panel, make_train):
    """Outputs that grow with every evaluation, as weights do when the learning rate is far too high."""
    original, calls = LSTMForecaster.forward, []

    def growing(self, x_past, x_future=None, series=None):
        calls.append(1)
        return original(self, x_past, x_future, series) * (1.0 + len(calls)) ** 2

    monkeypatch.setattr(LSTMForecaster, "forward", growing)
    with pytest.raises(TrainingFailed, match=r"^training diverged: validation loss .* in epoch \d+ is "):
        fit(make_panel(), tiny_model, make_train(max_epochs=20, patience=20, divergence_factor=2.0))
    with pytest.raises(ValueError, match="divergence_factor"):
        make_train(divergence_factor=1.0)

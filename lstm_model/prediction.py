"""Batch prediction: forward passes over gathered windows, and forecasts in original units."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from lstm_model.calibration import apply_calibration
from lstm_model.model import LSTMForecaster
from lstm_model.panel import Panel
from lstm_model.runtime import same_device
from lstm_model.windows import Batch, WindowSource

if TYPE_CHECKING:  # lstm_model.train imports this module
    from lstm_model.train import TrainResult

PREDICT_BATCH = 4096  # windows per forward pass when predicting: bounds memory for wide panels


class Runner:
    """Forward passes on one device and precision, over batches gathered from a WindowSource: training,
    validation and prediction all feed the model through it, so they see the same inputs."""

    def __init__(self, model: LSTMForecaster, source: WindowSource, device: torch.device, bf16: bool) -> None:
        self.model, self.source, self.device, self.bf16 = model, source, device, bf16
        self.embeds = model.embedding is not None

    def batch(self, starts: np.ndarray) -> Batch:
        batch = self.source.gather(starts)
        return batch if same_device(batch.y.device, self.device) else batch.to(self.device)

    def __call__(self, batch: Batch) -> torch.Tensor:
        series = batch.series if self.embeds else None
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.model(batch.x_past, batch.x_future, series).float()

    def predict_scaled(self, starts: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Scaled (predictions (n, horizon, Q), targets (n, horizon)) for the windows at `starts`."""
        self.model.eval()
        preds, ys = [], []
        with torch.inference_mode():
            for i in range(0, len(starts), batch_size):
                batch = self.batch(starts[i : i + batch_size])
                preds.append(self(batch).cpu().numpy())
                ys.append(batch.y.cpu().numpy())
        horizon, q = self.source.horizon, len(self.model.cfg.quantiles)
        if not preds:
            return np.empty((0, horizon, q), np.float32), np.empty((0, horizon), np.float32)
        return np.concatenate(preds), np.concatenate(ys)


def _check_panel(result: TrainResult, panel: Panel) -> None:
    if panel.past_names != result.past_names or panel.future_names != result.future_names:
        raise ValueError(
            f"panel covariates past={panel.past_names} future={panel.future_names} do not match the "
            f"model's past={result.past_names} future={result.future_names}"
        )


def _check_future(
    result: TrainResult, panel: Panel, future: Sequence[np.ndarray] | None
) -> np.ndarray | None:
    n_future, horizon = len(result.future_names), result.model_config.horizon
    if n_future == 0:
        if future is not None:
            raise ValueError("future covariates were given but the model was trained without any")
        return None
    if future is None:
        raise ValueError(
            f"future covariates {result.future_names} for the {horizon} forecast steps are required: "
            "pass `future`, one (horizon, F) array per series"
        )
    if len(future) != panel.n_series:
        raise ValueError(f"future has {len(future)} entries but the panel has {panel.n_series} series")
    arrays = [np.asarray(f, dtype=np.float32) for f in future]
    for sid, f in zip(panel.series_ids, arrays, strict=True):
        if f.shape != (horizon, n_future):
            raise ValueError(f"series {sid!r}: future must have shape {(horizon, n_future)}, got {f.shape}")
        if not np.isfinite(f).all():
            raise ValueError(f"series {sid!r}: future covariates contain non-finite values")
    return np.stack(arrays)  # (n_series, horizon, F)


def _unscale(result: TrainResult, scaled: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Calibrated, sorted quantiles in original units; scaled (n, horizon, Q), mean and std (n,): the
    target statistics of each window's series."""
    q = apply_calibration(scaled, result.calibration, result.model_config.quantiles)  # (n, horizon, Q)
    return q * std[:, None, None] + mean[:, None, None]


def predict(result: TrainResult, panel: Panel, future: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Forecast `horizon` steps after the END of every series -> (n_series, horizon, Q), original scale.

    Q follows `result.model_config.quantiles`; the median is the point forecast. `future`: per series
    (horizon, F) known-in-advance covariates for the forecast horizon, required iff the model was
    trained with future covariates. The future rows are appended to each series so the windows are
    gathered, scaled and fed exactly as in training.
    """
    _check_panel(result, panel)
    lookback, horizon = result.model_config.lookback, result.model_config.horizon
    short = [(sid, int(t)) for sid, t in zip(panel.series_ids, panel.lengths(), strict=True) if t < lookback]
    if short:
        listed = ", ".join(f"{sid!r} ({t} steps)" for sid, t in short[:10])
        more = f" and {len(short) - 10} more" if len(short) > 10 else ""
        raise ValueError(f"series shorter than lookback={lookback}: {listed}{more}")
    fut = _check_future(result, panel, future)
    tail = panel.slice_global(panel.n_steps - lookback, panel.n_steps)
    n_past, n_future = panel.n_past, panel.n_future
    extended = Panel(
        series_ids=tail.series_ids,
        # The horizon's targets and past covariates are unknown; zeros fill the rows the model never reads.
        target=tuple(np.concatenate([y, np.zeros(horizon, np.float32)]) for y in tail.target),
        past_covariates=tuple(
            np.concatenate([p, np.zeros((horizon, n_past), np.float32)]) for p in tail.past_covariates
        ),
        future_covariates=tuple(
            np.concatenate([f, fut[i] if fut is not None else np.zeros((horizon, n_future), np.float32)])
            for i, f in enumerate(tail.future_covariates)
        ),
        past_names=panel.past_names,
        future_names=panel.future_names,
    )
    # (n_series, 1, horizon, Q) -> (n_series, horizon, Q): the one origin right after the history
    return predict_origins(result, extended, np.array([lookback]))[:, 0]


def predict_origins(result: TrainResult, panel: Panel, origins: np.ndarray) -> np.ndarray:
    """Forecasts from many origins at once -> (n_series, n_origins, horizon, Q), original scale.

    An origin is a position on the panel's global axis: the first forecast step, with the lookback
    ending just before it. Windows that would leave a series (not enough history, or no room for the
    horizon's future covariates) are nan. This is how a fixed model is scored on every test window.
    """
    _check_panel(result, panel)
    cfg = result.model_config
    lookback, horizon = cfg.lookback, cfg.horizon
    origins = np.asarray(origins, dtype=np.int64)
    source = WindowSource.from_panel(panel, lookback, horizon, result.scaler)
    lengths = panel.lengths()
    local = origins[None, :] - (panel.n_steps - lengths)[:, None]  # (n_series, n_origins)
    valid = (local >= lookback) & (local + horizon <= lengths[:, None])  # (n_series, n_origins)
    starts = (source.offsets[:-1, None] + local - lookback)[valid]  # (n_valid,), row-major
    model = result.model.eval()
    device = next(model.parameters()).device
    runner = Runner(model, source.to(device), device, bf16=False)
    scaled, _ = runner.predict_scaled(starts, PREDICT_BATCH)  # (n_valid, horizon, Q)
    rows = np.repeat(np.arange(panel.n_series), valid.sum(axis=1))  # (n_valid,): series of each window
    mean, std = result.scaler.feature_stats(panel.series_ids)  # each (n_series, 1+P+F)
    out = np.full((panel.n_series, len(origins), horizon, len(cfg.quantiles)), np.nan)
    out[valid] = _unscale(result, scaled, mean[rows, 0], std[rows, 0])  # row-major, like `starts`
    return out

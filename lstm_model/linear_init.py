"""The linear start of training: the model's skip path fitted in closed form before any gradient step."""

from __future__ import annotations

import numpy as np
import torch

from lstm_model.model import LSTMForecaster
from lstm_model.prediction import PREDICT_BATCH, Runner

# Training windows the linear skip path is fitted on, at most, and its ridge penalty (relative to the
# mean input variance): enough windows to pin down lookback x horizon weights, in well under a second.
LINEAR_WINDOWS = 50_000
LINEAR_RIDGE = 1e-3


def fit_linear_skip(
    model: LSTMForecaster, run: Runner, starts: np.ndarray, ridge: float = LINEAR_RIDGE
) -> None:
    """Set the model's linear skip path (the highway) to the least-squares linear forecaster of the
    windows at `starts`, in the model's own normalised units (NLinear, Zeng et al. 2023, in closed form).

    With the decoder's last layer at zero, the model then starts as that linear forecaster, which can
    already repeat a season, average the recent weeks or follow a trend, and the LSTM only learns what it
    misses. `ridge` is relative to the mean variance of the inputs, so it does not depend on the scale.
    """
    xs, ys = [], []
    with torch.no_grad():
        for i in range(0, len(starts), PREDICT_BATCH):
            batch = run.batch(starts[i : i + PREDICT_BATCH])
            centred, last, spread = model.normalise(batch.x_past[:, :, 0].float())
            xs.append(centred.double())  # (batch, lookback)
            ys.append(((batch.y.float() - last) / spread).double())  # (batch, horizon)
        x, y = torch.cat(xs), torch.cat(ys)
        x_mean, y_mean = x.mean(dim=0), y.mean(dim=0)
        xc, yc = x - x_mean, y - y_mean
        gram = xc.T @ xc  # (lookback, lookback)
        penalty = ridge * float(gram.diagonal().mean()) + 1e-12
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        weight = torch.linalg.solve(gram + penalty * eye, xc.T @ yc)  # (lookback, horizon)
        bias = y_mean - x_mean @ weight  # (horizon,)
        model.highway.weight.copy_(weight.T.to(model.highway.weight.dtype))  # (horizon, lookback)
        model.highway.bias.copy_(bias.to(model.highway.bias.dtype))

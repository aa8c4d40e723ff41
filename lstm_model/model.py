"""Global LSTM forecaster (one network shared by all series, direct multi-step output)."""

from __future__ import annotations

import torch
from torch import nn

from lstm_model.config import ModelConfig


class LSTMForecaster(nn.Module):
    """LSTM encoder over the lookback + MLP head that emits all `horizon` steps at once.

    Direct multi-step output avoids feeding predictions back in (no error accumulation, one forward
    per forecast). The head predicts a *change* from the last observed scaled target. A linear
    "highway" from the lookback window to the horizon runs beside the LSTM (the autoregressive
    component of LSTNet, Lai et al. 2018): it picks up seasonal repetition in a few steps, which an
    LSTM alone learns slowly. Both end in zero-initialised layers, so an untrained model is the naive
    forecast and training only has to learn the deviation from persistence.
    """

    def __init__(self, n_inputs: int, n_future: int, cfg: ModelConfig) -> None:
        super().__init__()
        if not isinstance(n_inputs, int) or n_inputs < 1:
            raise ValueError(f"n_inputs must be a positive integer (target + covariates), got {n_inputs!r}")
        if not isinstance(n_future, int) or not 0 <= n_future < n_inputs:
            raise ValueError(f"n_future must be an integer in [0, n_inputs), got {n_future!r}")
        self.n_inputs, self.n_future, self.cfg = n_inputs, n_future, cfg
        self.lstm = nn.LSTM(
            input_size=n_inputs,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        head_in = cfg.hidden_size + cfg.horizon * n_future
        self.head = nn.Sequential(
            nn.Linear(head_in, cfg.hidden_size),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden_size, cfg.horizon),
        )
        self.highway = nn.Linear(cfg.lookback, cfg.horizon)
        for layer in (self.head[-1], self.highway):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _check_inputs(self, x_past: torch.Tensor, x_future: torch.Tensor | None) -> None:
        if x_past.ndim != 3 or x_past.shape[2] != self.n_inputs:
            raise ValueError(
                f"x_past must have shape (batch, lookback, {self.n_inputs}), got {tuple(x_past.shape)}"
            )
        if self.n_future == 0:
            if x_future is not None and x_future.numel() != 0:
                raise ValueError("x_future was given but the model has no future covariates")
            return
        expected = (x_past.shape[0], self.cfg.horizon, self.n_future)
        if x_future is None:
            raise ValueError(f"x_future of shape {expected} is required: the model uses future covariates")
        if tuple(x_future.shape) != expected:
            raise ValueError(f"x_future must have shape {expected}, got {tuple(x_future.shape)}")

    def forward(self, x_past: torch.Tensor, x_future: torch.Tensor | None = None) -> torch.Tensor:
        """x_past (batch, lookback, n_inputs) with the scaled target in column 0;
        x_future (batch, horizon, n_future) -> (batch, horizon) scaled forecasts."""
        self._check_inputs(x_past, x_future)
        _, (h_n, _) = self.lstm(x_past)  # h_n: (num_layers, batch, hidden)
        features = h_n[-1]  # (batch, hidden): last layer's final hidden state
        if self.n_future > 0 and x_future is not None:  # _check_inputs guarantees it is given
            fut = x_future.reshape(x_future.shape[0], -1)  # (batch, horizon * n_future)
            features = torch.cat([features, fut], dim=1)  # (batch, hidden + horizon * n_future)
        delta = self.head(features)  # (batch, horizon)
        target = x_past[:, :, 0]  # (batch, lookback): scaled target history
        last = target[:, -1:]  # (batch, 1): last observed scaled target
        highway = self.highway(target - last)  # (batch, horizon)
        return last + delta + highway  # (batch, horizon)

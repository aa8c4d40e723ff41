"""Global LSTM forecaster: one network shared by all series, all horizon steps and quantiles at once."""

from __future__ import annotations

import torch
from torch import nn

from lstm_model.config import ModelConfig

# Lowest window spread divided out (series are already scaled to unit variance): a flat window
# must not blow up into huge inputs.
INSTANCE_NORM_FLOOR = 0.05


class LSTMForecaster(nn.Module):
    """LSTM encoder over the lookback, a multi-horizon quantile decoder (MQ-RNN, Wen et al. 2017).

    The encoder reads the lookback one step at a time, or in segments of `patch_len` steps (SegRNN,
    Lin et al. 2023), which shortens the recurrence and helps on long hourly lookbacks.

    The encoder's final state is expanded into one context vector per horizon step; a small MLP shared
    by all steps reads that context with the step's known-future covariates (a promotion on that day,
    the hour of day) and emits every quantile. Direct output: no forecast is fed back in, so errors do
    not accumulate and one forward pass gives the whole horizon.

    Every forecast is anchored at the window's last scaled target (instance normalisation by the last
    value, as in NLinear) and adds a linear "highway" from the centred lookback to the horizon (the
    autoregressive part of LSTNet, Lai et al. 2018), which picks up seasonal repetition in a few steps.
    The decoder's last layer and the highway start at zero, so an untrained model is the naive forecast
    and training learns the deviation from persistence.
    """

    def __init__(self, n_inputs: int, n_future: int, cfg: ModelConfig, n_series: int = 0) -> None:
        super().__init__()
        if not isinstance(n_inputs, int) or n_inputs < 1:
            raise ValueError(f"n_inputs must be a positive integer (target + covariates), got {n_inputs!r}")
        if not isinstance(n_future, int) or not 0 <= n_future < n_inputs:
            raise ValueError(f"n_future must be an integer in [0, n_inputs), got {n_future!r}")
        if cfg.embedding_dim and (not isinstance(n_series, int) or n_series < 1):
            raise ValueError(f"a series embedding needs n_series >= 1, got {n_series!r}")
        self.n_inputs, self.n_future, self.cfg = n_inputs, n_future, cfg
        self.n_series = n_series if cfg.embedding_dim else 0
        hidden, ctx = cfg.hidden_size, cfg.context_size
        # With patches, each recurrence reads patch_len steps through a linear embedding: lookback /
        # patch_len sequential steps instead of lookback, which is where an LSTM spends its time.
        self.patch = None
        if cfg.patch_len > 1:
            self.patch = nn.Sequential(nn.Linear(cfg.patch_len * n_inputs, hidden), nn.ReLU())
        self.lstm = nn.LSTM(
            input_size=hidden if self.patch is not None else n_inputs,
            hidden_size=hidden,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        # Row n_series is the "unknown series" embedding, kept at zero.
        self.embedding = nn.Embedding(self.n_series + 1, cfg.embedding_dim) if cfg.embedding_dim else None
        if self.embedding is not None:
            nn.init.zeros_(self.embedding.weight[-1:])
        summary = hidden + cfg.embedding_dim
        self.context = nn.Sequential(nn.Linear(summary, cfg.horizon * ctx + ctx), nn.GELU())
        self.decoder = nn.Sequential(
            nn.Linear(2 * ctx + n_future, hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(hidden, len(cfg.quantiles)),
        )
        self.highway = nn.Linear(cfg.lookback, cfg.horizon)
        for layer in (self.decoder[-1], self.highway):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _check_inputs(
        self, x_past: torch.Tensor, x_future: torch.Tensor | None, series: torch.Tensor | None
    ) -> None:
        lookback = self.cfg.lookback
        if x_past.ndim != 3 or x_past.shape[1] != lookback or x_past.shape[2] != self.n_inputs:
            raise ValueError(
                f"x_past must have shape (batch, {lookback}, {self.n_inputs}), got {tuple(x_past.shape)}"
            )
        if self.embedding is not None and (series is None or tuple(series.shape) != (x_past.shape[0],)):
            raise ValueError(
                f"series indices of shape ({x_past.shape[0]},) are required: the model embeds series"
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

    def normalise(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each window relative to its last value, in units of its own spread: target (batch, lookback)
        -> centred (batch, lookback), last (batch, 1), spread (batch, 1). Forecasts are
        `last + spread * output`, so the linear skip path maps `centred` to the output directly."""
        last = target[:, -1:]  # (batch, 1): last observed scaled target
        centred = target - last  # (batch, lookback): the window with its level removed
        spread = torch.ones_like(last)  # (batch, 1)
        if self.cfg.instance_norm:
            # Population std (correction=0): a one-step lookback has spread 0 (then the floor), not nan.
            spread = target.std(dim=1, correction=0, keepdim=True)  # (batch, 1)
            spread = spread.clamp_min(INSTANCE_NORM_FLOOR)  # (batch, 1)
            centred = centred / spread  # (batch, lookback): level and scale removed
        return centred, last, spread

    def forward(
        self,
        x_past: torch.Tensor,
        x_future: torch.Tensor | None = None,
        series: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x_past (batch, lookback, n_inputs), scaled target in column 0; x_future (batch, horizon,
        n_future); series (batch,) indices when the model embeds series -> (batch, horizon, n_quantiles)."""
        self._check_inputs(x_past, x_future, series)
        batch, horizon, ctx = x_past.shape[0], self.cfg.horizon, self.cfg.context_size
        centred, last, spread = self.normalise(x_past[:, :, 0])
        inputs = torch.cat([centred.unsqueeze(-1), x_past[:, :, 1:]], dim=2)  # (batch, lookback, n_inputs)
        if self.patch is not None:
            n_patches = self.cfg.lookback // self.cfg.patch_len
            inputs = inputs.reshape(batch, n_patches, -1)  # (batch, n_patches, patch_len * n_inputs)
            inputs = self.patch(inputs)  # (batch, n_patches, hidden)
        _, (h_n, _) = self.lstm(inputs)  # h_n: (num_layers, batch, hidden)
        summary = h_n[-1]  # (batch, hidden): last layer's final hidden state
        if self.embedding is not None:
            summary = torch.cat([summary, self.embedding(series)], dim=1)  # (batch, hidden + embedding)
        contexts = self.context(summary)  # (batch, horizon * ctx + ctx)
        local = contexts[:, : horizon * ctx].reshape(batch, horizon, ctx)  # (batch, horizon, ctx)
        shared = contexts[:, horizon * ctx :].unsqueeze(1)  # (batch, 1, ctx)
        shared = shared.expand(batch, horizon, ctx)  # (batch, horizon, ctx)
        parts = [local, shared]
        if self.n_future > 0 and x_future is not None:  # _check_inputs guarantees it is given
            parts.append(x_future)  # (batch, horizon, n_future)
        step_inputs = torch.cat(parts, dim=2)  # (batch, horizon, 2 * ctx + n_future)
        delta = self.decoder(step_inputs)  # (batch, horizon, n_quantiles)
        highway = self.highway(centred)  # (batch, horizon)
        out = highway.unsqueeze(-1) + delta  # (batch, horizon, n_quantiles), in window units
        return last.unsqueeze(-1) + spread.unsqueeze(-1) * out  # (batch, horizon, n_quantiles)

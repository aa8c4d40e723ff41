"""The training and early-stopping losses, on scaled targets."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lstm_model.config import LOSSES

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (pred, y) -> scalar loss


def pinball_loss(pred: torch.Tensor, y: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Mean quantile (pinball) loss; pred (batch, horizon, Q), y (batch, horizon), levels (Q,)."""
    err = y.unsqueeze(-1) - pred.float()  # (batch, horizon, Q)
    return torch.maximum(levels * err, (levels - 1.0) * err).mean()


def loss_function(name: str, levels: Sequence[float]) -> LossFn:
    """The training and early-stopping loss: `pinball` over every quantile (the median is then the
    point forecast), or `mse` of the single output (the point forecast is then the mean, for users
    scored by squared error). pred (batch, horizon, Q), y (batch, horizon) -> scalar."""
    if name not in LOSSES:
        raise ValueError(f"train.loss must be one of {LOSSES}, got {name!r}")
    if name == "mse":
        if tuple(levels) != (0.5,):
            raise ValueError(
                "train.loss 'mse' trains one point forecast: model.quantiles must be [0.5], "
                f"got {list(levels)}"
            )
        return lambda pred, y: ((pred.float()[:, :, 0] - y) ** 2).mean()
    on_device: dict[torch.device, torch.Tensor] = {}  # the levels, copied to each device once

    def pinball(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if pred.device not in on_device:
            on_device[pred.device] = torch.tensor(tuple(levels), dtype=torch.float32, device=pred.device)
        return pinball_loss(pred, y, on_device[pred.device])

    return pinball

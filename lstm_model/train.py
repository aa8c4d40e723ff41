"""Training loop and batch prediction."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lstm_model.config import ModelConfig, TrainConfig
from lstm_model.device import select_device
from lstm_model.model import LSTMForecaster
from lstm_model.panel import Panel
from lstm_model.scaling import SeriesScaler
from lstm_model.windows import StartRanges, WindowSource, split_starts

PREDICT_CHUNK = 4096  # series per forward pass in predict: bounds memory for very wide panels
EVAL_BATCH_MIN = 512  # validation needs no gradients, so larger batches are cheap and faster


@dataclass
class TrainResult:
    """Everything needed to forecast with (and checkpoint) a trained model."""

    model: LSTMForecaster  # on CPU, eval mode
    scaler: SeriesScaler
    model_config: ModelConfig
    train_config: TrainConfig
    past_names: tuple[str, ...]
    future_names: tuple[str, ...]
    history: list[dict[str, Any]]  # per epoch: epoch, train_loss, val_loss, lr, seconds
    best_epoch: int
    stopped_reason: str  # "early_stopping" | "max_epochs" | "time_budget"
    device: str  # device it was trained on


def _evaluate(model: LSTMForecaster, source: WindowSource, starts: np.ndarray, batch_size: int) -> float:
    """Mean squared error (scaled target) over the given windows."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=source.values.device)
    with torch.no_grad():
        for i in range(0, len(starts), batch_size):
            x_past, x_future, y = source.gather(starts[i : i + batch_size])
            total += ((model(x_past, x_future) - y) ** 2).sum(dtype=torch.float64)
    return total.item() / (len(starts) * source.horizon)


def _check_trainable(panel: Panel, model_cfg: ModelConfig, train_cfg: TrainConfig) -> StartRanges:
    lengths = panel.lengths()
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    train, _ = split_starts(lengths, offsets, model_cfg.lookback, model_cfg.horizon, train_cfg.val_fraction)
    if train.total == 0:
        window = model_cfg.lookback + model_cfg.horizon
        raise ValueError(
            f"no series has a full training window: a window needs lookback + horizon = {window} steps "
            f"before the validation region (the last max(horizon, val_fraction * length) steps of each "
            f"series), but the longest series has only {int(lengths.max())} steps"
        )
    return train


def fit(
    panel: Panel,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a global LSTM on `panel` (all of it is training data; validation is its recent tail).

    The scaler is fitted here on `panel` only. ReduceLROnPlateau halves the learning rate after
    max(1, patience // 2) epochs without improvement, so (for patience >= 2) a lower rate gets tried
    before early stopping gives up after `patience` such epochs; the best weights are restored.
    """
    t_start = time.monotonic()
    train_ranges = _check_trainable(panel, model_cfg, train_cfg)
    device = select_device(train_cfg.device)
    lookback, horizon = model_cfg.lookback, model_cfg.horizon

    scaler = SeriesScaler().fit(panel)
    source = WindowSource.from_panel(panel, lookback, horizon, scaler).to(device)
    _, val_ranges = source.split(train_cfg.val_fraction)
    val_starts = val_ranges.evenly(train_cfg.max_val_windows)

    torch.manual_seed(train_cfg.seed)
    rng = np.random.default_rng(train_cfg.seed)
    model = LSTMForecaster(1 + panel.n_past + panel.n_future, panel.n_future, model_cfg).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train_cfg.learning_rate, weight_decay=train_cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.5, patience=max(0, train_cfg.patience // 2 - 1)
    )
    loss_fn = nn.MSELoss()
    eval_batch = max(train_cfg.batch_size, EVAL_BATCH_MIN)
    budget = train_cfg.time_budget_s

    history: list[dict[str, Any]] = []
    best_val, best_epoch, bad_epochs = math.inf, 0, 0
    best_state: dict[str, torch.Tensor] | None = None
    stopped_reason = "max_epochs"
    total_steps = 0
    for epoch in range(1, train_cfg.max_epochs + 1):
        t_epoch = time.monotonic()
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # summed on device: no per-step sync
        steps, out_of_time = 0, False
        for _ in range(train_cfg.steps_per_epoch):
            # At least one step always runs, so there is a validated model to keep even if setup
            # alone used up the budget.
            if budget is not None and total_steps > 0 and time.monotonic() - t_start > budget:
                out_of_time = True
                break
            x_past, x_future, y = source.gather(train_ranges.sample(rng, train_cfg.batch_size))
            loss = loss_fn(model(x_past, x_future), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            optimizer.step()
            loss_sum += loss.detach()
            steps += 1
            total_steps += 1
        if steps == 0:  # budget ran out at the epoch boundary: nothing new to validate
            stopped_reason = "time_budget"
            break

        train_loss = loss_sum.item() / steps
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training loss became {train_loss} in epoch {epoch}; try a lower learning_rate or grad_clip"
            )
        val_loss = _evaluate(model, source, val_starts, eval_batch)
        if not math.isfinite(val_loss):
            raise FloatingPointError(f"validation loss became {val_loss} in epoch {epoch}")

        entry = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "lr": lr,
            "seconds": time.monotonic() - t_epoch,
        }
        history.append(entry)
        if val_loss < best_val:
            best_val, best_epoch, bad_epochs = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        scheduler.step(val_loss)
        if on_epoch is not None:
            on_epoch(dict(entry))
        if out_of_time:
            stopped_reason = "time_budget"
            break
        if bad_epochs >= train_cfg.patience:
            stopped_reason = "early_stopping"
            break

    if best_state is None:  # unreachable: epoch 1 always trains >= 1 step and a finite val loss beats inf
        raise RuntimeError("training produced no validated epoch")
    model.load_state_dict(best_state)
    model.cpu().eval()
    return TrainResult(
        model=model,
        scaler=scaler,
        model_config=model_cfg,
        train_config=train_cfg,
        past_names=panel.past_names,
        future_names=panel.future_names,
        history=history,
        best_epoch=best_epoch,
        stopped_reason=stopped_reason,
        device=str(device),
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
    arrays = [np.asarray(f, dtype=np.float64) for f in future]
    for sid, f in zip(panel.series_ids, arrays, strict=True):
        if f.shape != (horizon, n_future):
            raise ValueError(f"series {sid!r}: future must have shape {(horizon, n_future)}, got {f.shape}")
        if not np.isfinite(f).all():
            raise ValueError(f"series {sid!r}: future covariates contain non-finite values")
    return np.stack(arrays)  # (n_series, horizon, F)


def predict(result: TrainResult, panel: Panel, future: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Forecast `horizon` steps after the END of every series -> (n_series, horizon), original scale.

    `future`: per series (horizon, F) known-in-advance covariates for the forecast horizon,
    required iff the model was trained with future covariates.
    """
    lookback = result.model_config.lookback
    if panel.past_names != result.past_names or panel.future_names != result.future_names:
        raise ValueError(
            f"panel covariates past={panel.past_names} future={panel.future_names} do not match the "
            f"model's past={result.past_names} future={result.future_names}"
        )
    lengths = panel.lengths()
    short = [(sid, int(t)) for sid, t in zip(panel.series_ids, lengths, strict=True) if t < lookback]
    if short:
        listed = ", ".join(f"{sid!r} ({t} steps)" for sid, t in short[:10])
        more = f" and {len(short) - 10} more" if len(short) > 10 else ""
        raise ValueError(f"series shorter than lookback={lookback}: {listed}{more}")
    fut = _check_future(result, panel, future)
    mean, std = result.scaler.feature_stats(panel.series_ids)  # each (n_series, 1+P+F)
    n_past = len(result.past_names)

    model = result.model.eval()
    device = next(model.parameters()).device
    out = np.empty((panel.n_series, result.model_config.horizon), dtype=np.float64)
    for lo in range(0, panel.n_series, PREDICT_CHUNK):
        rows = range(lo, min(lo + PREDICT_CHUNK, panel.n_series))
        x = np.stack(
            [
                np.concatenate(
                    [
                        panel.target[i][-lookback:, None],
                        panel.past_covariates[i][-lookback:],
                        panel.future_covariates[i][-lookback:],
                    ],
                    axis=1,
                )
                for i in rows
            ]
        ).astype(np.float64)  # (chunk, lookback, 1+P+F)
        m, s = mean[lo : rows.stop], std[lo : rows.stop]
        # Same float64 arithmetic then float32 cast as SeriesScaler.transform_*, so inputs match training.
        x_past = torch.from_numpy(((x - m[:, None, :]) / s[:, None, :]).astype(np.float32)).to(device)
        x_future = None
        if fut is not None:
            f = (fut[lo : rows.stop] - m[:, None, 1 + n_past :]) / s[:, None, 1 + n_past :]
            x_future = torch.from_numpy(f.astype(np.float32)).to(device)
        with torch.inference_mode():
            scaled = model(x_past, x_future).cpu().numpy().astype(np.float64)
        out[lo : rows.stop] = scaled * s[:, :1] + m[:, :1]
    return out

"""Training a global LSTM on a panel: `fit`, its loop, and the loop's sub-steps as small named functions."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lstm_model.calibration import CALIBRATION_WINDOWS, conformal_widths, quantile_pairs
from lstm_model.config import ModelConfig, TrainConfig
from lstm_model.device import select_device
from lstm_model.linear_init import LINEAR_WINDOWS, fit_linear_skip
from lstm_model.losses import LossFn, loss_function
from lstm_model.model import LSTMForecaster
from lstm_model.panel import Panel
from lstm_model.prediction import Runner
from lstm_model.runtime import place_data, torch_threads, use_bf16
from lstm_model.scaling import SeriesScaler
from lstm_model.windows import Batch, StartRanges, WindowSource, split_starts

EVAL_BATCH_MIN = 512  # validation needs no gradients, so larger batches are cheap and faster
# Why a fit ended when training.time_budget_s stopped it: a safety cap, and the one stop that depends on the
# machine's speed and load, so such a model is not reproducible from its data and seed.
TIME_BUDGET = "time_budget"


class TrainingFailed(FloatingPointError):
    """A fit whose loss became non-finite or diverged: callers fall back to a baseline on exactly these."""


@dataclass
class TrainResult:
    """Everything needed to forecast with (and checkpoint) a trained model."""

    model: LSTMForecaster  # on CPU, eval mode
    scaler: SeriesScaler
    model_config: ModelConfig
    train_config: TrainConfig
    past_names: tuple[str, ...]
    future_names: tuple[str, ...]
    # per epoch: epoch, train_loss, val_loss, lr, seconds; epoch 0 (train_loss None) is the model before
    # training, so best_epoch 0 means no epoch improved on it
    history: list[dict[str, Any]]
    best_epoch: int
    stopped_reason: str  # "early_stopping" | "max_epochs" | TIME_BUDGET
    device: str  # device it was trained on
    # (n_pairs, horizon): conformal widening (scaled units) of each symmetric quantile pair, outermost first
    calibration: np.ndarray

    @property
    def series_ids(self) -> tuple[str, ...]:
        return self.scaler.series_ids


def fit(
    panel: Panel,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    init: TrainResult | None = None,
) -> TrainResult:
    """Train a global LSTM on `panel` (all of it is training data; validation is its recent tail).

    With `init` (a warm start), training continues from that model's weights and keeps its scaler, so
    the fine-tuned model reads its inputs the way the original learned to; `warm_start_problem` says
    when that is impossible.

    The scaler is fitted here on `panel` only. The model before training (epoch 0) is validated first
    and is the first early-stopping candidate. ReduceLROnPlateau halves the learning rate after
    max(1, patience // 2) trained epochs without improvement on the best trained epoch, so (for
    patience >= 2) a lower rate gets tried when training stalls; early stopping gives up after `patience`
    epochs that do not beat the best so far, epoch 0 included. The best weights are restored, and the
    intervals are then calibrated on the validation windows.

    Raises TrainingFailed when a loss becomes non-finite or the validation loss diverges.
    """
    with torch_threads(train_cfg.threads):
        return _fit(panel, model_cfg, train_cfg, on_epoch, init)


def warm_start_problem(init: TrainResult, panel: Panel, model_cfg: ModelConfig) -> str | None:
    """Why `init` cannot be fine-tuned on `panel` with `model_cfg` (None when it can): the weights
    and the scaler only fit the same architecture, inputs and series."""
    if init.model_config != model_cfg:
        changed = sorted(k for k, v in model_cfg.to_dict().items() if init.model_config.to_dict().get(k) != v)
        return f"the model settings changed ({', '.join(changed)})"
    if (init.past_names, init.future_names) != (panel.past_names, panel.future_names):
        return "the covariates changed"
    if set(init.series_ids) != set(panel.series_ids):
        new = sorted(set(panel.series_ids) - set(init.series_ids))
        gone = sorted(set(init.series_ids) - set(panel.series_ids))
        return f"the series changed (new: {new[:5]}, gone: {gone[:5]})"
    return None


def _fit(
    panel: Panel,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    init: TrainResult | None = None,
) -> TrainResult:
    t_start = time.monotonic()
    train_ranges = _check_trainable(panel, model_cfg, train_cfg)
    if init is not None and (problem := warm_start_problem(init, panel, model_cfg)) is not None:
        raise ValueError(f"cannot warm-start: {problem}")
    device = select_device(train_cfg.device)
    bf16 = use_bf16(device, train_cfg.precision)

    scaler = init.scaler if init is not None else SeriesScaler().fit(panel)
    source = WindowSource.from_panel(panel, model_cfg.lookback, model_cfg.horizon, scaler)
    source = place_data(source, device)
    _, val_ranges = source.split(train_cfg.val_fraction)
    val_starts = val_ranges.evenly(train_cfg.max_val_windows)

    torch.manual_seed(train_cfg.seed)
    rng = np.random.default_rng(train_cfg.seed)
    model = _build_model(panel, model_cfg, init, device)
    run = Runner(model, source, device, bf16)
    loss_fn = loss_function(train_cfg.loss, model_cfg.quantiles)
    optimizer, scheduler = _optimizer(model, train_cfg)
    eval_batch = max(train_cfg.batch_size, EVAL_BATCH_MIN)
    epoch_steps = train_cfg.epoch_steps(train_ranges.total)
    if init is None and train_cfg.linear_init:
        fit_linear_skip(model, run, train_ranges.evenly(LINEAR_WINDOWS))

    # Epoch 0 is the model before any step (the linear forecaster, or the warm start's weights): it is
    # the first candidate, so training only ever replaces it with something better on validation.
    t_epoch = time.monotonic()
    val_loss = _evaluate(run, val_starts, eval_batch, loss_fn)
    _check_val_loss(val_loss, epoch=0, best_trained=math.inf, factor=None)
    entry = _history_entry(0, None, val_loss, optimizer.param_groups[0]["lr"], t_epoch)  # nothing trained
    history = [entry]
    if on_epoch is not None:
        on_epoch(dict(entry))
    stopping = _EarlyStopping(val_loss, model)
    stopped_reason = "max_epochs"
    total_steps = 0
    for epoch in range(1, train_cfg.max_epochs + 1):
        t_epoch = time.monotonic()
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # summed on device: no per-step sync
        steps, out_of_time = 0, False
        for _ in range(epoch_steps):
            if _out_of_time(t_start, train_cfg.time_budget_s, total_steps):
                out_of_time = True
                break
            batch = run.batch(train_ranges.sample(rng, train_cfg.batch_size))
            loss_sum += _train_step(run, batch, loss_fn, optimizer, train_cfg.grad_clip)
            steps += 1
            total_steps += 1
        if steps == 0:  # budget ran out at the epoch boundary: nothing new to validate
            stopped_reason = TIME_BUDGET
            break

        train_loss = loss_sum.item() / steps
        _check_train_loss(train_loss, epoch)
        val_loss = _evaluate(run, val_starts, eval_batch, loss_fn)
        _check_val_loss(val_loss, epoch, stopping.best_trained, train_cfg.divergence_factor)

        entry = _history_entry(epoch, train_loss, val_loss, lr, t_epoch)
        history.append(entry)
        stopping.update(epoch, val_loss, model)
        scheduler.step(val_loss)
        if on_epoch is not None:
            on_epoch(dict(entry))
        if out_of_time:
            stopped_reason = TIME_BUDGET
            break
        if stopping.bad_epochs >= train_cfg.patience:
            stopped_reason = "early_stopping"
            break

    model.load_state_dict(stopping.best_state)
    calibration = _calibrate(run, val_ranges, model_cfg, train_cfg, eval_batch)
    model.cpu().eval()
    return TrainResult(
        model=model,
        scaler=scaler,
        model_config=model_cfg,
        train_config=train_cfg,
        past_names=panel.past_names,
        future_names=panel.future_names,
        history=history,
        best_epoch=stopping.best_epoch,
        stopped_reason=stopped_reason,
        device=str(device),
        calibration=calibration,
    )


def _check_trainable(panel: Panel, model_cfg: ModelConfig, train_cfg: TrainConfig) -> StartRanges:
    """The training windows' starts; an error that says why when there are none."""
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


def _build_model(
    panel: Panel, model_cfg: ModelConfig, init: TrainResult | None, device: torch.device
) -> LSTMForecaster:
    """The model on `device`: its initial weights come from torch's seeded generator (drawn even for a
    warm start, whose weights then replace them, so the later dropout draws are the same)."""
    model = LSTMForecaster(
        1 + panel.n_past + panel.n_future, panel.n_future, model_cfg, n_series=panel.n_series
    )
    if init is not None:
        model.load_state_dict(init.model.state_dict())
    return model.to(device)


def _optimizer(
    model: nn.Module, train_cfg: TrainConfig
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.ReduceLROnPlateau]:
    """AdamW, and a scheduler that halves its rate after max(1, patience // 2) epochs without improvement:
    a lower rate gets tried before early stopping gives up."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train_cfg.learning_rate, weight_decay=train_cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.5, patience=max(0, train_cfg.patience // 2 - 1)
    )
    return optimizer, scheduler


def _evaluate(run: Runner, starts: np.ndarray, batch_size: int, loss: LossFn) -> float:
    """Mean training loss (scaled target) over the windows at `starts`: the early-stopping score."""
    pred, y = run.predict_scaled(starts, batch_size)
    return float(loss(torch.from_numpy(pred), torch.from_numpy(y)))


def _out_of_time(t_start: float, budget: float | None, total_steps: int) -> bool:
    """Whether the fit has used up its time budget. At least one step always runs, so there is a
    validated model to keep even if setup alone used up the budget."""
    return budget is not None and total_steps > 0 and time.monotonic() - t_start > budget


def _train_step(
    run: Runner, batch: Batch, loss_fn: LossFn, optimizer: torch.optim.Optimizer, clip: float
) -> torch.Tensor:
    """One optimizer step on `batch`; its loss comes back detached and still on the device, so summing
    the epoch's losses waits for no step."""
    loss = loss_fn(run(batch), batch.y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(run.model.parameters(), clip)
    optimizer.step()
    return loss.detach()


def _check_train_loss(train_loss: float, epoch: int) -> None:
    if not math.isfinite(train_loss):
        raise TrainingFailed(
            f"training loss became {train_loss} in epoch {epoch}; try a lower learning_rate or grad_clip"
        )


def _check_val_loss(val_loss: float, epoch: int, best_trained: float, factor: float | None) -> None:
    """Fail on a non-finite validation loss, or on one more than `factor` times `best_trained`."""
    if not math.isfinite(val_loss):
        if epoch == 0:
            raise TrainingFailed(
                f"validation loss of the model before training is {val_loss}: its forecasts are not finite"
            )
        raise TrainingFailed(f"validation loss became {val_loss} in epoch {epoch}")
    if factor is not None and val_loss > factor * best_trained:
        raise TrainingFailed(
            f"training diverged: validation loss {val_loss:.4g} in epoch {epoch} is more than "
            f"{factor:g}x the best so far ({best_trained:.4g}); try a lower learning_rate"
        )


def _history_entry(
    epoch: int, train_loss: float | None, val_loss: float, lr: float, t_epoch: float
) -> dict[str, Any]:
    """One row of TrainResult.history; `t_epoch` is when the epoch began."""
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "lr": lr,
        "seconds": time.monotonic() - t_epoch,
    }


class _EarlyStopping:
    """The best weights so far (epoch 0, the model before training, included), and how many epochs in a
    row have not beaten them."""

    def __init__(self, initial_val: float, model: nn.Module) -> None:
        self.best_val, self.best_epoch, self.bad_epochs = initial_val, 0, 0
        self.best_state = _snapshot(model)
        # Divergence is judged against trained epochs only: a near-perfect linear start is no reason to
        # call the first steps away from it a divergence.
        self.best_trained = math.inf

    def update(self, epoch: int, val_loss: float, model: nn.Module) -> None:
        self.best_trained = min(self.best_trained, val_loss)
        if val_loss < self.best_val:
            self.best_val, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            self.best_state = _snapshot(model)
        else:
            self.bad_epochs += 1


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights that later steps do not change."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _calibrate(
    run: Runner, val_ranges: StartRanges, model_cfg: ModelConfig, train_cfg: TrainConfig, eval_batch: int
) -> np.ndarray:
    """Conformal corrections (n_pairs, horizon) of the intervals from the validation windows; zeros, which
    leave the intervals as the model predicts them, when `train_cfg.calibrate` is off."""
    pairs = quantile_pairs(model_cfg.quantiles)
    if not train_cfg.calibrate:
        return np.zeros((len(pairs), model_cfg.horizon))
    starts = val_ranges.evenly(max(train_cfg.max_val_windows, CALIBRATION_WINDOWS))
    pred, y = run.predict_scaled(starts, eval_batch)
    return conformal_widths(pred, y, model_cfg.quantiles, pairs)

"""Training loop, interval calibration and batch prediction."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lstm_model.config import LOSSES, PRECISIONS, ModelConfig, TrainConfig
from lstm_model.device import select_device
from lstm_model.model import LSTMForecaster
from lstm_model.panel import Panel
from lstm_model.scaling import SeriesScaler
from lstm_model.windows import Batch, StartRanges, WindowSource, split_starts

PREDICT_BATCH = 4096  # windows per forward pass when predicting: bounds memory for wide panels
EVAL_BATCH_MIN = 512  # validation needs no gradients, so larger batches are cheap and faster
GPU_DATA_FRACTION = 0.5  # keep the data on the GPU when it takes at most this share of free memory
# Validation windows the intervals are calibrated on, at most: a 90% score quantile from 4096 windows is
# stable to about a percent, and the cap bounds the time and the (windows, horizon, Q) memory it costs.
CALIBRATION_WINDOWS = 4096
# Training windows the linear skip path is fitted on, at most, and its ridge penalty (relative to the
# mean input variance): enough windows to pin down lookback x horizon weights, in well under a second.
LINEAR_WINDOWS = 50_000
LINEAR_RIDGE = 1e-3
# Why a fit ended when train.time_budget_s stopped it: a safety cap, and the one stop that depends on the
# machine's speed and load, so such a model is not reproducible from its data and seed.
TIME_BUDGET = "time_budget"
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (pred, y) -> scalar loss


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


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run with `n` intra-op threads (default: every available core), restoring the setting after."""
    before = torch.get_num_threads()
    n = n or available_cores()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def use_bf16(device: torch.device, precision: str) -> bool:
    """Whether to train under bf16 autocast.

    'auto' uses it on CUDA devices with native bf16 (compute capability 8.0+, or ROCm) and fp32 elsewhere:
    on the CPU bf16 LSTMs are slower, and older GPUs only emulate bf16, slowly. An explicit 'bf16' that
    cannot be honoured is an error, like an explicit 'cuda' without a GPU, not a silent fp32 run.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return False
    if device.type != "cuda":
        if precision == "bf16":
            raise ValueError(
                f"train.precision 'bf16' needs a CUDA device, but the device is {device}; "
                "use 'auto' or 'fp32'"
            )
        return False
    if torch.version.hip:
        return True
    major, minor = torch.cuda.get_device_capability(device)
    if precision == "bf16" and major < 8:
        raise RuntimeError(
            f"train.precision 'bf16' requested but {device} (compute capability {major}.{minor}) has no "
            "native bfloat16; use 'auto' or 'fp32'"
        )
    return major >= 8


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


def quantile_pairs(levels: Sequence[float]) -> list[tuple[int, int]]:
    """Index pairs (lower, upper) of symmetric quantiles, e.g. (0.1, 0.9), outermost first: each one is a
    central interval. Pairs are matched by value, so (0.1, 0.2, 0.5, 0.8) still pairs 0.2 with 0.8; a
    level without its mirror image is in no pair and is left uncalibrated."""
    pairs = []
    for lo, q in enumerate(levels):
        hi = next((j for j, p in enumerate(levels) if math.isclose(q + p, 1.0)), None)
        if q < 0.5 and hi is not None:
            pairs.append((lo, hi))
    return sorted(pairs, key=lambda pair: levels[pair[0]])


def _same_device(a: torch.device, b: torch.device) -> bool:
    """torch.device("cuda") means the current GPU, which a tensor reports as "cuda:N": plain == would call
    them different and copy (and try to pin) a batch that is already on the GPU."""
    if a.type != b.type:
        return False
    if a.type != "cuda" or a.index == b.index:
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


class _Runner:
    """Forward passes on one device and precision, over batches gathered from a WindowSource."""

    def __init__(self, model: LSTMForecaster, source: WindowSource, device: torch.device, bf16: bool):
        self.model, self.source, self.device, self.bf16 = model, source, device, bf16
        self.embeds = model.embedding is not None

    def batch(self, starts: np.ndarray) -> Batch:
        batch = self.source.gather(starts)
        return batch if _same_device(batch.y.device, self.device) else batch.to(self.device)

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


def fit_linear_skip(
    model: LSTMForecaster, run: _Runner, starts: np.ndarray, ridge: float = LINEAR_RIDGE
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
        model.highway.weight.copy_(weight.T.to(model.highway.weight.dtype))
        model.highway.bias.copy_(bias.to(model.highway.bias.dtype))


def _evaluate(run: _Runner, starts: np.ndarray, batch_size: int, loss: LossFn) -> float:
    """Mean training loss (scaled target) over the windows at `starts`: the early-stopping score."""
    pred, y = run.predict_scaled(starts, batch_size)
    return float(loss(torch.from_numpy(pred), torch.from_numpy(y)))


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


def _place_data(source: WindowSource, device: torch.device) -> WindowSource:
    """Data on the GPU when it fits comfortably (batches are then gathered there, with no copies);
    otherwise it stays in host memory and each batch travels through pinned memory."""
    if device.type != "cuda":
        return source
    free, _ = torch.cuda.mem_get_info(device)
    if source.values.numel() * source.values.element_size() <= GPU_DATA_FRACTION * free:
        return source.to(device)
    return source


def conformal_widths(
    pred: np.ndarray, y: np.ndarray, levels: Sequence[float], pairs: Sequence[tuple[int, int]]
) -> np.ndarray:
    """Split-conformal corrections (CQR, Romano et al. 2019) per interval and horizon step.

    For an interval (lo, hi) with nominal coverage c, the score of a window is max(lo - y, y - hi);
    adding the ceil((n + 1) c)-th smallest of the n scores to both ends makes the interval cover a new
    window with probability >= c when windows are exchangeable (with too few windows for that rank, the
    largest score is used). Negative values narrow intervals that were too wide.
    pred (n, horizon, Q), y (n, horizon) -> (len(pairs), horizon).
    """
    n, horizon = y.shape
    out = np.zeros((len(pairs), horizon), dtype=np.float64)
    if n == 0:
        return out
    y = np.asarray(y, dtype=np.float64)
    for k, (lo, hi) in enumerate(pairs):
        coverage = levels[hi] - levels[lo]
        scores = np.maximum(pred[:, :, lo] - y, y - pred[:, :, hi])  # (n, horizon)
        # The epsilon keeps float noise (5 * (0.8 - 0.2) = 3.0000000000000004) from adding a rank.
        rank = min(n, max(1, math.ceil((n + 1) * coverage - 1e-9)))
        out[k] = np.sort(scores, axis=0)[rank - 1]
    return out


def apply_calibration(scaled: np.ndarray, calibration: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Widen each interval by its correction (narrow it by a negative one), then sort so quantiles never
    cross. scaled (n, horizon, Q), calibration (n_pairs, horizon) from `conformal_widths` -> float64."""
    out = np.array(scaled, dtype=np.float64)
    pairs = quantile_pairs(levels)
    calibration = np.asarray(calibration, dtype=np.float64)
    expected = (len(pairs), out.shape[1])
    if calibration.shape != expected:
        raise ValueError(
            f"calibration must have shape {expected} (symmetric quantile pairs of {tuple(levels)}, "
            f"horizon), got {calibration.shape}"
        )
    for k, (lo, hi) in enumerate(pairs):
        out[:, :, lo] -= calibration[k]
        out[:, :, hi] += calibration[k]
    return np.sort(out, axis=-1)


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
    source = _place_data(source, device)
    _, val_ranges = source.split(train_cfg.val_fraction)
    val_starts = val_ranges.evenly(train_cfg.max_val_windows)

    torch.manual_seed(train_cfg.seed)
    rng = np.random.default_rng(train_cfg.seed)
    model = LSTMForecaster(
        1 + panel.n_past + panel.n_future, panel.n_future, model_cfg, n_series=panel.n_series
    )
    if init is not None:
        model.load_state_dict(init.model.state_dict())
    model = model.to(device)
    run = _Runner(model, source, device, bf16)
    loss_fn = loss_function(train_cfg.loss, model_cfg.quantiles)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train_cfg.learning_rate, weight_decay=train_cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.5, patience=max(0, train_cfg.patience // 2 - 1)
    )
    eval_batch = max(train_cfg.batch_size, EVAL_BATCH_MIN)
    budget = train_cfg.time_budget_s
    epoch_steps = train_cfg.epoch_steps(train_ranges.total)

    if init is None and train_cfg.linear_init:
        fit_linear_skip(model, run, train_ranges.evenly(LINEAR_WINDOWS))
    # Epoch 0 is the model before any step (the linear forecaster, or the warm start's weights): it is
    # the first candidate, so training only ever replaces it with something better on validation.
    t_epoch = time.monotonic()
    initial_val = _evaluate(run, val_starts, eval_batch, loss_fn)
    if not math.isfinite(initial_val):
        raise FloatingPointError(
            f"validation loss of the model before training is {initial_val}: its forecasts are not finite"
        )
    entry = {
        "epoch": 0,
        "train_loss": None,  # nothing trained yet
        "val_loss": initial_val,
        "lr": optimizer.param_groups[0]["lr"],
        "seconds": time.monotonic() - t_epoch,
    }
    history: list[dict[str, Any]] = [entry]
    if on_epoch is not None:
        on_epoch(dict(entry))
    best_val, best_epoch, bad_epochs = initial_val, 0, 0
    # Divergence is judged against trained epochs only: a near-perfect linear start is no reason to call
    # the first steps away from it a divergence.
    best_trained = math.inf
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    stopped_reason = "max_epochs"
    total_steps = 0
    for epoch in range(1, train_cfg.max_epochs + 1):
        t_epoch = time.monotonic()
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # summed on device: no per-step sync
        steps, out_of_time = 0, False
        for _ in range(epoch_steps):
            # At least one step always runs, so there is a validated model to keep even if setup
            # alone used up the budget.
            if budget is not None and total_steps > 0 and time.monotonic() - t_start > budget:
                out_of_time = True
                break
            batch = run.batch(train_ranges.sample(rng, train_cfg.batch_size))
            loss = loss_fn(run(batch), batch.y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            optimizer.step()
            loss_sum += loss.detach()
            steps += 1
            total_steps += 1
        if steps == 0:  # budget ran out at the epoch boundary: nothing new to validate
            stopped_reason = TIME_BUDGET
            break

        train_loss = loss_sum.item() / steps
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training loss became {train_loss} in epoch {epoch}; try a lower learning_rate or grad_clip"
            )
        epoch_val = _evaluate(run, val_starts, eval_batch, loss_fn)
        if not math.isfinite(epoch_val):
            raise FloatingPointError(f"validation loss became {epoch_val} in epoch {epoch}")
        factor = train_cfg.divergence_factor
        if factor is not None and epoch_val > factor * best_trained:
            raise FloatingPointError(
                f"training diverged: validation loss {epoch_val:.4g} in epoch {epoch} is more than "
                f"{factor:g}x the best so far ({best_trained:.4g}); try a lower learning_rate"
            )

        entry = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": epoch_val,
            "lr": lr,
            "seconds": time.monotonic() - t_epoch,
        }
        history.append(entry)
        best_trained = min(best_trained, epoch_val)
        if epoch_val < best_val:
            best_val, best_epoch, bad_epochs = epoch_val, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        scheduler.step(epoch_val)
        if on_epoch is not None:
            on_epoch(dict(entry))
        if out_of_time:
            stopped_reason = TIME_BUDGET
            break
        if bad_epochs >= train_cfg.patience:
            stopped_reason = "early_stopping"
            break

    model.load_state_dict(best_state)
    pairs = quantile_pairs(model_cfg.quantiles)
    calibration = np.zeros((len(pairs), model_cfg.horizon))
    if train_cfg.calibrate:
        starts = val_ranges.evenly(max(train_cfg.max_val_windows, CALIBRATION_WINDOWS))
        pred, y = run.predict_scaled(starts, eval_batch)
        calibration = conformal_widths(pred, y, model_cfg.quantiles, pairs)
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
        calibration=calibration,
    )


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
    valid = (local >= lookback) & (local + horizon <= lengths[:, None])
    starts = (source.offsets[:-1, None] + local - lookback)[valid]
    model = result.model.eval()
    device = next(model.parameters()).device
    runner = _Runner(model, source.to(device), device, bf16=False)
    scaled, _ = runner.predict_scaled(starts, PREDICT_BATCH)  # (n_valid, horizon, Q)
    rows = np.repeat(np.arange(panel.n_series), valid.sum(axis=1))  # series of each valid window
    mean, std = result.scaler.feature_stats(panel.series_ids)  # each (n_series, 1+P+F)
    out = np.full((panel.n_series, len(origins), horizon, len(cfg.quantiles)), np.nan)
    out[valid] = _unscale(result, scaled, mean[rows, 0], std[rows, 0])  # row-major, like `starts`
    return out

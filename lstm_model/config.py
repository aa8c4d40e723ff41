"""Model and training configuration: the one definition of each setting's name, type, default and range.

Frozen and validated on construction, so a bad value fails before any data is loaded. The pipeline's TOML
sections [model] and [training] are generated from these fields (tasks.sections), so the defaults here are
the pipeline's defaults, and every message names a setting by its TOML key (`forecast.lookback`,
`model.hidden_size`, `training.max_epochs`), where users set it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from lstm_model.device import is_valid_device_string

_C = TypeVar("_C", "ModelConfig", "TrainConfig")
PRECISIONS = ("auto", "fp32", "bf16")
LOSSES = ("pinball", "mse")
MAX_AUTO_STEPS = 50  # batches per epoch when steps_per_epoch is left to the data


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but `hidden_size = true` in a TOML file is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _check_int(key: str, value: Any, minimum: int) -> None:
    if not _is_int(value) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{key} must be {what}, got {value!r}")


def _check_float(
    key: str, value: Any, *, low: float, low_inclusive: bool, high: float | None = None
) -> float:
    ok = _is_number(value) and (value >= low if low_inclusive else value > low)
    if high is not None:
        ok = ok and value < high
    if not ok:
        lo = f">= {low}" if low_inclusive else f"> {low}"
        rng = f"a number {lo}" if high is None else f"a number {lo} and < {high}"
        raise ValueError(f"{key} must be {rng}, got {value!r}")
    return float(value)


def _check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {choices}, got {value!r}")


def _check_quantiles(value: Any) -> tuple[float, ...]:
    """Strictly increasing levels in (0, 1) that include the median, which is the point forecast."""
    if not isinstance(value, tuple | list) or not value or not all(_is_number(q) for q in value):
        raise ValueError(f"model.quantiles must be a list of numbers in (0, 1), got {value!r}")
    levels = tuple(float(q) for q in value)
    increasing = all(b > a for a, b in zip(levels, levels[1:], strict=False))
    if not increasing or not all(0.0 < q < 1.0 for q in levels):
        raise ValueError(f"model.quantiles must be strictly increasing numbers in (0, 1), got {value!r}")
    if 0.5 not in levels:
        raise ValueError(f"model.quantiles must include 0.5 (the point forecast), got {value!r}")
    return levels


def _from_dict(cls: type[_C], what: str, d: Mapping[str, Any]) -> _C:
    """`cls` from a saved dict (a checkpoint's), refusing keys it does not know or lacks."""
    if not isinstance(d, Mapping):
        raise TypeError(f"{what} config must be a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in {what} config; allowed keys: {sorted(fields)}")
    missing = [
        name
        for name, f in fields.items()
        if name not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"missing key {missing[0]!r} in {what} config")
    return cls(**d)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the LSTM forecaster; everything needed to rebuild it from a checkpoint.

    `lookback` and `horizon` are the pipeline's `forecast.lookback` and `forecast.horizon`; a pipeline's
    `model.patch_len` defaults to "auto" (one season per segment, tasks.sections.auto_patch_len)."""

    lookback: int
    horizon: int
    hidden_size: int = 64
    num_layers: int = 2
    dropout: float = 0.1
    context_size: int = 16  # width of the per-step context vectors the decoder reads
    instance_norm: bool = True  # divide each window by its own spread (RevIN), so intervals track volatility
    patch_len: int = 1  # lookback steps the LSTM reads per recurrence (segments, as in SegRNN)
    embedding_dim: int = 0  # learned per-series embedding; 0 turns it off
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)

    def __post_init__(self) -> None:
        _check_int("forecast.lookback", self.lookback, 1)
        _check_int("forecast.horizon", self.horizon, 1)
        _check_int("model.hidden_size", self.hidden_size, 1)
        _check_int("model.num_layers", self.num_layers, 1)
        _check_int("model.context_size", self.context_size, 1)
        _check_int("model.patch_len", self.patch_len, 1)
        _check_bool("model.instance_norm", self.instance_norm)
        if self.lookback % self.patch_len:
            raise ValueError(
                f"forecast.lookback ({self.lookback}) must be a multiple of "
                f"model.patch_len ({self.patch_len})"
            )
        _check_int("model.embedding_dim", self.embedding_dim, 0)
        dropout = _check_float("model.dropout", self.dropout, low=0.0, low_inclusive=True, high=1.0)
        object.__setattr__(self, "dropout", dropout)
        object.__setattr__(self, "quantiles", _check_quantiles(self.quantiles))

    @property
    def median_index(self) -> int:
        """Position of the 0.5 quantile: the point forecast `yhat`."""
        return self.quantiles.index(0.5)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["quantiles"] = list(self.quantiles)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        d = dict(d)
        if isinstance(d.get("quantiles"), list):
            d["quantiles"] = tuple(d["quantiles"])
        return _from_dict(cls, "model", d)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. `val_fraction` is per series: the last fraction of each series'
    time steps (at least `horizon` steps) holds the validation targets."""

    max_epochs: int = 30
    # batches per epoch; None ("auto" in TOML): one pass over the training windows, at most MAX_AUTO_STEPS
    steps_per_epoch: int | None = None
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 4
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    max_val_windows: int = 2048
    # A safety cap on each fit's wall-clock seconds, not the stopping rule: epochs, steps and early
    # stopping decide how long a fit trains, so the same data and seed give the same model on a busy
    # machine. A fit the cap stops is recorded as "stopped by time, not reproducible". None: no cap.
    time_budget_s: float | None = 600.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on a CUDA device that supports it, fp32 elsewhere
    threads: int | None = None  # CPU intra-op threads; None: every core this process may use
    calibrate: bool = True  # widen/narrow the intervals so they cover as promised on validation windows
    # start the linear skip path at the least-squares linear forecaster; False: at the naive forecast
    linear_init: bool = False
    loss: str = "pinball"  # pinball (median point forecast and quantiles) | mse (one mean forecast)
    # stop with an error when an epoch's validation loss exceeds this multiple of the best so far
    divergence_factor: float | None = 10.0

    def __post_init__(self) -> None:
        _check_int("training.max_epochs", self.max_epochs, 1)
        if self.steps_per_epoch is not None:
            _check_int("training.steps_per_epoch", self.steps_per_epoch, 1)
        _check_int("training.batch_size", self.batch_size, 1)
        _check_int("training.patience", self.patience, 1)
        _check_int("training.max_val_windows", self.max_val_windows, 1)
        # numpy's default_rng rejects negative seeds, so reject them here with a clearer message.
        _check_int("training.seed", self.seed, 0)
        floats = {
            "learning_rate": _check_float(
                "training.learning_rate", self.learning_rate, low=0.0, low_inclusive=False
            ),
            "weight_decay": _check_float(
                "training.weight_decay", self.weight_decay, low=0.0, low_inclusive=True
            ),
            "grad_clip": _check_float("training.grad_clip", self.grad_clip, low=0.0, low_inclusive=False),
            "val_fraction": _check_float(
                "training.val_fraction", self.val_fraction, low=0.0, low_inclusive=False, high=1.0
            ),
        }
        if self.divergence_factor is not None:
            floats["divergence_factor"] = _check_float(
                "training.divergence_factor", self.divergence_factor, low=1.0, low_inclusive=False
            )
        if self.time_budget_s is not None:
            floats["time_budget_s"] = _check_float(
                "training.time_budget_s", self.time_budget_s, low=0.0, low_inclusive=False
            )
        for name, value in floats.items():
            object.__setattr__(self, name, value)
        if not isinstance(self.device, str) or not is_valid_device_string(self.device):
            raise ValueError(
                f"training.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        _check_choice("training.precision", self.precision, PRECISIONS)
        if self.threads is not None:
            _check_int("training.threads", self.threads, 1)
        _check_choice("training.loss", self.loss, LOSSES)
        _check_bool("training.calibrate", self.calibrate)
        _check_bool("training.linear_init", self.linear_init)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def epoch_steps(self, train_windows: int) -> int:
        """Batches per epoch: `steps_per_epoch`, or by default one pass over the `train_windows` training
        windows capped at MAX_AUTO_STEPS, so a small panel is not trained for hundreds of passes."""
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        return max(1, min(MAX_AUTO_STEPS, math.ceil(train_windows / self.batch_size)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        return _from_dict(cls, "training", d)

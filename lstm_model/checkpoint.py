"""Single-file checkpoints that load with torch.load(weights_only=True).

Only tensors and plain Python values are stored (no pickled classes), so loading a checkpoint
never executes code from the file, and the configs are rebuilt (and re-validated) from dicts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from lstm_model.calibration import quantile_pairs
from lstm_model.config import ModelConfig, TrainConfig
from lstm_model.model import LSTMForecaster
from lstm_model.scaling import SeriesScaler
from lstm_model.train import TrainResult

FORMAT_VERSION = 2
_KEYS = (
    "format_version",
    "state_dict",
    "model_config",
    "train_config",
    "scaler",
    "past_names",
    "future_names",
    "n_inputs",
    "n_future",
    "n_series",
    "calibration",
    "history",
    "best_epoch",
    "stopped_reason",
    "device",
)


def save_checkpoint(result: TrainResult, path: str | os.PathLike[str]) -> None:
    """Write atomically: a temp file in the target directory, then os.replace, so a crash mid-write
    never leaves a truncated checkpoint where a reader expects a good one."""
    path = Path(path)
    payload: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
        "model_config": result.model_config.to_dict(),
        "train_config": result.train_config.to_dict(),
        "scaler": result.scaler.to_dict(),
        "past_names": list(result.past_names),
        "future_names": list(result.future_names),
        "n_inputs": result.model.n_inputs,
        "n_future": result.model.n_future,
        "n_series": result.model.n_series,
        "calibration": torch.as_tensor(result.calibration, dtype=torch.float64),
        "history": [dict(e) for e in result.history],
        "best_epoch": result.best_epoch,
        "stopped_reason": result.stopped_reason,
        "device": result.device,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is meant to be read by other processes
        os.replace(tmp, path)
    except BaseException:
        # Clean up the partial temp file, then let the error propagate unchanged.
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike[str]) -> TrainResult:
    """Rebuild a TrainResult (model on CPU, eval mode) from `save_checkpoint` output."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict):
        raise ValueError(f"checkpoint {str(path)!r} does not hold a dict")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has format_version {version!r}; this code reads {FORMAT_VERSION}"
        )
    missing = [k for k in _KEYS if k not in payload]
    if missing:
        raise ValueError(f"checkpoint {str(path)!r} is missing {missing[0]!r}")
    model_cfg = ModelConfig.from_dict(payload["model_config"])
    past_names, future_names = tuple(payload["past_names"]), tuple(payload["future_names"])
    n_inputs, n_future = payload["n_inputs"], payload["n_future"]
    if n_inputs != 1 + len(past_names) + len(future_names) or n_future != len(future_names):
        raise ValueError(
            f"checkpoint {str(path)!r}: n_inputs={n_inputs}, n_future={n_future} "
            f"do not match past_names={past_names}, future_names={future_names}"
        )
    calibration = payload["calibration"].numpy()
    expected = (len(quantile_pairs(model_cfg.quantiles)), model_cfg.horizon)
    if calibration.shape != expected:
        raise ValueError(
            f"checkpoint {str(path)!r}: calibration has shape {calibration.shape}, expected {expected} "
            f"(symmetric pairs of quantiles {model_cfg.quantiles}, horizon)"
        )
    model = LSTMForecaster(n_inputs, n_future, model_cfg, n_series=payload["n_series"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return TrainResult(
        model=model,
        scaler=SeriesScaler.from_dict(payload["scaler"]),
        model_config=model_cfg,
        train_config=TrainConfig.from_dict(payload["train_config"]),
        past_names=past_names,
        future_names=future_names,
        history=list(payload["history"]),
        best_epoch=payload["best_epoch"],
        stopped_reason=payload["stopped_reason"],
        device=payload["device"],
        calibration=calibration,
    )

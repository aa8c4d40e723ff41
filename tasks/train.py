"""Train: one global LSTM over every usable series, saved as a single self-describing checkpoint.

From scratch, or (a warm start) fine-tuned from the champion's checkpoint on the new data. Checkpoints
are kept per pipeline under `<data_dir>/<pipeline>/models/`, named by their version (a digest of the
file), so the registry can point at them after the run's own files are gone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np
from prefect import task

from lstm_model.checkpoint import load_checkpoint, save_checkpoint
from lstm_model.train import TIME_BUDGET, TrainingFailed, TrainResult, fit
from tasks._log import stage_logger
from tasks.config import PipelineConfig
from tasks.files import models_dir
from tasks.panel import load_panel


@dataclass(frozen=True)
class TrainOutput:
    checkpoint_path: str
    model_version: str
    kind: str  # "trained" | "warm_start"
    parent_version: str | None
    epochs: int
    best_epoch: int
    stopped_reason: str
    best_val_loss: float
    device: str
    seconds: float


def model_digest(result: TrainResult) -> str:
    """What makes the model: weights, settings, scaler statistics, inputs and calibration. Unlike the
    checkpoint file, it leaves out the training log (epoch times), so the same model is the same version."""
    digest = hashlib.sha256()
    for name, tensor in sorted(result.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    settings = {
        "model": result.model_config.to_dict(),
        "scaler": result.scaler.to_dict(),
        "inputs": [result.past_names, result.future_names],
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(np.ascontiguousarray(result.calibration, dtype=np.float64).tobytes())
    return digest.hexdigest()


def run_train(
    cfg: PipelineConfig, history_path: str, init_checkpoint_path: str | None = None,
    parent_version: str | None = None,
) -> TrainOutput:  # fmt: skip
    started = time.perf_counter()
    log = stage_logger()
    panel = load_panel(cfg, history_path)

    def on_epoch(row: dict) -> None:
        if row["epoch"] == 0:
            log.info("before training: val_loss=%.4f (%.1fs)", row["val_loss"], row["seconds"])
            return
        log.info(
            "epoch %d: train_loss=%.4f val_loss=%.4f lr=%.2e (%.1fs)",
            row["epoch"], row["train_loss"], row["val_loss"], row["lr"], row["seconds"],
        )  # fmt: skip

    train_cfg = cfg.train_config()
    init = None
    if init_checkpoint_path is not None:
        init = load_checkpoint(init_checkpoint_path)
        train_cfg = dataclasses.replace(train_cfg, max_epochs=cfg.registry.fine_tune_epochs)
        log.info(
            "fine-tuning %s for up to %d epochs", parent_version or init_checkpoint_path, train_cfg.max_epochs
        )
    result = fit(panel, cfg.model_config_for_lstm(), train_cfg, on_epoch=on_epoch, init=init)
    if result.stopped_reason == TIME_BUDGET:
        log.warning(
            "training stopped by time (training.time_budget_s = %g s) after %d epochs, not reproducible: "
            "the same data and seed train further on a less busy machine",
            train_cfg.time_budget_s, len(result.history) - 1,
        )  # fmt: skip
    folder = models_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    version = f"lstm-{model_digest(result)[:12]}"
    path = folder / f"{version}.pt"
    save_checkpoint(result, path)  # written whole under a temp name, then renamed
    best = min(row["val_loss"] for row in result.history)
    return TrainOutput(
        checkpoint_path=str(path),
        model_version=version,
        kind="warm_start" if init is not None else "trained",
        parent_version=parent_version if init is not None else None,
        epochs=len(result.history) - 1,  # the first entry is the model before training (epoch 0)
        best_epoch=result.best_epoch,
        stopped_reason=result.stopped_reason,
        best_val_loss=float(best),
        device=result.device,
        seconds=round(time.perf_counter() - started, 3),
    )


def reproducibility(time_capped_folds: tuple[int, ...], stopped_reason: str | None) -> str:
    """ "reproducible", or which fits the wall-clock cap stopped: those depend on the machine's load, so the
    same data and seed may give other forecasts (or another gate verdict) on another night."""
    capped = [f"backtest fold {f + 1}" for f in time_capped_folds]
    if stopped_reason == TIME_BUDGET:
        capped.append("training")
    if not capped:
        return "reproducible"
    return f"stopped by time, not reproducible ({', '.join(capped)}: training.time_budget_s)"


def fallback_message(cfg: PipelineConfig, failure: BaseException, baseline: str) -> str | None:
    """What a failed training leads to: the message of a fallback to `baseline` when the fit failed in a
    way a baseline can stand in for (TrainingFailed: a non-finite or diverging loss) and
    `training.on_failure = "fallback"`; None when the run must fail with the error."""
    if not (isinstance(failure, TrainingFailed) and cfg.training.on_failure == "fallback"):
        return None
    return (
        f"training failed ({failure}); training.on_failure = 'fallback': publishing the {baseline} forecast"
    )


@task
def train(
    cfg: PipelineConfig, history_path: str, init_checkpoint_path: str | None = None,
    parent_version: str | None = None,
) -> TrainOutput:  # fmt: skip
    """Train the global LSTM (or fine-tune the champion) and save its checkpoint."""
    return run_train(cfg, history_path, init_checkpoint_path, parent_version)

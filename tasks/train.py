"""Train: one global LSTM over every usable series, saved as a single self-describing checkpoint."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import task

from lstm_model.checkpoint import save_checkpoint
from lstm_model.train import fit
from tasks._log import stage_logger
from tasks.config import PipelineConfig
from tasks.validate import load_panel


@dataclass(frozen=True)
class TrainOutput:
    checkpoint_path: str
    model_version: str
    epochs: int
    best_epoch: int
    stopped_reason: str
    best_val_loss: float
    device: str
    seconds: float


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_model(cfg: PipelineConfig, history_path: str) -> TrainOutput:
    started = time.perf_counter()
    log = stage_logger()
    panel = load_panel(cfg, history_path)

    def on_epoch(row: dict) -> None:
        log.info(
            "epoch %d: train_loss=%.4f val_loss=%.4f lr=%.2e (%.1fs)",
            row["epoch"], row["train_loss"], row["val_loss"], row["lr"], row["seconds"],
        )  # fmt: skip

    result = fit(panel, cfg.model_config_for_lstm(), cfg.train_config(), on_epoch=on_epoch)
    path = Path(history_path).with_name("model.pt")
    save_checkpoint(result, path)
    best = min(row["val_loss"] for row in result.history)
    return TrainOutput(
        checkpoint_path=str(path),
        model_version=f"lstm-{file_digest(path)[:12]}",
        epochs=len(result.history),
        best_epoch=result.best_epoch,
        stopped_reason=result.stopped_reason,
        best_val_loss=float(best),
        device=result.device,
        seconds=round(time.perf_counter() - started, 3),
    )


@task
def train(cfg: PipelineConfig, history_path: str) -> TrainOutput:
    return train_model(cfg, history_path)

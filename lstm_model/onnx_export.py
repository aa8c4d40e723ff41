"""ONNX export of a trained forecaster, for serving without Python's training stack.

The graph holds the network and the interval calibration; the file's metadata holds what a user needs
to feed it and read it: the input names and their column order, the window settings, the quantiles and
the scaler's per-series statistics. Needs the `onnx` extra (onnx, onnxscript; onnxruntime to run it).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lstm_model.calibration import quantile_pairs
from lstm_model.model import LSTMForecaster
from lstm_model.train import TrainResult

INSTALL_HINT = "pip install 'lstmcast[onnx]'"
OPSET = 20  # ONNX opset of the exported graph; onnxruntime has run it since 1.17
OUTPUT = "quantiles"
TARGET_COLUMN = "target"  # x_past's first column: the target, whatever its source column is called
EXAMPLE_BATCH = 2  # the batch traced; the exported batch axis is dynamic


class MissingOnnx(ImportError):
    """The `onnx` extra is not installed."""


class _Exported(nn.Module):
    """The forward pass as the pipeline forecasts: the network, each interval widened by its calibration,
    quantiles sorted. Takes exactly the inputs the model reads, since ONNX inputs cannot be optional."""

    def __init__(self, model: LSTMForecaster, calibration: np.ndarray, inputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.inputs = model, inputs
        quantiles = model.cfg.quantiles
        offset = np.zeros((model.cfg.horizon, len(quantiles)), dtype=np.float32)  # (horizon, Q)
        for (lo, hi), width in zip(quantile_pairs(quantiles), calibration, strict=True):
            offset[:, lo] -= width
            offset[:, hi] += width
        self.register_buffer("offset", torch.from_numpy(offset))

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        given = dict(zip(self.inputs, tensors, strict=True))
        out = self.model(given["x_past"], given.get("x_future"), given.get("series"))  # (batch, horizon, Q)
        return torch.sort(out + self.offset, dim=-1).values  # (batch, horizon, Q)


def input_names(result: TrainResult) -> tuple[str, ...]:
    """The graph's inputs, in order: x_past always, x_future with future covariates, series with an
    embedding."""
    model = result.model
    return (
        "x_past",
        *(("x_future",) if model.n_future else ()),
        *(("series",) if model.embedding is not None else ()),
    )


def _example(result: TrainResult, names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    cfg, model = result.model_config, result.model
    shapes = {
        "x_past": torch.zeros(EXAMPLE_BATCH, cfg.lookback, model.n_inputs),
        "x_future": torch.zeros(EXAMPLE_BATCH, cfg.horizon, model.n_future),
        "series": torch.zeros(EXAMPLE_BATCH, dtype=torch.int64),
    }
    return tuple(shapes[name] for name in names)


def export_metadata(result: TrainResult) -> dict[str, str]:
    """The metadata_props every exported file carries (values are strings; lists and dicts are JSON)."""
    cfg, model = result.model_config, result.model
    columns = [TARGET_COLUMN, *result.past_names, *result.future_names]
    mean, std = result.scaler.feature_stats(result.series_ids)  # each (n_series, 1+P+F)
    scaler = {
        "series_ids": list(result.series_ids),
        "columns": columns,
        "mean": mean.tolist(),
        "std": std.tolist(),
    }
    meta: dict[str, Any] = {
        "inputs": input_names(result),
        "output": OUTPUT,
        "x_past_columns": columns,
        "x_future_columns": list(result.future_names),
        "past_names": list(result.past_names),
        "future_names": list(result.future_names),
        "lookback": cfg.lookback,
        "horizon": cfg.horizon,
        "quantiles": list(cfg.quantiles),
        "patch_len": cfg.patch_len,
        "embedding_dim": cfg.embedding_dim,
        "instance_norm": cfg.instance_norm,
        "n_series": model.n_series,
        "model_config": cfg.to_dict(),
        "scaler": scaler,
    }
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hides the exporter's notes about its own internals (deprecations in torch.export, optional
    torchvision ops it skips): none is about the model, and the result is checked instead."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category in (UserWarning, FutureWarning, DeprecationWarning):
                warnings.simplefilter("ignore", category)
            yield
    finally:
        logger.setLevel(level)


def require_onnx() -> Any:
    """The onnx module; MissingOnnx with the install command when the extra is not installed."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as exc:
        raise MissingOnnx(f"exporting to ONNX needs the onnx extra: {INSTALL_HINT} ({exc})") from None
    return onnx


def export_bytes(result: TrainResult, extra: Mapping[str, str] | None = None) -> bytes:
    """The serialised ONNX model: dynamic batch axis, float32 inputs scaled as in training, output
    `quantiles` (batch, horizon, Q) calibrated and sorted, in scaled units. `extra` adds metadata."""
    onnx = require_onnx()
    names = input_names(result)
    wrapped = _Exported(result.model, np.asarray(result.calibration), names).eval()
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            wrapped,
            _example(result, names),
            dynamo=True,
            input_names=list(names),
            output_names=[OUTPUT],
            dynamic_shapes=(tuple({0: batch} for _ in names),),  # one spec per tensor of *tensors
            opset_version=OPSET,
            verbose=False,
        )
    proto = program.model_proto
    proto.doc_string = (
        "lstmcast LSTM forecaster: feed inputs scaled with the metadata's scaler statistics; "
        "forecast = quantiles * std + mean of the series' target"
    )
    metadata = {**export_metadata(result), **(extra or {})}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_onnx(
    result: TrainResult, path: str | os.PathLike[str], extra: Mapping[str, str] | None = None
) -> Path:
    """Write `export_bytes` to `path` (parent folders created) and return the path."""
    path = Path(path)
    data = export_bytes(result, extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path

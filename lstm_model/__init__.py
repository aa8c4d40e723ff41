"""Global LSTM forecaster for panels of end-aligned time series (plain PyTorch, no orchestration)."""

import importlib
from typing import Any

# Names are imported from their modules on first use, so that `lstm_model.config` (which the pipeline's
# config validation needs) loads without PyTorch.
_MODULES = {
    "backtest": "backtest", "summarize": "backtest",
    "naive": "baselines", "naive_quantiles": "baselines", "seasonal_naive": "baselines",
    "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "ModelConfig": "config", "TrainConfig": "config",
    "select_device": "device",
    "coverage": "metrics", "mae": "metrics", "mase": "metrics", "rmse": "metrics", "smape": "metrics",
    "LSTMForecaster": "model",
    "Panel": "panel",
    "SeriesScaler": "scaling",
    "predict": "prediction", "predict_origins": "prediction",
    "TrainingFailed": "train", "TrainResult": "train", "fit": "train",
    "WindowSource": "windows",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'lstm_model' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lstm_model.{_MODULES[name]}"), name)


__all__ = [
    "LSTMForecaster",
    "ModelConfig",
    "Panel",
    "SeriesScaler",
    "TrainConfig",
    "TrainResult",
    "TrainingFailed",
    "WindowSource",
    "backtest",
    "coverage",
    "fit",
    "load_checkpoint",
    "mae",
    "mase",
    "naive",
    "naive_quantiles",
    "predict",
    "predict_origins",
    "rmse",
    "save_checkpoint",
    "seasonal_naive",
    "select_device",
    "smape",
    "summarize",
]

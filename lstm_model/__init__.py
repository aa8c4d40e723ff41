"""Global LSTM forecaster for panels of end-aligned time series (plain PyTorch, no orchestration)."""

from lstm_model.backtest import backtest, summarize
from lstm_model.baselines import naive, naive_quantiles, seasonal_naive
from lstm_model.checkpoint import load_checkpoint, save_checkpoint
from lstm_model.config import ModelConfig, TrainConfig
from lstm_model.device import select_device
from lstm_model.metrics import coverage, mae, mase, rmse, smape
from lstm_model.model import LSTMForecaster
from lstm_model.panel import Panel
from lstm_model.scaling import SeriesScaler
from lstm_model.train import TrainResult, fit, predict, predict_origins
from lstm_model.windows import WindowSource

__all__ = [
    "LSTMForecaster",
    "ModelConfig",
    "Panel",
    "SeriesScaler",
    "TrainConfig",
    "TrainResult",
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

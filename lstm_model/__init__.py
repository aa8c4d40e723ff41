"""Global LSTM forecaster for panels of end-aligned time series (plain PyTorch, no orchestration)."""

from lstm_model.backtest import backtest, summarize
from lstm_model.baselines import naive, seasonal_naive
from lstm_model.checkpoint import load_checkpoint, save_checkpoint
from lstm_model.config import ModelConfig, TrainConfig
from lstm_model.device import select_device
from lstm_model.metrics import mae, mase, rmse, smape
from lstm_model.model import LSTMForecaster
from lstm_model.panel import Panel
from lstm_model.scaling import SeriesScaler
from lstm_model.train import TrainResult, fit, predict
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
    "fit",
    "load_checkpoint",
    "mae",
    "mase",
    "naive",
    "predict",
    "rmse",
    "save_checkpoint",
    "seasonal_naive",
    "select_device",
    "smape",
    "summarize",
]

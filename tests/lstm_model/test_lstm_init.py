import os
import subprocess
import sys
from pathlib import Path

import lstm_model

REPO = Path(lstm_model.__file__).resolve().parent.parent


def test_public_names_are_exported():
    for name in (
        "Panel",
        "ModelConfig",
        "TrainConfig",
        "TrainResult",
        "fit",
        "predict",
        "backtest",
        "summarize",
        "save_checkpoint",
        "load_checkpoint",
        "naive",
        "seasonal_naive",
        "mae",
        "rmse",
        "smape",
        "mase",
        "SeriesScaler",
        "LSTMForecaster",
        "select_device",
        "naive_quantiles",
        "coverage",
        "predict_origins",
        "WindowSource",
    ):
        assert name in lstm_model.__all__ and hasattr(lstm_model, name)


def test_importing_the_package_does_not_import_prefect():
    """lstm_model must stay usable (and fast to import) without the orchestration layer."""
    code = "import sys, lstm_model; print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_config_and_the_extract_stage_load_without_torch():
    """Validating a config and running `lstmcast ingest` need no PyTorch: it is imported when a model is."""
    code = (
        "import sys, lstm_model, lstm_model.config, tasks.extract; before = 'torch' in sys.modules; "
        "lstm_model.fit; print(before, 'torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False True"

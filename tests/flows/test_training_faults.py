"""A final training that fails (NaN loss, divergence) publishes nothing from that model."""

import pandas as pd
import pytest
import sqlalchemy as sa
import tomli_w

import tasks.train
from flows.nightly import FALLBACK, nightly_forecast
from lstm_model.model import LSTMForecaster
from tests.flows.test_nightly import task_runs
from tests.helpers import sensor_config_dict

AS_OF = "2016-07-15 00:00"


def config(tmp_path, url, on_failure: str) -> str:
    path = tmp_path / f"{on_failure}.toml"
    training = {"on_failure": on_failure, "max_epochs": 8, "patience": 8, "divergence_factor": 2.0}
    cfg = sensor_config_dict(url, tmp_path / on_failure, training=training)
    path.write_bytes(tomli_w.dumps(cfg).encode())
    return str(path)


def poisoned(monkeypatch, fault: str) -> None:
    """Inject `fault` into the flow's final training only (the backtest folds train normally)."""
    real_fit, original = tasks.train.fit, LSTMForecaster.forward
    calls = []

    def nan(self, *args, **kwargs):  # the training steps' forecasts only: the model validated before is fine
        out = original(self, *args, **kwargs)
        return out * float("nan") if self.training else out

    def growing(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs) * (1.0 + len(calls)) ** 3

    def fit(*args, **kwargs):
        with monkeypatch.context() as patch:
            patch.setattr(LSTMForecaster, "forward", {"nan": nan, "diverging": growing}[fault])
            return real_fit(*args, **kwargs)

    monkeypatch.setattr(tasks.train, "fit", fit)


@pytest.mark.parametrize(
    "fault, message",
    [("nan", "training loss became nan in epoch 1"), ("diverging", "training diverged: validation loss")],
)
def test_failed_training_fails_the_run_and_publishes_nothing(
    fault, message, sensor_db, tmp_path, monkeypatch
):
    poisoned(monkeypatch, fault)
    state = nightly_forecast(config(tmp_path, sensor_db, "fail"), AS_OF, return_state=True)
    assert state.is_failed()
    with pytest.raises(FloatingPointError, match=message):
        state.result()
    assert task_runs(state.state_details.flow_run_id, expect=("train",))["train"].state.is_failed()
    inspector = sa.inspect(sa.create_engine(sensor_db))
    assert not inspector.has_table("forecasts") and not inspector.has_table("lstmcast_models")


@pytest.mark.parametrize("fault", ["nan", "diverging"])
def test_failed_training_can_fall_back_to_the_best_baseline(fault, sensor_db, tmp_path, monkeypatch):
    poisoned(monkeypatch, fault)
    state = nightly_forecast(config(tmp_path, sensor_db, "fallback"), AS_OF, return_state=True)
    assert state.is_completed() and state.name == FALLBACK
    result = state.result()
    baselines = {m: v["mase"] for m, v in result["backtest"].items() if m != "lstm"}
    best = min(baselines, key=baselines.get)
    assert state.message.startswith("training failed (")
    assert state.message.endswith(f"training.on_failure = 'fallback': publishing the {best} forecast")
    assert result["model_version"] == best and result["fallback"] == state.message
    engine = sa.create_engine(sensor_db)
    published = pd.read_sql("select model_version from forecasts", engine)
    metrics = pd.read_sql("select metrics from lstmcast_runs", engine)["metrics"].iloc[0]
    engine.dispose()
    assert len(published) == 3 * 12 and set(published["model_version"]) == {best}
    assert "training.on_failure = 'fallback'" in metrics

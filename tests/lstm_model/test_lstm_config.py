import dataclasses
import re

import pytest

from lstm_model.config import ModelConfig, TrainConfig


def test_defaults_match_the_documented_interface():
    m = ModelConfig(lookback=168, horizon=48)
    assert m.to_dict() == {
        "lookback": 168,
        "horizon": 48,
        "hidden_size": 64,
        "num_layers": 2,
        "dropout": 0.1,
        "context_size": 16,
        "instance_norm": True,
        "patch_len": 1,
        "embedding_dim": 0,
        "quantiles": [0.1, 0.5, 0.9],
    }
    assert m.quantiles == (0.1, 0.5, 0.9) and m.median_index == 1
    t = TrainConfig()
    assert t.to_dict() == {
        "max_epochs": 30,
        "steps_per_epoch": None,
        "batch_size": 256,
        "learning_rate": 1e-3,
        "weight_decay": 1e-4,
        "patience": 4,
        "grad_clip": 1.0,
        "val_fraction": 0.1,
        "max_val_windows": 2048,
        "time_budget_s": 600.0,
        "seed": 0,
        "device": "auto",
        "precision": "auto",
        "threads": None,
        "calibrate": True,
        "linear_init": False,
        "loss": "pinball",
        "divergence_factor": 10.0,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lookback": 0}, "forecast.lookback must be a positive integer, got 0"),
        ({"horizon": -3}, "forecast.horizon must be a positive integer, got -3"),
        ({"hidden_size": 0}, "model.hidden_size must be a positive integer, got 0"),
        ({"hidden_size": 8.0}, "model.hidden_size must be a positive integer, got 8.0"),
        ({"hidden_size": True}, "model.hidden_size must be a positive integer, got True"),
        ({"num_layers": 0}, "model.num_layers must be a positive integer, got 0"),
        ({"dropout": 1.0}, "model.dropout must be a number >= 0.0 and < 1.0, got 1.0"),
        ({"dropout": -0.1}, "model.dropout must be a number >= 0.0 and < 1.0, got -0.1"),
        ({"dropout": float("nan")}, "model.dropout must be a number >= 0.0 and < 1.0, got nan"),
        ({"context_size": 0}, "model.context_size must be a positive integer, got 0"),
        ({"patch_len": 0}, "model.patch_len must be a positive integer, got 0"),
        ({"patch_len": 5}, "forecast.lookback (24) must be a multiple of model.patch_len (5)"),
        ({"embedding_dim": -1}, "model.embedding_dim must be an integer >= 0, got -1"),
        ({"instance_norm": 1}, "model.instance_norm must be true or false, got 1"),
        ({"quantiles": 0.5}, "model.quantiles must be a list of numbers in (0, 1), got 0.5"),
        ({"quantiles": []}, "model.quantiles must be a list of numbers in (0, 1), got []"),
        ({"quantiles": [0.5, True]}, "model.quantiles must be a list of numbers in (0, 1), got [0.5, True]"),
        (
            {"quantiles": [0.9, 0.5, 0.1]},
            "model.quantiles must be strictly increasing numbers in (0, 1), got [0.9, 0.5, 0.1]",
        ),
        (
            {"quantiles": [0.5, 0.5, 0.9]},
            "model.quantiles must be strictly increasing numbers in (0, 1), got [0.5, 0.5, 0.9]",
        ),
        (
            {"quantiles": [0.0, 0.5]},
            "model.quantiles must be strictly increasing numbers in (0, 1), got [0.0, 0.5]",
        ),
        ({"quantiles": [0.1, 0.9]}, "model.quantiles must include 0.5 (the point forecast), got [0.1, 0.9]"),
    ],
)
def test_model_config_rejects_bad_values_naming_the_field(kwargs, message):
    args = {"lookback": 24, "horizon": 6, **kwargs}
    with pytest.raises(ValueError) as exc:
        ModelConfig(**args)
    assert str(exc.value) == message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_epochs": 0}, "training.max_epochs must be a positive integer, got 0"),
        ({"steps_per_epoch": 0}, "training.steps_per_epoch must be a positive integer, got 0"),
        ({"batch_size": 2.5}, "training.batch_size must be a positive integer, got 2.5"),
        ({"patience": 0}, "training.patience must be a positive integer, got 0"),
        ({"max_val_windows": 0}, "training.max_val_windows must be a positive integer, got 0"),
        ({"seed": -1}, "training.seed must be an integer >= 0, got -1"),
        ({"learning_rate": 0}, "training.learning_rate must be a number > 0.0, got 0"),
        ({"learning_rate": "1e-3"}, "training.learning_rate must be a number > 0.0, got '1e-3'"),
        ({"weight_decay": -1e-4}, "training.weight_decay must be a number >= 0.0, got -0.0001"),
        ({"grad_clip": 0.0}, "training.grad_clip must be a number > 0.0, got 0.0"),
        ({"val_fraction": 0.0}, "training.val_fraction must be a number > 0.0 and < 1.0, got 0.0"),
        ({"val_fraction": 1}, "training.val_fraction must be a number > 0.0 and < 1.0, got 1"),
        ({"time_budget_s": 0}, "training.time_budget_s must be a number > 0.0, got 0"),
        ({"loss": "mae"}, "training.loss must be one of ('pinball', 'mse'), got 'mae'"),
        ({"linear_init": 1}, "training.linear_init must be true or false, got 1"),
        ({"time_budget_s": float("inf")}, "training.time_budget_s must be a number > 0.0, got inf"),
        ({"device": "tpu"}, "training.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
        ({"device": "cuda:x"}, "training.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'cuda:x'"),
        ({"precision": "fp16"}, "training.precision must be one of ('auto', 'fp32', 'bf16'), got 'fp16'"),
        ({"threads": 0}, "training.threads must be a positive integer, got 0"),
        ({"threads": 1.5}, "training.threads must be a positive integer, got 1.5"),
        ({"calibrate": "yes"}, "training.calibrate must be true or false, got 'yes'"),
    ],
)
def test_train_config_rejects_bad_values_naming_the_field(kwargs, message):
    with pytest.raises(ValueError) as exc:
        TrainConfig(**kwargs)
    assert str(exc.value) == message


def test_optional_settings_take_none():
    # None is the library's "no cap" / "every core" / "never diverged" / "one pass per epoch"
    t = TrainConfig(time_budget_s=None, threads=None, divergence_factor=None, steps_per_epoch=None)
    assert (t.time_budget_s, t.threads, t.divergence_factor, t.steps_per_epoch) == (None, None, None, None)


TOML_KEYS = [
    (ModelConfig, f"{'forecast' if f.name in ('lookback', 'horizon') else 'model'}.{f.name}")
    for f in dataclasses.fields(ModelConfig)
] + [(TrainConfig, f"training.{f.name}") for f in dataclasses.fields(TrainConfig)]


@pytest.mark.parametrize(("cls", "key"), TOML_KEYS)
def test_every_message_names_the_setting_by_its_toml_key(cls, key):
    args = {"lookback": 24, "horizon": 6} if cls is ModelConfig else {}
    with pytest.raises(ValueError, match=rf"^{re.escape(key)} must be "):
        cls(**{**args, key.split(".")[1]: "bad"})


def test_numbers_are_normalised_to_float_and_valid_devices_accepted():
    assert type(ModelConfig(lookback=1, horizon=1, dropout=0).dropout) is float
    t = TrainConfig(learning_rate=1, time_budget_s=60, device="cuda:1")
    assert type(t.learning_rate) is float and type(t.time_budget_s) is float
    assert t.device == "cuda:1"


def test_configs_are_frozen():
    m = ModelConfig(lookback=24, horizon=6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.hidden_size = 3  # type: ignore[misc]


def test_dict_round_trip():
    m = ModelConfig(
        lookback=24,
        horizon=6,
        hidden_size=16,
        num_layers=1,
        dropout=0.0,
        patch_len=4,
        embedding_dim=3,
        instance_norm=False,
        quantiles=[0.05, 0.5, 0.95],  # a YAML list becomes a tuple
    )
    assert m.quantiles == (0.05, 0.5, 0.95) and m.median_index == 1
    t = TrainConfig(max_epochs=3, time_budget_s=12.5, device="cpu", seed=7, precision="fp32", threads=2)
    assert ModelConfig.from_dict(m.to_dict()) == m
    assert TrainConfig.from_dict(t.to_dict()) == t


def test_from_dict_rejects_unknown_and_missing_keys():
    with pytest.raises(ValueError, match=r"^unknown key 'hiden_size' in model config"):
        ModelConfig.from_dict({"lookback": 24, "horizon": 6, "hiden_size": 8})
    with pytest.raises(ValueError, match=r"^unknown key 'epochs' in training config"):
        TrainConfig.from_dict({"epochs": 3})
    with pytest.raises(ValueError) as exc:
        ModelConfig.from_dict({"lookback": 24})
    assert str(exc.value) == "missing key 'horizon' in model config"
    with pytest.raises(TypeError, match="training config must be a mapping, got list"):
        TrainConfig.from_dict([("seed", 1)])  # type: ignore[arg-type]


def test_from_dict_still_validates_values():
    with pytest.raises(ValueError, match=r"^model.hidden_size must be a positive integer, got -1$"):
        ModelConfig.from_dict({"lookback": 24, "horizon": 6, "hidden_size": -1})


def test_epoch_steps_default_to_one_pass_over_the_training_windows_capped_at_50():
    assert TrainConfig(batch_size=100).epoch_steps(250) == 3
    assert TrainConfig(batch_size=100).epoch_steps(1) == 1
    assert TrainConfig(batch_size=100).epoch_steps(10**6) == 50
    assert TrainConfig(batch_size=100, steps_per_epoch=7).epoch_steps(10**6) == 7

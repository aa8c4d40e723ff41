import dataclasses
import tomllib
from pathlib import Path

import pytest

from lstm_model.config import ModelConfig, TrainConfig
from tasks.config import ConfigError, load_config, parse_config
from tasks.sections import ModelSection, TrainingSection, auto_patch_len, check_url

BASE = """
[source]
url = "sqlite:///data/demo.db"
table = "readings"
series_id = "series_id"
timestamp = "ts"
target = "value"
covariates = []
future_covariates = []

[data]
freq = "h"
season_length = 24

[forecast]
horizon = 48
lookback = 168

[output]
url = "sqlite:///data/demo.db"
table = "forecasts"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipe.toml"
    path.write_text(text)
    return path


def test_issue_example_shape_loads_with_defaults(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.name == "pipe"
    assert cfg.source.table == "readings" and cfg.source.covariates == ()
    assert cfg.forecast.horizon == 48 and cfg.forecast.folds == 3
    assert cfg.model_config_for_lstm().lookback == 168
    assert cfg.train_config().device == "auto"
    assert hash(cfg)  # frozen and hashable, so Prefect can key caches on it


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, BASE.replace('table = "readings"', 'tabel = "readings"'))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}: unknown key 'source.tabel'" in str(err.value)


def test_wrong_type_names_key_and_value(tmp_path):
    path = write(tmp_path, BASE.replace("horizon = 48", 'horizon = "48"'))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: forecast.horizon must be a positive integer, got '48'"
    path = write(tmp_path, BASE.replace("lookback = 168", 'lookback = 168\nfolds = "3"'))
    with pytest.raises(ConfigError, match=r"'forecast.folds': Input should be a valid integer \(got '3'\)"):
        load_config(path)


def test_missing_required_key(tmp_path):
    path = write(tmp_path, BASE.replace('freq = "h"\n', ""))
    with pytest.raises(ConfigError, match=r"missing required key 'data.freq'"):
        load_config(path)


def test_table_and_query_are_exclusive(tmp_path):
    path = write(tmp_path, BASE.replace('table = "readings"', 'table = "readings"\nquery = "select 1"'))
    with pytest.raises(ConfigError, match="source needs exactly one of 'table' or 'query'"):
        load_config(path)


def test_column_names_cannot_carry_sql(tmp_path):
    path = write(tmp_path, BASE.replace('target = "value"', 'target = "value; drop table x"'))
    with pytest.raises(
        ConfigError, match=r"source.target must be a plain column name .* got 'value; drop table x'"
    ):
        load_config(path)


def test_same_column_in_two_roles(tmp_path):
    path = write(tmp_path, BASE.replace("covariates = []\nfuture", 'covariates = ["value"]\nfuture'))
    with pytest.raises(ConfigError, match="column 'value' is used as both target and covariates"):
        load_config(path)


def test_bad_frequency(tmp_path):
    path = write(tmp_path, BASE.replace('freq = "h"', 'freq = "fortnightly"'))
    with pytest.raises(ConfigError, match="data.freq must be a pandas offset alias .* got 'fortnightly'"):
        load_config(path)


def test_bad_url(tmp_path):
    path = write(
        tmp_path,
        BASE.replace('url = "sqlite:///data/demo.db"\ntable = "readings"', 'url = "nonsense"\ntable = "r"'),
    )
    with pytest.raises(ConfigError, match="source.url is not a valid SQLAlchemy URL"):
        load_config(path)


def test_out_of_range_value(tmp_path):
    path = write(tmp_path, BASE.replace("lookback = 168", "lookback = 0"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: forecast.lookback must be a positive integer, got 0"


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[source\n"))


def test_environment_overrides_urls_and_passwords_are_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("LSTMCAST_SOURCE_URL", "postgresql+psycopg://reader:s3cret@db:5432/sensors")
    monkeypatch.setenv("LSTMCAST_OUTPUT_URL", "postgresql+psycopg://writer:t0psecret@db:5432/out")
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.source.url.endswith("@db:5432/sensors")
    redacted = str(cfg.redacted())
    assert "s3cret" not in redacted and "t0psecret" not in redacted and "***" in redacted


def test_query_source_and_name_override():
    cfg = parse_config(
        {"name": "x", "source": {"query": "select * from t"}, "data": {"freq": "D", "season_length": 7},
         "forecast": {"horizon": 7, "lookback": 14}}
    )  # fmt: skip
    assert cfg.source.label == "the source query"


def test_model_defaults_are_quantiles_with_a_gate_and_a_deterministic_stop(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    model, train = cfg.model_config_for_lstm(), cfg.train_config()
    # lookback 168 holds seven seasons of 24: the LSTM reads it as seven daily segments
    assert model.quantiles == (0.1, 0.5, 0.9) and model.instance_norm and model.patch_len == 24
    assert cfg.forecast.gate == "fallback" and cfg.data.calendar
    # training length: up to 30 epochs of one pass over the windows (at most 50 batches each) with early
    # stopping; the wall-clock limit is only a safety cap
    assert (train.max_epochs, train.steps_per_epoch, train.patience) == (30, None, 4)
    assert (train.epoch_steps(1_000), train.epoch_steps(1_000_000)) == (4, 50)
    assert train.time_budget_s == 600.0 and train.precision == "auto"
    assert (train.loss, train.linear_init) == ("pinball", False)


@pytest.mark.parametrize(
    ("lookback", "season", "expected"),
    [(168, 24, 24), (84, 7, 7), (24, 24, 1), (36, 24, 1), (50, 1, 1), (14, 7, 7)],
)
def test_auto_patch_len_is_one_season_when_the_lookback_holds_two_or_more(lookback, season, expected):
    assert auto_patch_len(lookback, season) == expected


def test_patch_len_is_auto_or_a_positive_integer(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + '\n[model]\npatch_len = "season"\n'))
    assert str(err.value).endswith(": model.patch_len must be 'auto' or a positive integer, got 'season'")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + "\n[model]\npatch_len = 0\n"))
    assert str(err.value).endswith(": model.patch_len must be a positive integer, got 0")


def test_mse_loss_needs_a_single_median_output(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + '\n[training]\nloss = "mse"\n'))
    assert str(err.value).endswith(
        "training.loss 'mse' trains one point forecast: model.quantiles must be [0.5], got [0.1, 0.5, 0.9]"
    )
    cfg = load_config(write(tmp_path, BASE + '\n[model]\nquantiles = [0.5]\n[training]\nloss = "mse"\n'))
    assert cfg.train_config().loss == "mse"


def test_model_options_from_toml_reach_the_lstm_config(tmp_path):
    text = BASE + "\n[model]\nquantiles = [0.05, 0.5, 0.95]\npatch_len = 24\nembedding_dim = 4\n"
    model = load_config(write(tmp_path, text)).model_config_for_lstm()
    assert (model.quantiles, model.patch_len, model.embedding_dim) == ((0.05, 0.5, 0.95), 24, 4)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "[model]\nquantiles = [0.1, 0.9]",
            "model.quantiles must include 0.5 (the point forecast), got (0.1, 0.9)",
        ),
        (
            "[model]\nquantiles = [0.5, 0.1]",
            "model.quantiles must be strictly increasing numbers in (0, 1), got (0.5, 0.1)",
        ),
        ("[model]\npatch_len = 5", "forecast.lookback (168) must be a multiple of model.patch_len (5)"),
        ("[model]\nhidden_size = true", "model.hidden_size must be a positive integer, got True"),
        ("[model]\ndropout = 1.0", "model.dropout must be a number >= 0.0 and < 1.0, got 1.0"),
        ("[model]\ninstance_norm = 1", "model.instance_norm must be true or false, got 1"),
        ("[training]\nmax_epochs = 0", "training.max_epochs must be a positive integer, got 0"),
        (
            '[training]\nsteps_per_epoch = "all"',
            "training.steps_per_epoch must be 'auto' or a positive integer, got 'all'",
        ),
        ("[training]\nsteps_per_epoch = 0", "training.steps_per_epoch must be a positive integer, got 0"),
        ("[training]\nlearning_rate = 0", "training.learning_rate must be a number > 0.0, got 0"),
        ("[training]\nmax_val_windows = 0", "training.max_val_windows must be a positive integer, got 0"),
        (
            '[training]\ndevice = "tpu"',
            "training.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'",
        ),
        (
            '[training]\nprecision = "fp16"',
            "training.precision must be one of ('auto', 'fp32', 'bf16'), got 'fp16'",
        ),
        ('[training]\nseed = "7"', "training.seed must be an integer >= 0, got '7'"),
        (
            '[training]\non_failure = "retry"',
            "'training.on_failure': Input should be 'fail' or 'fallback' (got 'retry')",
        ),
    ],
)
def test_model_and_training_values_are_checked_with_the_key_named(tmp_path, extra, message):
    path = write(tmp_path, BASE + "\n" + extra + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: {message}"  # one check, one message


def test_a_training_error_is_reported_with_the_other_sections_errors(tmp_path):
    text = BASE.replace('table = "readings"', 'tabel = "readings"') + "\n[training]\nmax_epochs = 0\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).splitlines() == [
        f"{path}: unknown key 'source.tabel'",
        f"{path}: training.max_epochs must be a positive integer, got 0",
    ]


@pytest.mark.parametrize("section", ["model", "training"])
def test_unknown_model_and_training_keys_are_refused(tmp_path, section):
    path = write(tmp_path, BASE + f"\n[{section}]\nfoo = 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: unknown key '{section}.foo'"
    # lookback and horizon are [forecast]'s keys, not [model]'s
    if section == "model":
        with pytest.raises(ConfigError, match=r"unknown key 'model.lookback'"):
            load_config(write(tmp_path, BASE + "\n[model]\nlookback = 168\n"))


def test_the_sections_hold_the_dataclass_fields_and_only_the_pipeline_adds_keys():
    model_fields = [f.name for f in dataclasses.fields(ModelConfig)]
    train_fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert list(ModelSection.model_fields) == [n for n in model_fields if n not in ("lookback", "horizon")]
    assert list(TrainingSection.model_fields) == [*train_fields, "on_failure"]


def test_the_dataclass_defaults_are_the_pipeline_defaults(tmp_path):
    cfg = load_config(write(tmp_path, BASE + "\n[model]\n[training]\n"))
    train = cfg.train_config()
    for f in dataclasses.fields(TrainConfig):
        assert getattr(train, f.name) == f.default, f.name
    model = cfg.model_config_for_lstm()
    for f in dataclasses.fields(ModelConfig):
        if f.name not in ("lookback", "horizon", "patch_len"):
            assert getattr(model, f.name) == f.default, f.name
    # patch_len "auto" is the pipeline's own default: one season per segment
    assert model == ModelConfig(lookback=168, horizon=48, patch_len=auto_patch_len(168, 24))
    assert (cfg.model.patch_len, cfg.training.steps_per_epoch) == ("auto", "auto")
    assert cfg.training.on_failure == "fail"


def test_training_settings_are_settled_as_the_dataclass_holds_them(tmp_path):
    model = "[model]\ndropout = 0\n"
    text = f"{BASE}\n{model}[training]\nlearning_rate = 1\ntime_budget_s = 60\nmax_val_windows = 64\n"
    cfg = load_config(write(tmp_path, text))
    assert type(cfg.model.dropout) is float and type(cfg.training.learning_rate) is float
    assert cfg.redacted()["training"]["time_budget_s"] == 60.0
    assert cfg.train_config().max_val_windows == 64
    assert hash(cfg) == hash(load_config(write(tmp_path, text)))


def test_the_training_section_can_be_copied_with_changes(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    changed = cfg.model_copy(update={"training": cfg.training.model_copy(update={"max_epochs": 50})})
    assert changed.train_config().max_epochs == 50 and cfg.train_config().max_epochs == 30
    assert hash(changed) != hash(cfg)


def test_the_demo_configs_give_the_lstm_settings_they_always_have():
    root = Path(__file__).resolve().parents[2] / "lstmcast" / "demo"
    sensors = parse_config(tomllib.loads((root / "sensors.toml").read_text()), "sensors.toml")
    assert sensors.model_config_for_lstm().to_dict() == {
        "lookback": 168, "horizon": 48, "hidden_size": 64, "num_layers": 2, "dropout": 0.1,
        "context_size": 16, "instance_norm": True, "patch_len": 24, "embedding_dim": 0,
        "quantiles": [0.1, 0.5, 0.9],
    }  # fmt: skip
    assert sensors.train_config().to_dict() == {
        "max_epochs": 20, "steps_per_epoch": 25, "batch_size": 128, "learning_rate": 1e-3,
        "weight_decay": 1e-4, "patience": 4, "grad_clip": 1.0, "val_fraction": 0.1, "max_val_windows": 2048,
        "time_budget_s": 600.0, "seed": 0, "device": "auto", "precision": "auto", "threads": None,
        "calibrate": True, "linear_init": False, "loss": "pinball", "divergence_factor": 10.0,
    }  # fmt: skip
    sales = parse_config(tomllib.loads((root / "sales.toml").read_text()), "sales.toml")
    model, train = sales.model_config_for_lstm(), sales.train_config()
    assert (model.lookback, model.horizon, model.patch_len, model.embedding_dim) == (84, 28, 7, 8)
    assert (train.learning_rate, train.steps_per_epoch, train.time_budget_s) == (0.003, 25, 600.0)
    assert sales.data.holidays == "IT" and sensors.data.holidays is None


@pytest.mark.parametrize(
    "url", ["nonsense", "postgresql+psycopg://reader:s3cret@db:port/x", "postgresql://reader:s3cret@[::1"]
)
def test_a_bad_url_is_refused_without_its_password(url):
    with pytest.raises(ValueError) as err:
        check_url(url, "source.url")
    assert str(err.value) == (
        "source.url is not a valid SQLAlchemy URL (expected dialect+driver://user:password@host:port/database)"
    )


def test_gate_policy_must_be_known(tmp_path):
    path = write(tmp_path, BASE.replace("lookback = 168", 'lookback = 168\ngate = "maybe"'))
    with pytest.raises(ConfigError, match=r"'forecast.gate': Input should be 'fallback', 'fail' or 'off'"):
        load_config(path)


def test_the_config_reference_in_the_readme_is_a_valid_config():
    import re
    import tomllib
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (block,) = re.findall(r"```toml\n(.*?)```", readme, flags=re.S)
    cfg = parse_config(tomllib.loads(block), "README.md")
    assert cfg.registry.table == "lstmcast_models" and cfg.scale.runner == "threads"
    assert cfg.output.accuracy_table == "lstmcast_accuracy" and cfg.training.on_failure == "fail"


def with_data(text: str) -> str:
    return BASE.replace("season_length = 24", f"season_length = 24\n{text}")


def test_a_holiday_calendar_is_read_in_the_library_spelling(tmp_path):
    assert load_config(write(tmp_path, with_data('holidays = "it"'))).data.holidays == "IT"
    assert load_config(write(tmp_path, with_data('holidays = "us-ca"'))).data.holidays == "US-CA"
    assert load_config(write(tmp_path, BASE)).data.holidays is None


@pytest.mark.parametrize(("spec", "message"), [
    ("XX", "country code 'XX' is not one the holidays library knows (ISO 3166-1 alpha-2 such as 'IT', 'US', "
           "'CN'; holidays.list_supported_countries() lists them)"),
    ("CN-ZZ", "subdivision 'ZZ' of 'CN' is unknown to the holidays library; it has none"),
    ("US-CA-X", "'US-CA-X' is not a country code ('IT') or a country and subdivision ('US-CA')"),
])  # fmt: skip
def test_an_unknown_holiday_calendar_is_named(tmp_path, spec, message):
    path = write(tmp_path, with_data(f'holidays = "{spec}"'))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: 'data.holidays': {message} (got {spec!r})"


def test_an_unknown_subdivision_lists_the_known_ones(tmp_path):
    path = write(tmp_path, with_data('holidays = "IT-XX"'))
    known = r"choose from \['AG', 'AL', .* \.\.\. \(got 'IT-XX'\)"
    with pytest.raises(
        ConfigError, match=r"subdivision 'XX' of 'IT' is unknown to the holidays library; " + known
    ):
        load_config(path)


def test_the_events_table_is_a_table_name_and_its_events_can_be_marked_checked(tmp_path):
    events = BASE.replace("future_covariates = []", "future_covariates = []\nevents_table = {}")
    cfg = load_config(write(tmp_path, events.format('"plan.events"\nchecked_covariates = ["event:fair"]')))
    assert cfg.source.events_table == "plan.events" and cfg.source.checked_covariates == ("event:fair",)
    path = write(tmp_path, events.format('"events; drop table x"'))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (
        f"{path}: 'source.events_table': source.events_table must be a table name, optionally "
        "schema-qualified, got 'events; drop table x'"
    )
    path = write(
        tmp_path,
        BASE.replace("future_covariates = []", 'future_covariates = []\nchecked_covariates = ["event:fair"]'),
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (
        f"{path}: source.checked_covariates entry 'event:fair' is not one of source.future_covariates []"
    )

from pathlib import Path

import pytest

from tasks.config import ConfigError, auto_patch_len, load_config, parse_config

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
    with pytest.raises(
        ConfigError, match=r"'forecast.horizon': Input should be a valid integer \(got '48'\)"
    ):
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
    with pytest.raises(
        ConfigError, match=r"'forecast.lookback': Input should be greater than or equal to 1 \(got 0\)"
    ):
        load_config(path)


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
    assert str(err.value).endswith(
        "'model.patch_len': model.patch_len must be 'auto' or a positive integer, got 'season'"
    )


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
        ("[model]\nquantiles = [0.5, 0.1]", "model.quantiles must be strictly increasing numbers in (0, 1)"),
        ("[model]\npatch_len = 5", "model.lookback (168) must be a multiple of model.patch_len (5)"),
        ('[training]\nprecision = "fp16"', "'training.precision': Input should be 'auto', 'fp32' or 'bf16'"),
    ],
)
def test_model_and_training_values_are_checked_with_the_key_named(tmp_path, extra, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + "\n" + extra + "\n"))
    assert message in str(err.value)


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

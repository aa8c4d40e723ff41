from pathlib import Path

import pytest

from tasks.config import ConfigError, load_config, parse_config

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

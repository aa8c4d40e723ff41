"""Pipeline configuration: one TOML file per pipeline, validated once at the boundary.

A typo in a nightly job's config fails loudly before any data moves, with the file, key and value in the
message. Each section is a model in tasks/sections.py; this module puts them together, checks what needs
several sections at once, and reads the file, with database URLs from the environment or a Prefect Secret.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any, Self

from pydantic import ValidationError, field_validator, model_validator
from sqlalchemy.engine import make_url

from lstm_model.config import ModelConfig, TrainConfig
from tasks.errors import UserError
from tasks.sections import (
    PIPELINE_NAME,
    AlertsSection,
    DataConfig,
    ForecastConfig,
    ModelSection,
    OutputConfig,
    RegistrySection,
    RetentionSection,
    ScaleSection,
    Section,
    SourceConfig,
    TrainingSection,
    auto_patch_len,
    mask_password,
    resolve_auto,
    settled,
)

__all__ = ["PIPELINE_NAME", "ConfigError", "PipelineConfig", "SourceConfig", "load_config", "parse_config"]


SOURCE_URL_ENV = "LSTMCAST_SOURCE_URL"


OUTPUT_URL_ENV = "LSTMCAST_OUTPUT_URL"


class ConfigError(UserError, ValueError):
    """A configuration file that cannot be used; the message names the file, key and value."""


def secret_url(block: str, what: str) -> str:
    """The URL kept in the Prefect Secret block `block` (read from the Prefect API at load time)."""
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(block).get()
    except ValueError as exc:
        raise ValueError(f"{what}: no Prefect Secret block named {block!r} ({exc})") from None
    if not isinstance(value, str):
        raise ValueError(f"{what}: the Prefect Secret block {block!r} must hold a URL string")
    return value


class PipelineConfig(Section):
    name: str
    source: SourceConfig
    data: DataConfig
    forecast: ForecastConfig
    model: ModelSection = ModelSection()
    training: TrainingSection = TrainingSection()
    output: OutputConfig = OutputConfig()
    registry: RegistrySection = RegistrySection()
    scale: ScaleSection = ScaleSection()
    retention: RetentionSection = RetentionSection()
    alerts: AlertsSection = AlertsSection()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not PIPELINE_NAME.match(v):
            raise ValueError(f"name must use letters, digits, '_', '-' or '.', got {v!r}")
        return v

    @model_validator(mode="after")
    def _model_buildable(self) -> Self:
        """Checks [model] with [forecast]'s lookback and horizon by building the ModelConfig, and the
        loss against the quantile list: the checks that need several sections at once."""
        model = self.model_config_for_lstm()
        if self.training.loss == "mse" and model.quantiles != (0.5,):
            raise ValueError(
                f"training.loss 'mse' trains one point forecast: model.quantiles must be [0.5], "
                f"got {list(model.quantiles)}"
            )
        section = self.model.model_copy(update=settled(self.model, model))
        object.__setattr__(self, "model", section)  # frozen: set while it is being validated
        return self

    def model_config_for_lstm(self) -> ModelConfig:
        settings = dict(self.model)
        patch_len = resolve_auto(settings.pop("patch_len"), "model.patch_len", None)
        model = ModelConfig(
            lookback=self.forecast.lookback,
            horizon=self.forecast.horizon,
            patch_len=1 if patch_len is None else patch_len,
            **settings,
        )
        if patch_len is None:  # "auto", worked out from the lookback ModelConfig has just checked
            model = dataclasses.replace(
                model, patch_len=auto_patch_len(model.lookback, self.data.season_length)
            )
        return model

    def train_config(self) -> TrainConfig:
        return self.training.train_config()

    def redacted(self) -> dict[str, Any]:
        """The config as plain data with passwords removed, for logs and the runs table."""
        data = self.model_dump(mode="json")
        for section in ("source", "output"):
            data[section]["url"] = make_url(data[section]["url"]).render_as_string(hide_password=True)
        return data


def _format_validation_error(path: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key '{loc}'")
        elif err["type"] == "missing":
            lines.append(f"{path}: missing required key '{loc}'")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            # a section's check that names its own keys (training.max_epochs) needs no 'training': before it
            where = f"'{loc}': " if loc and not msg.startswith(f"{loc}.") else ""
            # Messages of lstmcast's own validators already quote the value; pydantic's do not.
            shown = loc and not isinstance(err["input"], dict) and f"got {err['input']!r}" not in msg
            got = f" (got {mask_password(err['input'])!r})" if shown else ""
            lines.append(f"{path}: {where}{msg}{got}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], path: str = "<config>", *, name: str | None = None) -> PipelineConfig:
    """Validate a config mapping. Database URLs with their passwords come from, in order: the environment
    (LSTMCAST_SOURCE_URL / LSTMCAST_OUTPUT_URL), a Prefect Secret block named by `url_secret`, `url`."""
    data = {**data}
    data.setdefault("name", name or Path(path).stem)
    for section, env in (("source", SOURCE_URL_ENV), ("output", OUTPUT_URL_ENV)):
        sec = data.get(section, {})
        if not isinstance(sec, dict):
            continue
        if os.environ.get(env):
            data[section] = {**sec, "url": os.environ[env]}
        elif isinstance(sec.get("url_secret"), str):
            try:
                data[section] = {**sec, "url": secret_url(sec["url_secret"], f"{section}.url_secret")}
            except ValueError as exc:
                raise ConfigError(f"{path}: {exc}") from None
    for section in ("source", "model", "output"):
        # TOML arrays arrive as lists; the frozen models hold tuples so configs stay hashable.
        sec = data.get(section)
        if isinstance(sec, dict):
            data[section] = {k: tuple(v) if isinstance(v, list) else v for k, v in sec.items()}
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from None


def load_config(path: str | os.PathLike[str]) -> PipelineConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, str(path))

"""Pipeline configuration: one TOML file per pipeline, validated once at the boundary.

Every section is a frozen pydantic model that rejects unknown keys and wrong types, so a typo in a
nightly job's config fails loudly before any data moves, with the file, key and value in the message.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import NoSuchModuleError

from lstm_model.config import ModelConfig, TrainConfig

SOURCE_URL_ENV = "LSTMCAST_SOURCE_URL"
OUTPUT_URL_ENV = "LSTMCAST_OUTPUT_URL"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_QUALIFIED_TABLE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*$")
PIPELINE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # keys rows of the output tables and names partitions


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file, key and value."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def check_identifier(value: str, what: str) -> str:
    """Column names become quoted SQL identifiers; restricting them keeps SQL text out of the config."""
    if not _IDENTIFIER.match(value):
        raise ValueError(f"{what} must be a plain column name (letters, digits, underscore), got {value!r}")
    return value


def check_url(value: str, what: str) -> str:
    try:
        url = make_url(value)
    except Exception:  # sqlalchemy's message repeats the string, password included: not shown
        raise ValueError(
            f"{what} is not a valid SQLAlchemy URL (expected dialect+driver://user:password@host:port/database)"
        ) from None
    try:  # an unknown database is a config error, found before any stage runs
        url.get_dialect()
    except NoSuchModuleError:
        raise ValueError(f"{what}: no SQLAlchemy dialect {url.drivername!r} is installed") from None
    return value


def mask_password(value: object) -> object:
    """`value` with any password in a URL-like string replaced by ***, for messages and logs."""
    if not isinstance(value, str):
        return value
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", value)


def auto_or_positive(value: Any, key: str) -> Any:
    """A setting the data can decide: "auto", or a positive integer (not a bool) the user fixes."""
    if value != "auto" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{key} must be 'auto' or a positive integer, got {value!r}")
    return value


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


class SourceConfig(_Section):
    url: str = Field(default="sqlite:///data/demo.db", repr=False)  # may hold a password: never in a repr
    url_secret: str | None = None  # name of a Prefect Secret block holding the URL (overrides `url`)
    table: str | None = None
    query: str | None = None
    series_id: str = "series_id"
    timestamp: str = "ts"
    target: str = "value"
    covariates: tuple[str, ...] = ()
    future_covariates: tuple[str, ...] = ()
    # Incremental extract: rows newer than the last run's watermark, plus this much before it again so
    # that late-arriving rows are picked up (a pandas Timedelta string such as "2D" or "6h").
    incremental: bool = True
    reread_window: str = "2D"
    batch_rows: int = Field(default=100_000, ge=1_000)

    @field_validator("reread_window")
    @classmethod
    def _reread_window(cls, v: str) -> str:
        try:
            window = pd.Timedelta(v)
        except ValueError:
            raise ValueError(
                f"source.reread_window must be a duration such as '2D' or '6h', got {v!r}"
            ) from None
        if window < pd.Timedelta(0):
            raise ValueError(f"source.reread_window must not be negative, got {v!r}")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v, "source.url")

    @field_validator("table")
    @classmethod
    def _table(cls, v: str | None) -> str | None:
        if v is not None and not _QUALIFIED_TABLE.match(v):
            raise ValueError(f"source.table must be a table name, optionally schema-qualified, got {v!r}")
        return v

    @field_validator("series_id", "timestamp", "target")
    @classmethod
    def _column(cls, v: str, info: Any) -> str:
        return check_identifier(v, f"source.{info.field_name}")

    @field_validator("covariates", "future_covariates")
    @classmethod
    def _columns(cls, v: tuple[str, ...], info: Any) -> tuple[str, ...]:
        for name in v:
            check_identifier(name, f"source.{info.field_name} entry")
        return v

    @model_validator(mode="after")
    def _one_source_and_distinct_columns(self) -> SourceConfig:
        if (self.table is None) == (self.query is None):
            raise ValueError("source needs exactly one of 'table' or 'query'")
        seen: dict[str, str] = {}
        for role, name in self.column_roles():
            if name in seen:
                raise ValueError(f"column {name!r} is used as both {seen[name]} and {role}")
            seen[name] = role
        return self

    def column_roles(self) -> list[tuple[str, str]]:
        roles = [("series_id", self.series_id), ("timestamp", self.timestamp), ("target", self.target)]
        roles += [("covariates", c) for c in self.covariates]
        roles += [("future_covariates", c) for c in self.future_covariates]
        return roles

    @property
    def label(self) -> str:
        return f"table {self.table!r}" if self.table else "the source query"


class DataConfig(_Section):
    freq: str
    season_length: int = Field(ge=1)
    duplicates: Literal["mean", "sum", "first", "last", "min", "max"] = "mean"
    impute: Literal["linear", "ffill", "seasonal"] = "linear"  # seasonal: the value one season earlier
    max_gap: int = Field(default=24, ge=0)
    non_negative: bool = False
    # Robust clipping of outliers: values further than `outlier_threshold` scaled MADs from the series'
    # median are clipped to that bound (counted per series). Off by default: spikes may be real.
    outliers: Literal["off", "clip"] = "off"
    outlier_threshold: float = Field(default=6.0, gt=0)
    calendar: bool = True  # add hour/day-of-week/day-of-year features as known-future covariates
    data_dir: str = "data/lstmcast"

    @field_validator("freq")
    @classmethod
    def _freq(cls, v: str) -> str:
        try:
            offset = pd.tseries.frequencies.to_offset(v)
        except ValueError:
            offset = None
        # A zero or negative step passes pandas' parser but cannot make a time grid.
        if offset is None or offset.n <= 0:
            raise ValueError(
                f"data.freq must be a pandas offset alias such as 'h', 'D' or '15min' with a positive step, "
                f"got {v!r}"
            )
        return v


class ForecastConfig(_Section):
    horizon: int = Field(ge=1)
    lookback: int = Field(ge=1)
    folds: int = Field(default=3, ge=2)
    # What happens when the LSTM's backtest MASE does not beat every baseline's: publish the best
    # baseline's forecast instead ("fallback"), fail the run before publishing ("fail"), or publish the
    # LSTM anyway ("off").
    gate: Literal["fallback", "fail", "off"] = "fallback"


class ModelSection(_Section):
    hidden_size: int = Field(default=64, ge=1)
    num_layers: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    context_size: int = Field(default=16, ge=1)
    instance_norm: bool = True
    # "auto": one season per segment when the lookback holds at least two whole seasons (`auto_patch_len`)
    patch_len: int | Literal["auto"] = "auto"

    @field_validator("patch_len", mode="before")
    @classmethod
    def _patch_len(cls, v: Any) -> Any:
        return auto_or_positive(v, "model.patch_len")

    embedding_dim: int = Field(default=0, ge=0)
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)


class TrainingSection(_Section):
    max_epochs: int = Field(default=30, ge=1)
    # batches per epoch; "auto": one pass over the training windows, at most 50 batches
    steps_per_epoch: int | Literal["auto"] = "auto"

    @field_validator("steps_per_epoch", mode="before")
    @classmethod
    def _steps(cls, v: Any) -> Any:
        return auto_or_positive(v, "training.steps_per_epoch")

    batch_size: int = Field(default=256, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    patience: int = Field(default=4, ge=1)
    grad_clip: float = Field(default=1.0, gt=0)
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    # A safety cap on each fit's wall-clock seconds, not the stopping rule: epochs, steps and early
    # stopping decide how long a fit trains, so the same data and seed give the same model on a busy
    # machine. A fit the cap stops is logged and recorded as "stopped by time, not reproducible".
    time_budget_s: float | None = Field(default=600.0, gt=0)
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    threads: int | None = Field(default=None, ge=1)
    calibrate: bool = True
    linear_init: bool = False  # start the linear skip path at the least-squares linear forecaster
    loss: Literal["pinball", "mse"] = "pinball"  # mse: one mean forecast, needs model.quantiles = [0.5]
    divergence_factor: float | None = Field(default=10.0, gt=1)  # val loss above this x the best: failed
    # a training that fails (non-finite or diverging loss): fail the run, or publish the best baseline
    on_failure: Literal["fail", "fallback"] = "fail"

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.match(r"^(auto|cpu|cuda(:\d+)?)$", v):
            raise ValueError(f"training.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {v!r}")
        return v


class OutputConfig(_Section):
    url: str = Field(default="sqlite:///data/demo.db", repr=False)
    url_secret: str | None = None
    table: str = "forecasts"
    runs_table: str = "lstmcast_runs"
    quality_table: str = "lstmcast_quality"  # per-run, per-series counts of every cleaning repair
    accuracy_table: str = "lstmcast_accuracy"  # scores of earlier forecasts once their actuals arrived
    # PostgreSQL: a forecast table lstmcast creates gets one partition per (pipeline, as_of), so a publish
    # loads and keys a table of its own and attaches it; an existing table keeps its layout
    partitioned: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v, "output.url")

    @field_validator("table", "runs_table", "quality_table", "accuracy_table")
    @classmethod
    def _table(cls, v: str, info: Any) -> str:
        if not _QUALIFIED_TABLE.match(v):
            raise ValueError(f"output.{info.field_name} must be a table name, got {v!r}")
        return v


class RegistrySection(_Section):
    """When the nightly run trains. A full retrain every `retrain_every` runs, and whenever the data
    drifted or the model settings changed; the runs in between fine-tune the champion for
    `fine_tune_epochs` epochs (`between = "warm_start"`) or forecast with it as it is ("reuse")."""

    table: str = "lstmcast_models"
    retrain_every: int = Field(default=1, ge=1)
    between: Literal["warm_start", "reuse"] = "warm_start"
    fine_tune_epochs: int = Field(default=5, ge=1)
    # median over series of |recent mean - champion's mean| / champion's std of the target
    drift_threshold: float | None = Field(default=2.0, gt=0)

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        if not _QUALIFIED_TABLE.match(v):
            raise ValueError(f"registry.table must be a table name, got {v!r}")
        return v


class ScaleSection(_Section):
    """Where the per-fold backtests and per-group forecasts run: Prefect's thread pool on this machine
    (one at a time, each using every core), or a Dask cluster (`dask_address`, else a LocalCluster)."""

    runner: Literal["threads", "dask"] = "threads"
    dask_address: str | None = None
    dask_workers: int | None = Field(default=None, ge=1)
    forecast_groups: int = Field(default=1, ge=1)


def auto_patch_len(lookback: int, season_length: int) -> int:
    """Segment length the LSTM reads the lookback in: one season when the lookback is at least two whole
    seasons (a week of hours as 7 daily segments), otherwise single steps. A segment per season keeps
    the recurrence short (7 steps instead of 168), which trains about 10x faster and lets the LSTM
    compare whole seasons."""
    if season_length > 1 and lookback % season_length == 0 and lookback >= 2 * season_length:
        return season_length
    return 1


class PipelineConfig(_Section):
    name: str
    source: SourceConfig
    data: DataConfig
    forecast: ForecastConfig
    model: ModelSection = ModelSection()
    training: TrainingSection = TrainingSection()
    output: OutputConfig = OutputConfig()
    registry: RegistrySection = RegistrySection()
    scale: ScaleSection = ScaleSection()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not PIPELINE_NAME.match(v):
            raise ValueError(f"name must use letters, digits, '_', '-' or '.', got {v!r}")
        return v

    @model_validator(mode="after")
    def _model_buildable(self) -> PipelineConfig:
        """Checks that need several sections at once (lookback vs patch_len, the quantile list, the loss)."""
        model = self.model_config_for_lstm()
        if self.training.loss == "mse" and model.quantiles != (0.5,):
            raise ValueError(
                f"training.loss 'mse' trains one point forecast: model.quantiles must be [0.5], "
                f"got {list(model.quantiles)}"
            )
        self.train_config()
        return self

    def model_config_for_lstm(self) -> ModelConfig:
        settings = self.model.model_dump()
        if settings["patch_len"] == "auto":
            settings["patch_len"] = auto_patch_len(self.forecast.lookback, self.data.season_length)
        return ModelConfig(lookback=self.forecast.lookback, horizon=self.forecast.horizon, **settings)

    def train_config(self) -> TrainConfig:
        settings = self.training.model_dump(exclude={"on_failure"})
        if settings["steps_per_epoch"] == "auto":
            settings["steps_per_epoch"] = None
        return TrainConfig(**settings)

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
            where = f"'{loc}': " if loc else ""
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

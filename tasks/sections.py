"""One frozen pydantic model per section of a pipeline's TOML file, each rejecting unknown keys.

The [model] and [training] sections are generated from the fields of lstm_model.config's ModelConfig and
TrainConfig (names, types, defaults) and checked by constructing them, as are [forecast]'s lookback and
horizon: those dataclasses are the one definition and the one check of each setting. This module adds
only what is the pipeline's: "auto" for model.patch_len and training.steps_per_epoch, and
training.on_failure.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal, Self, get_type_hints

import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SkipValidation,
    create_model,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from lstm_model.config import ModelConfig, TrainConfig
from lstm_model.features import EVENT_PREFIX, calendar_spec

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


_QUALIFIED_TABLE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*$")


PIPELINE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # keys rows of the output tables and names partitions


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def check_identifier(value: str, what: str) -> str:
    """Column names become quoted SQL identifiers; restricting them keeps SQL text out of the config."""
    if not _IDENTIFIER.match(value):
        raise ValueError(f"{what} must be a plain column name (letters, digits, underscore), got {value!r}")
    return value


def check_url(value: str, what: str) -> str:
    """`value` if it is a SQLAlchemy URL whose dialect is installed; the message never shows the URL."""
    try:
        url = make_url(value)
    # ArgumentError: not URL-shaped; ValueError: a port that is not a number. Their messages can
    # repeat the string, password included, so they are not shown.
    except (ArgumentError, ValueError):
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


def resolve_auto(value: Any, key: str, auto: Any) -> Any:
    """The dataclass value of a setting the TOML may leave to the data: `auto` for "auto". Other strings
    are refused here; numbers are the dataclass's to check."""
    if value == "auto":
        return auto
    if isinstance(value, str):
        raise ValueError(f"{key} must be 'auto' or a positive integer, got {value!r}")
    return value


class SourceConfig(Section):
    url: str = Field(default="sqlite:///data/demo.db", repr=False)  # may hold a password: never in a repr
    url_secret: str | None = None  # name of a Prefect Secret block holding the URL (overrides `url`)
    table: str | None = None
    query: str | None = None
    series_id: str = "series_id"
    timestamp: str = "ts"
    target: str = "value"
    covariates: tuple[str, ...] = ()
    future_covariates: tuple[str, ...] = ()
    # future covariates the leakage guard lets through: a person checked they are plans, known in advance
    checked_covariates: tuple[str, ...] = ()
    # a table of (date, name) rows: events fixed in advance, each name a known-future input of the model
    events_table: str | None = None
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

    @field_validator("table", "events_table")
    @classmethod
    def _table(cls, v: str | None, info: Any) -> str | None:
        if v is not None and not _QUALIFIED_TABLE.match(v):
            raise ValueError(
                f"source.{info.field_name} must be a table name, optionally schema-qualified, got {v!r}"
            )
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

    @model_validator(mode="after")
    def _checked_are_future_covariates(self) -> SourceConfig:
        for name in self.checked_covariates:
            if name in self.future_covariates or (self.events_table and name.startswith(EVENT_PREFIX)):
                continue
            events = (
                f" or an event of source.events_table ('{EVENT_PREFIX}<name>')" if self.events_table else ""
            )
            raise ValueError(
                f"source.checked_covariates entry {name!r} is not one of source.future_covariates "
                f"{list(self.future_covariates)}{events}"
            )
        return self

    def column_roles(self) -> list[tuple[str, str]]:
        roles = [("series_id", self.series_id), ("timestamp", self.timestamp), ("target", self.target)]
        roles += [("covariates", c) for c in self.covariates]
        roles += [("future_covariates", c) for c in self.future_covariates]
        return roles

    @property
    def label(self) -> str:
        return f"table {self.table!r}" if self.table else "the source query"


class DataConfig(Section):
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
    # a public holiday calendar of the holidays library ("IT", or with a subdivision "US-CA") whose days
    # become known-future covariates (lstm_model.features.HOLIDAY_NAMES)
    holidays: str | None = None
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

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, v: str | None) -> str | None:
        # its ValueError names the unknown country or subdivision
        return None if v is None else calendar_spec(v)


class ForecastConfig(Section):
    # type and range checked once, by the ModelConfig that PipelineConfig builds from them
    horizon: SkipValidation[int]
    lookback: SkipValidation[int]
    folds: int = Field(default=3, ge=2)
    # What happens when the LSTM's backtest MASE does not beat every baseline's: publish the best
    # baseline's forecast instead ("fallback"), fail the run before publishing ("fail"), or publish the
    # LSTM anyway ("off").
    gate: Literal["fallback", "fail", "off"] = "fallback"


_AUTO_INT = SkipValidation[int | Literal["auto"]]  # "auto", or an integer the dataclass checks


def _fields_of(cls: type, *, skip: tuple[str, ...] = (), **pipeline: Any) -> dict[str, Any]:
    """pydantic field definitions of the dataclass `cls`'s fields (names, types, defaults), not checked
    by pydantic since constructing `cls` checks them; `pipeline` replaces or adds the pipeline's own."""
    hints = get_type_hints(cls)
    fields = {
        f.name: (SkipValidation[hints[f.name]], f.default)
        for f in dataclasses.fields(cls)
        if f.name not in skip
    }
    return fields | pipeline


def settled(section: Section, checked: ModelConfig | TrainConfig) -> dict[str, Any]:
    """The values `checked` settled on (floats, tuples of floats) for `section`'s settings but "auto",
    for the section to hold, so that dumps and cache keys show what the model gets."""
    return {
        f.name: getattr(checked, f.name)
        for f in dataclasses.fields(checked)
        if f.name in type(section).model_fields and getattr(section, f.name) != "auto"
    }


class _TrainingBase(Section):
    """Checked by building the TrainConfig, when the section is validated."""

    @model_validator(mode="after")
    def _checked_by_train_config(self) -> Self:
        for name, value in settled(self, self.train_config()).items():
            object.__setattr__(self, name, value)  # frozen: set while it is being validated
        return self

    def train_config(self) -> TrainConfig:
        settings = dict(self)
        del settings["on_failure"]
        steps = resolve_auto(settings.pop("steps_per_epoch"), "training.steps_per_epoch", None)
        return TrainConfig(steps_per_epoch=steps, **settings)


ModelSection = create_model(
    "ModelSection",
    __base__=Section,
    __module__=__name__,
    __doc__="ModelConfig's fields but lookback and horizon, which are [forecast]'s: PipelineConfig checks "
    "the section by building the ModelConfig with them.",
    # "auto": one season per segment when the lookback holds at least two whole seasons (`auto_patch_len`)
    **_fields_of(ModelConfig, skip=("lookback", "horizon"), patch_len=(_AUTO_INT, "auto")),
)


TrainingSection = create_model(
    "TrainingSection",
    __base__=_TrainingBase,
    __module__=__name__,
    __doc__="TrainConfig's fields and the pipeline's on_failure.",
    **_fields_of(
        TrainConfig,
        # "auto": one pass over the training windows, at most lstm_model.config.MAX_AUTO_STEPS batches
        steps_per_epoch=(_AUTO_INT, "auto"),
        # a training that fails (non-finite or diverging loss): fail the run, or publish the best baseline
        on_failure=(Literal["fail", "fallback"], "fail"),
    ),
)


class OutputConfig(Section):
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


class RegistrySection(Section):
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


class ScaleSection(Section):
    """Where the per-fold backtests and per-group forecasts run: Prefect's thread pool on this machine
    (one at a time, each using every core), or a Dask cluster (`dask_address`, else a LocalCluster)."""

    runner: Literal["threads", "dask"] = "threads"
    dask_address: str | None = None
    dask_workers: int | None = Field(default=None, ge=1)
    forecast_groups: int = Field(default=1, ge=1)


class RetentionSection(Section):
    """What `lstmcast prune` and the nightly run's last task remove: a pipeline's outputs whose as-of is
    older than the run's as-of minus `keep` (measured from the as-of, so a backfill prunes only what is
    older than the dates it forecasts). Without `keep`, nothing is pruned."""

    keep: str | None = None  # a pandas Timedelta string such as "400D"
    accuracy: bool = False  # the accuracy history is kept unless this asks for it to be pruned too

    @model_validator(mode="after")
    def _keep(self) -> Self:
        if self.keep is None:
            return self
        try:
            window = pd.Timedelta(self.keep)
        except ValueError:
            window = pd.NaT
        # a bare number parses as nanoseconds, never what a retention period means
        if pd.isna(window) or not re.search(r"[A-Za-z]", self.keep):
            raise ValueError(
                f"retention.keep must be a duration with a unit such as '400D' or '12h', got {self.keep!r}"
            )
        if window <= pd.Timedelta(0):
            raise ValueError(f"retention.keep must be positive, got {self.keep!r}")
        return self

    def window(self) -> pd.Timedelta | None:
        return pd.Timedelta(self.keep) if self.keep is not None else None


class AlertsSection(Section):
    """Where `lstmcast alerts create` sends the pipeline's alerts: the Prefect notification block named
    `block` (Slack, e-mail, a custom webhook, ...), when a nightly run ends badly or none has completed
    `deadline` after it started."""

    block: str | None = None  # a block document name, or "<block-type-slug>/<name>" when names repeat
    deadline: str = "3h"  # a pandas Timedelta string; Prefect's proactive triggers need at least 10 s

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, v: str) -> str:
        try:
            window = pd.Timedelta(v)
        except ValueError:
            window = pd.NaT
        if pd.isna(window) or not re.search(r"[A-Za-z]", v):
            raise ValueError(f"alerts.deadline must be a duration with a unit such as '3h', got {v!r}")
        if window < pd.Timedelta(seconds=10):
            raise ValueError(f"alerts.deadline must be at least 10 seconds, got {v!r}")
        return v

    def window(self) -> pd.Timedelta:
        return pd.Timedelta(self.deadline)


def auto_patch_len(lookback: int, season_length: int) -> int:
    """Segment length the LSTM reads the lookback in: one season when the lookback is at least two whole
    seasons (a week of hours as 7 daily segments), otherwise single steps. A segment per season keeps
    the recurrence short (7 steps instead of 168), which trains much faster and lets the LSTM
    compare whole seasons."""
    if season_length > 1 and lookback % season_length == 0 and lookback >= 2 * season_length:
        return season_length
    return 1

"""Export a registered model to ONNX: the champion, or any version, found in the pipeline's registry.

Not a stage: the CLI calls it on demand. It reads the registry table itself (through the shared schema)
rather than through tasks.registry, so no stage depends on it and it depends on no stage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from tasks.config import PipelineConfig
from tasks.db import create_engine
from tasks.errors import UserError
from tasks.parsing import parse_as_of
from tasks.schemas import models_table

CHAMPION = "champion"  # the status tasks.registry gives the model that forecasts


class ExportError(UserError, LookupError):
    """No model to export: no registry table, no such version, no champion, or its checkpoint is gone."""


@dataclass(frozen=True)
class RegisteredModel:
    version: str
    status: str
    as_of: str
    checkpoint_path: str


@dataclass(frozen=True)
class Exported:
    pipeline: str
    model: RegisteredModel
    path: str


def find_model(cfg: PipelineConfig, version: str | None = None) -> RegisteredModel:
    """The registry row of `version`, or of the pipeline's champion when `version` is None."""
    table = models_table(cfg.registry.table, sa.MetaData())
    where = f"registry table {cfg.registry.table!r}"
    columns = (table.c.version, table.c.status, table.c.as_of, table.c.checkpoint_path)
    query = sa.select(*columns).where(table.c.pipeline == cfg.name)
    if version is None:
        query = query.where(table.c.status == CHAMPION).order_by(table.c.promoted_at.desc()).limit(1)
    else:
        query = query.where(table.c.version == version)
    engine = create_engine(cfg.output.url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table.name, schema=table.schema):
                raise ExportError(
                    f"pipeline {cfg.name!r} has no registered models: {where} does not exist "
                    "(a nightly run creates it)"
                )
            row = conn.execute(query).first()
    finally:
        engine.dispose()
    if row is None and version is None:
        raise ExportError(f"pipeline {cfg.name!r} has no champion in {where}; name one with --version")
    if row is None:
        raise ExportError(f"pipeline {cfg.name!r} has no model version {version!r} in {where}")
    return RegisteredModel(row.version, row.status, parse_as_of(row.as_of).isoformat(), row.checkpoint_path)


def run_export(cfg: PipelineConfig, out: str | os.PathLike[str], version: str | None = None) -> Exported:
    """Write the model's ONNX file to `out`; its metadata also names the pipeline, version and as-of."""
    from lstm_model.checkpoint import load_checkpoint
    from lstm_model.onnx_export import export_onnx, require_onnx

    require_onnx()  # before the checkpoint is read: a missing extra is the first thing to fix
    model = find_model(cfg, version)
    if not Path(model.checkpoint_path).is_file():
        raise ExportError(
            f"model version {model.version!r} of pipeline {cfg.name!r}: its checkpoint "
            f"{model.checkpoint_path} is missing"
        )
    result = load_checkpoint(model.checkpoint_path)
    extra = {"pipeline": cfg.name, "version": model.version, "as_of": model.as_of}
    if cfg.data.holidays:  # the calendar whose days fill the holiday columns (lstm_model.features)
        extra["holidays"] = cfg.data.holidays
    path = export_onnx(result, out, extra)
    return Exported(cfg.name, model, str(path))

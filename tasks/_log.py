"""What reaches the Prefect UI: loggers (plain logging when a stage is called directly) and artifact keys."""

from __future__ import annotations

import logging
import re

from prefect import get_run_logger
from prefect.context import FlowRunContext, TaskRunContext


def stage_logger() -> logging.Logger | logging.LoggerAdapter:
    if TaskRunContext.get() is not None or FlowRunContext.get() is not None:
        return get_run_logger()
    return logging.getLogger("lstmcast")


def artifact_key(pipeline: str, kind: str) -> str:
    """A valid artifact key (lowercase letters, digits, dashes), the same for every run of a pipeline."""
    return re.sub(r"[^a-z0-9-]", "-", f"{pipeline}-{kind}".lower())

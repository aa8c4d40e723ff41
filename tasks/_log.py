"""What reaches the Prefect UI: loggers (plain logging when a stage is called directly) and artifact keys."""

from __future__ import annotations

import logging
import re

from prefect import get_run_logger
from prefect.context import FlowRunContext, TaskRunContext

_warned: set[str] = set()


def stage_logger() -> logging.Logger | logging.LoggerAdapter:
    if TaskRunContext.get() is not None or FlowRunContext.get() is not None:
        return get_run_logger()
    return logging.getLogger("lstmcast")


def warn_once(key: str, message: str, *args: object) -> None:
    """A fallback that keeps the run going (no COPY encoder, no ADBC driver, no hard links) is said once
    per process at WARNING: visible in the run's log without repeating for every file or batch."""
    if key in _warned:
        return
    _warned.add(key)
    stage_logger().warning(message, *args)


def artifact_key(pipeline: str, kind: str) -> str:
    """A valid artifact key (lowercase letters, digits, dashes), the same for every run of a pipeline."""
    return re.sub(r"[^a-z0-9-]", "-", f"{pipeline}-{kind}".lower())

"""Loggers that reach the Prefect UI inside a run and plain logging when a stage is called directly."""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.context import FlowRunContext, TaskRunContext


def stage_logger() -> logging.Logger | logging.LoggerAdapter:
    if TaskRunContext.get() is not None or FlowRunContext.get() is not None:
        return get_run_logger()
    return logging.getLogger("lstmcast")

"""How the CLI ends on a user's mistake: the message, the stage that failed and exit code 2, without the
tracebacks Prefect's console log and typer would print (the Prefect run keeps the full error).

Errors that are the user's are `tasks.errors.UserError`s; every other exception is a bug and keeps its
traceback. `--debug` or LSTMCAST_DEBUG=1 shows the traceback of a user's error too.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console

from tasks.errors import UserError

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.states import State

err_console = Console(stderr=True)

DEBUG_ENV = "LSTMCAST_DEBUG"
USER_ERROR_EXIT = 2  # the code of a run stopped by the user's config, source, data or as-of
TASK_STATE_WAIT = 10.0  # seconds to wait for the failed task run's state to reach the API


class HideUserErrorTraceback(logging.Filter):
    """Drops the traceback from a console log record whose exception is the user's: the message line says
    what to fix. The run loggers' API handler formats the record before it propagates to the console, so
    the Prefect run keeps the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], UserError):
            record.exc_info = None
            record.exc_text = None
        return True


@contextmanager
def console_without_user_tracebacks() -> Iterator[None]:
    """Prefect's console handlers, on whichever loggers carry one, filtered while inside. Prefect sets them
    up when it is imported: before, there are none to filter (and a config check need not wait for it)."""
    prefect_handlers = sys.modules.get("prefect.logging.handlers")
    if prefect_handlers is None:
        yield
        return
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = {
        h
        for lg in loggers
        if isinstance(lg, logging.Logger)
        for h in lg.handlers
        if isinstance(h, prefect_handlers.PrefectConsoleHandler)
    }
    hide = HideUserErrorTraceback()
    for handler in handlers:
        handler.addFilter(hide)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(hide)


class StageFailed(Exception):
    """A user's error with the stage it stopped, known only from the flow run it failed."""

    def __init__(self, stage: str, error: UserError) -> None:
        super().__init__(stage, error)
        self.stage, self.error = stage, error


def stop(stage: str, error: UserError) -> NoReturn:
    err_console.print(
        f"error: {stage} failed: {error}", style="red", markup=False, highlight=False, soft_wrap=True
    )
    err_console.print(f"(run with --debug or {DEBUG_ENV}=1 for the traceback)", markup=False, highlight=False)
    raise typer.Exit(code=USER_ERROR_EXIT)


@contextmanager
def user_errors(debug: bool, stage: str) -> Iterator[None]:
    """A user's error raised inside ends the command with its message and exit code 2, and Prefect's console
    logs leave out its traceback; `stage` says what failed unless the error names its own stage. With
    `debug`, nothing changes: the traceback shows, as for any bug."""
    if debug:
        yield
        return
    with console_without_user_tracebacks():
        try:
            yield
        except StageFailed as failed:
            stop(failed.stage, failed.error)
        except UserError as exc:
            stop(stage, exc)


def failed_task(flow_run_id: UUID) -> str | None:
    """The stage (task name) of the flow run's last failed task run; None when no task failed.

    Task run states reach the API as events, recorded a moment after the flow run returns, so a run that
    shows no failed task is asked again until `TASK_STATE_WAIT` has passed."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import TaskRunSort

    runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    failed = TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.FAILED])))
    deadline = time.monotonic() + TASK_STATE_WAIT
    with get_client(sync_client=True) as client:
        while True:
            found = client.read_task_runs(
                flow_run_filter=runs, task_run_filter=failed, sort=TaskRunSort.END_TIME_DESC, limit=1
            )
            if found:
                # task run names are `<task name>-<key>`, e.g. extract-a1b or backtest_fold-2
                return found[0].name.rsplit("-", 1)[0]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)


def flow_result(flow_name: str, state: State, debug: bool) -> Any:
    """The flow run's result. A user's error that failed it is raised as `StageFailed` with the task that
    failed (or the flow, when no task did), except with `debug`, which raises the error itself."""
    if state.is_failed() and not debug:
        error = state.result(raise_on_failure=False)
        if isinstance(error, UserError):
            task = failed_task(state.state_details.flow_run_id)
            stage = f"stage {task!r}" if task else f"flow {flow_name!r}"
            raise StageFailed(stage, error) from error
    return state.result()

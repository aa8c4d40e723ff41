"""The backfill flow: one nightly forecast per as-of date in a range, a few at a time.

Every date is a `nightly-forecast` subflow run with `full_read=True`, started by a task in a pool of
worker processes (one date at a time runs in this process): each date reads the source in full up to its
own as-of, so dates never share the incremental store or its watermark, and each sees only the rows with
a timestamp <= its as-of. Models trained for a past as-of join the registry without displacing the
champion of a later one (tasks/registry.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor, CancelledError
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import pandas as pd
from prefect import flow, get_client, task
from prefect.futures import PrefectFuture, as_completed
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Failed, State
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from flows.nightly import nightly_flow
from tasks.config import PipelineConfig, load_config
from tasks.parsing import parse_as_of

RUN_ERROR_PREFIX = "Flow run encountered an exception: "  # how Prefect words a flow run's exception

# Called in the flow's thread with each date's outcome as soon as that date finishes (the CLI's progress bar).
_on_date_done: ContextVar[Callable[[dict[str, Any]], None] | None] = ContextVar("on_date_done", default=None)


class BackfillFailed(RuntimeError):
    """Some dates failed; raised only after every date ran. `summary` holds the outcome of each date."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message, summary)  # both in args, so the exception pickles as a Prefect result

    @property
    def summary(self) -> dict[str, Any]:
        return self.args[1]

    def __str__(self) -> str:
        return self.args[0]


def date_reporter() -> Callable[[dict[str, Any]], None] | None:
    # The flow reads the ContextVar through this function: Prefect pickles the flow's code for worker
    # processes, and a ContextVar named in it directly does not pickle.
    return _on_date_done.get()


@contextmanager
def on_date_done(callback: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """Have backfills started inside this block call `callback(outcome)` as each date finishes."""
    token = _on_date_done.set(callback)
    try:
        yield
    finally:
        _on_date_done.reset(token)


def parse_every(every: str) -> pd.offsets.BaseOffset:
    """The step between dates: a pandas offset alias ('1D', '6h', 'MS', 'W') or a duration ('2 days')."""
    # pandas deprecates the lower-case day alias that `Timedelta` and the CLI accept ('1d').
    text = re.sub(r"^(\d*)\s*d$", r"\1D", every.strip())
    try:
        step = pd.tseries.frequencies.to_offset(text)
    except ValueError:
        try:
            step = pd.tseries.frequencies.to_offset(pd.Timedelta(text))
        except ValueError:
            raise ValueError(
                f"every {every!r} is not a pandas offset alias or duration (e.g. '1D', '6h', 'W', 'MS')"
            ) from None
    probe = pd.Timestamp("2000-01-01", tz="UTC")
    if probe + step <= probe:
        raise ValueError(f"every must be a positive step such as '1D' or '6h', got {every!r}")
    return step


def backfill_dates(start: str, end: str, every: str = "1D") -> list[pd.Timestamp]:
    """The as-of dates of a backfill: every point of the `every` grid in [start, end], in UTC."""
    first, last = parse_as_of(start), parse_as_of(end)
    if first > last:
        raise ValueError(f"start {first.isoformat()} is after end {last.isoformat()}")
    dates = list(pd.date_range(first, last, freq=parse_every(every)))
    if not dates:
        raise ValueError(f"no date between start {first.isoformat()} and end {last.isoformat()} is on "
                         f"the every={every!r} grid")  # fmt: skip
    return dates


def check_concurrency(concurrency: int) -> int:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
    return concurrency


def date_runner(concurrency: int, dates: int) -> TaskRunner:
    """Worker processes when dates run side by side, so each training has its own torch state (random
    generator, thread count) and its result does not depend on what ran next to it; one date at a time
    runs in this process, without the start-up cost of a worker."""
    workers = min(concurrency, dates)
    return ThreadPoolTaskRunner(max_workers=1) if workers == 1 else ProcessPoolTaskRunner(max_workers=workers)


@contextmanager
def worker_api() -> Iterator[None]:
    """Point worker processes at this process's Prefect API. Without PREFECT_API_URL that is a temporary
    local server, which a worker would otherwise start again for itself."""
    if PREFECT_API_URL.value():
        yield
        return
    with get_client(sync_client=True) as client:
        url = str(client.api_url).rstrip("/")
    with temporary_settings({PREFECT_API_URL: url}):
        yield


def date_outcome(as_of: str, state: State, seconds: float) -> dict[str, Any]:
    """One date's line of the summary, from its nightly-forecast run's final state."""
    outcome: dict[str, Any] = {
        "as_of": as_of,
        "status": state.name or state.type.value,
        "rows_published": 0,
        "rows_replaced": 0,
        "model_version": None,
        "seconds": round(seconds, 3),
        "flow_run_id": str(state.state_details.flow_run_id),
        "error": None,
    }
    if state.is_completed():
        result = state.result()
        outcome.update({k: result[k] for k in ("rows_published", "rows_replaced", "model_version")})
    else:
        outcome["error"] = (state.message or state.name).removeprefix(RUN_ERROR_PREFIX)
    return outcome


@task(task_run_name="as-of {as_of}")
def forecast_as_of(config_path: str, as_of: str) -> dict[str, Any] | State:
    """Run the nightly flow for one as-of, reading the source in full up to it."""
    # a failed run fails this task too, with the outcome as its data
    started = time.perf_counter()
    state = nightly_flow(load_config(config_path))(config_path, as_of, full_read=True, return_state=True)
    outcome = date_outcome(as_of, state, time.perf_counter() - started)
    if outcome["error"] is not None:
        return Failed(message=f"as_of {as_of}: {outcome['error']}", data=outcome)
    return outcome


def lost_outcome(as_of: str, status: str, error: str) -> dict[str, Any]:
    """A date whose task ended without an outcome: its nightly run never started, or its worker died."""
    return {
        "as_of": as_of, "status": status, "rows_published": 0, "rows_replaced": 0, "model_version": None,
        "seconds": 0.0, "flow_run_id": None, "error": error,
    }  # fmt: skip


def future_outcome(as_of: str, future: PrefectFuture) -> dict[str, Any]:
    """The outcome a finished `forecast_as_of` run returned, or one that says why there is none."""
    try:
        future.wait()
        state = future.state
        result = state.result(raise_on_failure=False)
    except (BrokenExecutor, CancelledError) as exc:  # a worker process died: the whole pool breaks with it
        return lost_outcome(as_of, "Crashed", f"{type(exc).__name__}: {exc}")
    if isinstance(result, dict):
        return result
    return lost_outcome(as_of, state.name or state.type.value, state.message or str(result))


def summarize(
    cfg: PipelineConfig, outcomes: list[dict[str, Any]], seconds: float, **params: Any
) -> dict[str, Any]:
    dates = sorted(outcomes, key=lambda o: o["as_of"])
    failed = [o["as_of"] for o in dates if o["error"] is not None]
    return {
        "pipeline": cfg.name,
        **params,
        "output_table": cfg.output.table,
        "dates": dates,
        "completed": len(dates) - len(failed),
        "failed": failed,
        "rows_published": sum(o["rows_published"] for o in dates),
        "seconds": round(seconds, 3),
    }


def failure_message(summary: dict[str, Any]) -> str:
    errors = {o["as_of"]: o["error"] for o in summary["dates"] if o["error"] is not None}
    listed = "; ".join(f"{as_of}: {error}" for as_of, error in errors.items())
    n, total = len(errors), len(summary["dates"])
    return f"backfill of {summary['pipeline']}: {n} of {total} dates failed: {listed}"


@flow(name="backfill", flow_run_name="backfill-{start}-{end}", log_prints=True)
def backfill_forecasts(
    config_path: str, start: str, end: str, every: str = "1D", concurrency: int = 2
) -> dict[str, Any] | State:
    """Forecast as of every `every` step in [start, end], `concurrency` dates at a time."""
    # fails, after all dates ran, if any date failed
    started = time.perf_counter()
    dates = [d.isoformat() for d in backfill_dates(start, end, every)]
    check_concurrency(concurrency)
    cfg = load_config(config_path)
    print(f"backfill of {cfg.name}: {len(dates)} as-of dates from {dates[0]} to {dates[-1]}, "
          f"{concurrency} at a time")  # fmt: skip
    report = date_reporter()
    outcomes = []
    with worker_api(), date_runner(concurrency, len(dates)) as runner:
        futures = {runner.submit(forecast_as_of, {"config_path": config_path, "as_of": d}): d for d in dates}
        for future in as_completed(list(futures)):
            outcome = future_outcome(futures[future], future)
            outcomes.append(outcome)
            print(f"as_of {outcome['as_of']}: {outcome['status']}, {outcome['rows_published']} rows")
            if report is not None:
                report(outcome)
    summary = summarize(
        cfg, outcomes, time.perf_counter() - started,
        start=dates[0], end=dates[-1], every=every, concurrency=concurrency,
    )  # fmt: skip
    if summary["failed"]:
        # A failed state, not a raise: the run ends Failed without a traceback, and callers of the flow
        # get this exception, with the summary, from its result.
        message = failure_message(summary)
        return Failed(message=message, data=BackfillFailed(message, summary))
    return summary

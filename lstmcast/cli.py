"""Command line: `lstmcast run`, `ingest`, `backfill`, `serve`, `demo`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from lstmcast.demo import DEMO_RUNS, build_demo_db, demo_file
from tasks.errors import UserError

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.states import State

app = typer.Typer(
    help="lstmcast: nightly LSTM forecasts from your SQL database, orchestrated by Prefect.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

DEBUG_ENV = "LSTMCAST_DEBUG"
USER_ERROR_EXIT = 2  # the code of a run stopped by the user's config, source, data or as-of
TASK_STATE_WAIT = 10.0  # seconds to wait for the failed task run's state to reach the API

Debug = Annotated[
    bool,
    typer.Option(
        "--debug",
        envvar=DEBUG_ENV,
        help="Show the traceback of a config, source, data or as-of error too, not only its message.",
    ),
]


class _HideUserErrorTraceback(logging.Filter):
    """Drops the traceback from a console log record whose exception is the user's: the message line says
    what to fix. The run loggers' API handler formats the record before it propagates to the console, so
    the Prefect run keeps the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], UserError):
            record.exc_info = None
            record.exc_text = None
        return True


@contextmanager
def _console_without_user_tracebacks() -> Iterator[None]:
    """Prefect's console handlers, here and in whatever logger carries one, filtered while inside."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = {
        h
        for lg in loggers
        if isinstance(lg, logging.Logger)
        for h in lg.handlers
        if isinstance(h, PrefectConsoleHandler)
    }
    hide = _HideUserErrorTraceback()
    for handler in handlers:
        handler.addFilter(hide)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(hide)


class _StageFailed(Exception):
    """A user's error with the stage it stopped, known only from the flow run it failed."""

    def __init__(self, stage: str, error: UserError) -> None:
        super().__init__(stage, error)
        self.stage, self.error = stage, error


def _stop(stage: str, error: UserError) -> NoReturn:
    err_console.print(
        f"error: {stage} failed: {error}", style="red", markup=False, highlight=False, soft_wrap=True
    )
    err_console.print(f"(run with --debug or {DEBUG_ENV}=1 for the traceback)", markup=False, highlight=False)
    raise typer.Exit(code=USER_ERROR_EXIT)


@contextmanager
def _user_errors(debug: bool, stage: str) -> Iterator[None]:
    """A user's error raised inside ends the command with its message and exit code 2, and Prefect's console
    logs leave out its traceback; `stage` says what failed unless the error names its own stage. With
    `debug`, nothing changes: the traceback shows, as for any bug."""
    if debug:
        yield
        return
    with _console_without_user_tracebacks():
        try:
            yield
        except _StageFailed as failed:
            _stop(failed.stage, failed.error)
        except UserError as exc:
            _stop(stage, exc)


def _failed_task(flow_run_id: UUID) -> str | None:
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


def _flow_result(flow_name: str, state: State, debug: bool) -> Any:
    """The flow run's result. A user's error that failed it is raised as `_StageFailed` with the task that
    failed (or the flow, when no task did), except with `debug`, which raises the error itself."""
    if state.is_failed() and not debug:
        error = state.result(raise_on_failure=False)
        if isinstance(error, UserError):
            task = _failed_task(state.state_details.flow_run_id)
            stage = f"stage {task!r}" if task else f"flow {flow_name!r}"
            raise _StageFailed(stage, error) from error
    return state.result()


def _print_summary(result: dict[str, Any]) -> None:
    table = Table(
        title=f"{result['pipeline']}: backtest, mean over series and folds (as_of {result['as_of']})"
    )
    interval = result["interval"]
    coverage = f"{interval:.0%} interval coverage" if interval else "interval coverage"
    for col in ("model", "MAE", "RMSE", "sMAPE %", "MASE", coverage):
        table.add_column(col, justify="left" if col == "model" else "right")
    for model, m in result["backtest"].items():
        table.add_row(model, *(f"{m[k]:.4f}" for k in ("mae", "rmse", "smape", "mase", "coverage")))
    console.print(table)
    console.print(f"gate: {result['gate']}")
    console.print(f"reproducible: {result['reproducible']}")
    console.print(
        f"published {result['rows_published']} rows ({result['series_forecast']} series, "
        f"{result['series_skipped']} skipped) to '{result['output_table']}' "
        f"as model {result['model_version']}; "
        f"stage seconds: {result['timings']}"
    )


@app.command()
def run(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Pipeline TOML file.", exists=True, dir_okay=False)
    ],
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Forecast from this timestamp (default: the source's last one)."),
    ] = None,
    debug: Debug = False,
) -> None:
    """Run the nightly forecast flow once for one pipeline config."""
    from flows.nightly import nightly_flow, nightly_forecast
    from tasks.config import load_config

    with _user_errors(debug, "stage 'config'"):
        flow = nightly_flow(load_config(config))
        state = flow(str(config), as_of, return_state=True)
        _print_summary(_flow_result(nightly_forecast.name, state, debug))


@app.command()
def ingest(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Pipeline TOML file.", exists=True, dir_okay=False)
    ],
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Extract rows known at this timestamp (default: the source's last one)."
        ),
    ] = None,
    debug: Debug = False,
) -> None:
    """Run only the extract stage (incremental when the config says so) and print its throughput."""
    # The task function, not a flow: no Prefect server is started, so the seconds printed are the extract's.
    from tasks.config import load_config
    from tasks.extract import last_timestamp, run_extract
    from tasks.parsing import parse_as_of

    with _user_errors(debug, "stage 'config'"):
        cfg = load_config(config)
    with _user_errors(debug, "stage 'extract'"):
        when = parse_as_of(as_of) if as_of is not None else last_timestamp(cfg.source.url, cfg.source)
        result = run_extract(cfg, when)
    rate = result.rows_read / result.seconds if result.seconds > 0 else 0.0
    console.print(
        f"ingested {cfg.name} as of {result.as_of} ({result.mode}): {result.rows:,} rows "
        f"(+{result.future_rows:,} future), {result.series:,} series; read {result.rows_read:,} rows in "
        f"{result.seconds:.2f} s ({rate:,.0f} rows/s); watermark {result.watermark}; {result.path}",
        soft_wrap=True,
    )


def _print_backfill(summary: dict[str, Any]) -> None:
    import pandas as pd
    from rich.markup import escape

    span = f"{summary['start']} .. {summary['end']} every {summary['every']}"
    table = Table(title=f"{summary['pipeline']}: backfill {span}")
    for col in ("as_of (UTC)", "status", "rows", "model", "seconds"):
        table.add_column(col, justify="right" if col in ("rows", "seconds") else "left", no_wrap=True)
    for d in summary["dates"]:
        table.add_row(
            f"{pd.Timestamp(d['as_of']):%Y-%m-%d %H:%M}", escape(d["status"]), f"{d['rows_published']:,}",
            d["model_version"] or "-", f"{d['seconds']:.1f}", style=None if d["error"] is None else "red",
        )  # fmt: skip
    console.print(table)
    for d in summary["dates"]:
        if d["error"] is not None:
            console.print(f"{d['as_of']}: {d['error']}", style="red", markup=False, soft_wrap=True)
    n, failed = len(summary["dates"]), len(summary["failed"])
    console.print(
        f"{summary['completed']} of {n} dates completed ({failed} failed), "
        f"{summary['rows_published']:,} rows published to '{summary['output_table']}' "
        f"in {summary['seconds']:.0f} s",
        soft_wrap=True,
    )


@app.command()
def backfill(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Pipeline TOML file.", exists=True, dir_okay=False)
    ],
    start: Annotated[str, typer.Option("--start", help="First as-of (e.g. 2024-01-01 or 2024-01-01T06:00).")],
    end: Annotated[str, typer.Option("--end", help="Last as-of, included.")],
    every: Annotated[
        str, typer.Option("--every", help="Step between as-ofs: a duration or offset alias (1d, 6h, W, MS).")
    ] = "1d",
    concurrency: Annotated[
        int, typer.Option("--concurrency", help="As-ofs forecast at once, each in its own worker process.")
    ] = 2,
    debug: Debug = False,
) -> None:
    """Forecast as of every step in [start, end]: one nightly run per as-of, seeing only rows up to it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flows.backfill import (
        BackfillFailed,
        backfill_dates,
        backfill_forecasts,
        check_concurrency,
        on_date_done,
    )
    from tasks.config import load_config

    try:
        total = len(backfill_dates(start, end, every))
        check_concurrency(concurrency)
    except ValueError as exc:
        console.print(f"invalid backfill: {exc}", style="red", markup=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    with _user_errors(debug, "stage 'config'"):
        load_config(config)  # before the progress bar, so that a config error stops the command at once
    failure: BackfillFailed | None = None
    columns = (TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, TextColumn("{task.description}"), console=console) as progress:
        bar = progress.add_task("", total=total)

        def date_done(outcome: dict[str, Any]) -> None:
            progress.update(bar, advance=1, description=f"{outcome['as_of']}: {outcome['status']}")

        with on_date_done(date_done), _user_errors(debug, f"flow {backfill_forecasts.name!r}"):
            try:
                summary = backfill_forecasts(str(config), start, end, every, concurrency)
            except BackfillFailed as exc:
                failure, summary = exc, exc.summary
    _print_backfill(summary)
    if failure is not None:
        raise typer.Exit(code=1)


def _check_output(url: str, table: str, pipeline: str, as_of: str) -> tuple[int, int]:
    """Rows and NaN forecasts for one as-of, read back from the output database."""
    from tasks.parsing import utc
    from tasks.schemas import forecast_table

    t = forecast_table(table, sa.MetaData())
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows, nan = conn.execute(
                sa.select(sa.func.count(), sa.func.count().filter(t.c.yhat.is_(None))).where(
                    t.c.pipeline == pipeline, t.c.as_of == utc(as_of)
                )
            ).one()
    finally:
        engine.dispose()
    return int(rows), int(nan)


@app.command()
def serve(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Pipeline TOML file.", exists=True, dir_okay=False)
    ],
    cron: Annotated[
        str | None,
        typer.Option(help="When the nightly run starts, in --timezone (default: 30 2 * * *, i.e. 02:30)."),
    ] = None,
    timezone: Annotated[
        str, typer.Option(help="IANA time zone of the cron schedule, e.g. Europe/Rome.")
    ] = "UTC",
    limit: Annotated[
        int | None, typer.Option(help="At most this many flow runs at once (default: no limit).")
    ] = None,
) -> None:
    """Serve the nightly (scheduled) and backfill (on demand) deployments of one config until stopped."""
    from prefect import serve as serve_deployments

    from deployments.nightly import NIGHTLY_CRON
    from deployments.serve import pipeline_deployments

    # Absolute, so that runs find the config whatever the working directory of the process serving them.
    deployments = pipeline_deployments(str(config.resolve()), cron or NIGHTLY_CRON, timezone)
    serve_deployments(*deployments, limit=limit)


@app.command()
def demo(
    db_url: Annotated[str, typer.Option(help="Where to build the demo database.")] = "sqlite:///data/demo.db",
    debug: Debug = False,
) -> None:
    """Load real sensor (ETTh1) and sales (pasta) data into SQLite, then forecast both."""
    import os

    from flows.nightly import nightly_forecast
    from tasks.config import load_config

    started = time.perf_counter()
    with console.status("building the demo database from the shipped ETTh1 and pasta_sales files"):
        counts = build_demo_db(db_url)
    console.print(f"demo database {db_url}: " + ", ".join(f"{t} {n:,} rows" for t, n in counts.items()))
    os.environ.setdefault("LSTMCAST_SOURCE_URL", db_url)
    os.environ.setdefault("LSTMCAST_OUTPUT_URL", db_url)
    for name, as_of in DEMO_RUNS:
        path = demo_file(name)
        console.rule(f"pipeline {path.stem} ({path})")
        with _user_errors(debug, "stage 'config'"):
            cfg = load_config(path)
            state = nightly_forecast(str(path), as_of, return_state=True)
            result = _flow_result(nightly_forecast.name, state, debug)
        _print_summary(result)
        rows, nan = _check_output(cfg.output.url, cfg.output.table, cfg.name, result["as_of"])
        expected = result["series_forecast"] * cfg.forecast.horizon
        console.print(
            f"check: {rows} forecast rows in '{cfg.output.table}' = {result['series_forecast']} series x "
            f"horizon {cfg.forecast.horizon} = {expected}: {'ok' if rows == expected else 'MISMATCH'}; "
            f"NaN forecasts: {nan}"
        )
        if rows != expected or nan:
            raise typer.Exit(code=1)
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    app()

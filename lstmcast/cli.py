"""Command line: `lstmcast run`, `ingest`, `backfill`, `prune`, `export`, `serve`, `demo`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from lstmcast.demo import DEMO_RUNS, build_demo_db, demo_file
from lstmcast.failures import DEBUG_ENV, flow_result, user_errors

app = typer.Typer(
    help="lstmcast: nightly LSTM forecasts from your SQL database, orchestrated by Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # a bug's traceback must not print the config's database URLs
)
console = Console()

Debug = Annotated[
    bool,
    typer.Option(
        "--debug",
        envvar=DEBUG_ENV,
        help="Show the traceback of a config, source, data or as-of error too, not only its message.",
    ),
]


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
    from tasks.config import load_config
    from tasks.parsing import parse_as_of

    # Checked before the flow's imports take their seconds; the as-of also before a run is named after it.
    if as_of is not None:
        with user_errors(debug, "stage 'resolve_as_of'"):
            parse_as_of(as_of)
    with user_errors(debug, "stage 'config'"):
        cfg = load_config(config)

    from flows.nightly import nightly_flow, nightly_forecast

    with user_errors(debug, f"flow {nightly_forecast.name!r}"):
        state = nightly_flow(cfg)(str(config), as_of, return_state=True)
        _print_summary(flow_result(nightly_forecast.name, state, debug))


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
    from tasks.parsing import parse_as_of

    with user_errors(debug, "stage 'config'"):
        cfg = load_config(config)

    from tasks.extract import last_timestamp, run_extract

    with user_errors(debug, "stage 'extract'"):
        when = parse_as_of(as_of) if as_of is not None else last_timestamp(cfg.source.url, cfg.source)
        result = run_extract(cfg, when)
    rate = result.rows_read / result.seconds if result.seconds > 0 else 0.0
    console.print(
        f"ingested {cfg.name} as of {result.as_of} ({result.mode}): {result.rows:,} rows "
        f"(+{result.future_rows:,} future), {result.series:,} series; read {result.rows_read:,} rows in "
        f"{result.seconds:.2f} s ({rate:,.0f} rows/s); watermark {result.watermark}; {result.path}",
        soft_wrap=True,
    )


@app.command()
def prune(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Pipeline TOML file.", exists=True, dir_okay=False)
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Change nothing; list what would go.")] = False,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Measure retention.keep from this as-of (default: the newest run's)."),
    ] = None,
    debug: Debug = False,
) -> None:
    """Remove forecasts, runs, run folders and old checkpoints older than the config's retention.keep."""
    from tasks.config import load_config
    from tasks.parsing import parse_as_of

    with user_errors(debug, "stage 'config'"):
        cfg = load_config(config)

    from tasks.prune import run_prune

    with user_errors(debug, "stage 'prune'"):
        result = run_prune(cfg, parse_as_of(as_of).isoformat() if as_of is not None else None, dry_run)
    for line in result.lines():
        console.print(line, markup=False, highlight=False, soft_wrap=True)


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
    with user_errors(debug, "stage 'config'"):
        load_config(config)  # before the progress bar, so that a config error stops the command at once
    failure: BackfillFailed | None = None
    columns = (TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, TextColumn("{task.description}"), console=console) as progress:
        bar = progress.add_task("", total=total)

        def date_done(outcome: dict[str, Any]) -> None:
            progress.update(bar, advance=1, description=f"{outcome['as_of']}: {outcome['status']}")

        with on_date_done(date_done), user_errors(debug, f"flow {backfill_forecasts.name!r}"):
            try:
                summary = backfill_forecasts(str(config), start, end, every, concurrency)
            except BackfillFailed as exc:
                failure, summary = exc, exc.summary
    _print_backfill(summary)
    if failure is not None:
        raise typer.Exit(code=1)


@app.command()
def export(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Pipeline TOML file.", exists=True, dir_okay=False)
    ],
    onnx: Annotated[Path, typer.Option("--onnx", help="Where to write the ONNX file.", dir_okay=False)],
    version: Annotated[
        str | None, typer.Option("--version", help="Model version (default: the pipeline's champion).")
    ] = None,
    debug: Debug = False,
) -> None:
    """Export a registered model to ONNX, with its inputs, settings and scaler statistics as metadata."""
    from lstm_model.onnx_export import MissingOnnx, require_onnx
    from lstmcast.failures import USER_ERROR_EXIT, err_console
    from tasks.config import load_config

    try:
        require_onnx()  # before the config and the registry: the first thing to fix
    except MissingOnnx as exc:
        err_console.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=USER_ERROR_EXIT) from None
    with user_errors(debug, "stage 'config'"):
        cfg = load_config(config)

    from tasks.export import run_export

    with user_errors(debug, "export"):
        exported = run_export(cfg, onnx, version)
    model = exported.model
    console.print(
        f"exported {exported.pipeline} model {model.version} ({model.status}, as of {model.as_of}) "
        f"to {exported.path}",
        soft_wrap=True,
    )


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


alerts_app = typer.Typer(help="Prefect automations that notify about the nightly runs.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("create")
def alerts_create(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Pipeline TOML file.", exists=True, dir_okay=False)
    ],
    debug: Debug = False,
) -> None:
    """Create (or replace) the pipeline's automations: a run that ends Failed, Crashed, GateFailed or
    CompletedWithFallback, and no completed run `alerts.deadline` after one was due, notify `alerts.block`."""
    from tasks.config import load_config

    with user_errors(debug, "stage 'config'"):
        cfg = load_config(config)

    from deployments.alerts import automation_names, create_alerts

    with user_errors(debug, "alerts"):
        create_alerts(cfg)
    for name in automation_names(cfg.name):
        console.print(f"automation '{name}' -> block '{cfg.alerts.block}'", markup=False, soft_wrap=True)


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
        with user_errors(debug, "stage 'config'"):
            cfg = load_config(path)
            state = nightly_forecast(str(path), as_of, return_state=True)
            result = flow_result(nightly_forecast.name, state, debug)
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

"""The nightly forecast flow.

extract -> clean -> backtest folds -> gate -> plan training -> train + register (or reuse the champion)
-> forecast groups -> publish -> score earlier forecasts -> report.

The stages after extract are cached on their inputs (tasks/cache.py), so re-running a failed run with
the same as-of resumes where it stopped. Backtest folds and forecast groups are separate tasks: on a
Dask task runner (flows/runners.py) they run in parallel across the cluster.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from prefect import flow, get_client, get_run_logger
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runners import nightly_flow
from tasks.cache import cached
from tasks.clean import clean
from tasks.config import PipelineConfig, load_config
from tasks.extract import extract, resolve_as_of
from tasks.forecast import forecast_group, merge_forecasts, series_groups
from tasks.publish import build_run_record, publish
from tasks.registry import REUSE, WARM_START, Selection, plan_training, register, reuse_champion
from tasks.report import report
from tasks.score import score
from tasks.train import TrainOutput, reproducibility, train
from tasks.validate import GateFailed, backtest_fold, folds, gate, summarize_backtest

GATE_FAILED = "GateFailed"  # final state name of a run whose LSTM lost the backtest with gate = "fail"
FALLBACK = "CompletedWithFallback"  # final state name of a run that published a baseline instead


def name_run_after(as_of: str) -> None:
    """A run that found its as-of in the data is named after it, like one that was given it."""
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, name=f"nightly-{pd.Timestamp(as_of):%Y-%m-%d}")


def nightly_run_name() -> str:
    """`nightly-<as-of date>`; until the as-of is known (the latest data), the scheduled date."""
    as_of = flow_run.parameters.get("as_of")
    day = pd.Timestamp(as_of) if as_of else pd.Timestamp(flow_run.scheduled_start_time or datetime.now(UTC))
    return f"nightly-{day:%Y-%m-%d}"


@flow(
    name="nightly-forecast",
    log_prints=True,
    flow_run_name=nightly_run_name,
    # one fold or group at a time here: each already uses every core; flows/runners.py swaps in Dask
    task_runner=ThreadPoolTaskRunner(max_workers=1),
)
def nightly_forecast(config_path: str, as_of: str | None = None, full_read: bool = False) -> Any:
    """Forecast every series `horizon` steps past `as_of` (default: the source's last timestamp).

    `full_read` reads the source in full up to as-of instead of through the incremental store (backfills).
    """
    started_at = datetime.now(UTC).isoformat()
    cfg = load_config(config_path)
    if cfg.scale.runner == "dask" and not uses_dask():
        # a deployment loads this flow with its default runner: run the pipeline again as a subflow on Dask
        return relay(nightly_flow(cfg)(config_path, as_of, full_read, return_state=True))
    if full_read:
        cfg = cfg.model_copy(update={"source": cfg.source.model_copy(update={"incremental": False})})
    as_of_iso = resolve_as_of(cfg, as_of)
    if as_of is None:
        name_run_after(as_of_iso)
    extracted = extract(cfg, as_of_iso)
    cleaned = cached(clean)(cfg, extracted.path, as_of_iso)
    history = cleaned.history_path

    t_backtest = time.perf_counter()
    fold_runs = [cached(backtest_fold).submit(cfg, history, f) for f in folds(cfg, history)]
    backtest = summarize_backtest(
        cfg, history, [f.result() for f in fold_runs], time.perf_counter() - t_backtest
    )
    decision = gate(cfg, backtest.summary)
    if decision.fail:
        return Failed(name=GATE_FAILED, message=decision.message, data=GateFailed(decision.message))

    stages: dict[str, Any] = {"extract": extracted, "clean": cleaned, "validate": backtest}
    checkpoint, model_version, training = None, decision.baseline, None
    run_id = str(flow_run.id)
    fallback = None if decision.use_lstm else decision.message
    if decision.use_lstm:
        model = choose_model(cfg, history, as_of_iso, run_id, backtest.summary, decision.baseline)
        training, fallback = model.training, model.fallback
        if model.trained is not None:
            stages["train"] = model.trained
        if model.selection is not None:
            checkpoint, model_version = model.selection.checkpoint_path, model.selection.version

    t_forecast = time.perf_counter()
    groups = series_groups(history, cfg.scale.forecast_groups)
    parts = [
        cached(forecast_group).submit(cfg, checkpoint, history, cleaned.future_path, i, g, decision.baseline)
        for i, g in enumerate(groups)
    ]
    forecasts = stages["forecast"] = merge_forecasts(
        cfg, history, [p.result() for p in parts], time.perf_counter() - t_forecast
    )
    stopped = stages["train"].stopped_reason if "train" in stages else None
    reproducible = reproducibility(backtest.time_capped_folds, stopped)
    run = build_run_record(
        cfg,
        run_id=run_id,
        as_of=as_of_iso,
        started_at=started_at,
        model_version=model_version,
        metrics={
            "backtest": backtest.summary,
            "folds": backtest.folds,
            "gate": decision.message,
            "training": training,
            "fallback": fallback,
            "interval": forecasts.interval,
            "reproducible": reproducible,
        },
        timings=run_timings(stages),
        counts={name: dataclasses.asdict(result) for name, result in stages.items()},
    )
    published = publish(cfg, forecasts.path, run, cleaned.quality_path)
    scored = score(cfg, history)
    summary = {
        "pipeline": cfg.name,
        "run_id": run.run_id,
        "as_of": as_of_iso,
        "model_version": model_version,
        "gate": decision.message,
        "training": training,
        "fallback": fallback,
        "reproducible": reproducible,
        "interval": forecasts.interval,
        "backtest": backtest.summary,
        "series_forecast": forecasts.series,
        "series_skipped": cleaned.series_skipped,
        "rows_published": published.rows,
        "rows_replaced": published.replaced,
        "output_table": cfg.output.table,
        "quality_rows": published.quality_rows,
        "accuracy_scored": scored.scored,
        "timings": {**run_timings(stages), "publish": published.seconds, "score": scored.seconds},
    }
    report(cfg, summary, backtest.path, cleaned.quality_path, history, forecasts.path)
    if fallback is not None:
        return Completed(name=FALLBACK, message=fallback, data=summary)
    return summary


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    selection: Selection | None  # None: training failed and the config says to fall back
    trained: TrainOutput | None
    training: dict[str, str]
    fallback: str | None


def choose_model(
    cfg: PipelineConfig, history: str, as_of: str, run_id: str, backtest: dict[str, dict[str, float]],
    baseline: str,
) -> ModelChoice:  # fmt: skip
    """Plan from the registry, then reuse the champion or train a challenger and let it challenge."""
    plan = plan_training(cfg, history, as_of)
    training = {"plan": plan.action, "reason": plan.reason}
    if plan.action == REUSE:
        selection = reuse_champion(plan)
        return ModelChoice(selection, None, training | {"selection": selection.message}, None)
    parent = plan.champion if plan.action == WARM_START else None
    attempt = cached(train)(
        cfg, history, parent.checkpoint_path if parent else None, parent.version if parent else None,
        return_state=True,
    )  # fmt: skip
    if attempt.is_failed():
        failure = attempt.result(raise_on_failure=False)
        if not (isinstance(failure, FloatingPointError) and cfg.training.on_failure == "fallback"):
            raise failure
        fallback = (
            f"training failed ({failure}); training.on_failure = 'fallback': "
            f"publishing the {baseline} forecast"
        )
        get_run_logger().error(fallback)
        return ModelChoice(None, None, training, fallback)
    trained = attempt.result()
    selection = register(cfg, trained, plan, history, as_of, run_id, backtest)
    return ModelChoice(selection, trained, training | {"selection": selection.message}, None)


def relay(state: State) -> State:
    """The subflow's outcome as this flow's final state, named as the subflow named it."""
    data = state.result(raise_on_failure=False)
    if state.is_completed():
        return Completed(name=state.name, message=state.message, data=data)
    return Failed(name=state.name, message=state.message, data=data)


def uses_dask() -> bool:
    runner = FlowRunContext.get().task_runner
    return type(runner).__name__ == "DaskTaskRunner"


def run_timings(stages: dict[str, Any]) -> dict[str, float]:
    return {name: result.seconds for name, result in stages.items()}

"""The nightly forecast flow.

extract -> clean -> leakage guard -> backtest folds -> gate -> plan training -> train + register (or reuse
the champion) -> forecast groups -> publish -> score earlier forecasts -> report -> prune (retention).

The stages after extract are cached on their inputs (tasks/cache.py), so re-running a failed run with
the same as-of resumes where it stopped. Backtest folds and forecast groups are separate tasks: on a
Dask task runner (flows/runners.py) they run in parallel across the cluster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from prefect import flow, get_client, get_run_logger
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runners import task_runner
from tasks.cache import cached
from tasks.clean import CleanResult, clean
from tasks.config import PipelineConfig, load_config
from tasks.errors import AsOfError
from tasks.extract import extract, resolve_as_of
from tasks.forecast import ForecastResult, forecast_group, merge_forecasts, series_groups
from tasks.parsing import parse_as_of
from tasks.prune import prune
from tasks.publish import publish
from tasks.registry import REUSE, WARM_START, Selection, plan_training, register, reuse_champion
from tasks.report import report
from tasks.score import score
from tasks.summary import RunOutcome, run_record, run_summary
from tasks.train import TrainOutput, fallback_message, reproducibility, train
from tasks.validate import (
    GateDecision,
    GateFailed,
    ValidateResult,
    backtest_fold,
    gate,
    guard_covariates,
    plan_folds,
    summarize_backtest,
)

GATE_FAILED = "GateFailed"  # final state name of a run whose LSTM lost the backtest with gate = "fail"
FALLBACK = "CompletedWithFallback"  # final state name of a run that published a baseline instead


def name_run_after(as_of: str) -> None:
    """A run that found its as-of in the data is named after it, like one that was given it."""
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, name=f"nightly-{pd.Timestamp(as_of):%Y-%m-%d}")


def nightly_run_name() -> str:
    """`nightly-<as-of date>`; until the as-of is known (the latest data), the scheduled date."""
    as_of = flow_run.parameters.get("as_of")
    try:
        day = (
            parse_as_of(as_of) if as_of else pd.Timestamp(flow_run.scheduled_start_time or datetime.now(UTC))
        )
    except AsOfError:  # not a timestamp: the run is named by its date and fails in resolve_as_of, saying so
        day = pd.Timestamp(flow_run.scheduled_start_time or datetime.now(UTC))
    return f"nightly-{day:%Y-%m-%d}"


@flow(
    name="nightly-forecast",
    log_prints=True,
    flow_run_name=nightly_run_name,
    # one fold or group at a time here: each already uses every core; flows/runners.py swaps in Dask
    task_runner=ThreadPoolTaskRunner(max_workers=1),
)
def nightly_forecast(config_path: str, as_of: str | None = None, full_read: bool = False) -> Any:
    """Forecast every series `horizon` steps past `as_of` (default: the source's last timestamp)."""
    # `full_read` reads the source in full up to as-of instead of through the incremental store (backfills)
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
    cleaned = cached(clean)(cfg, extracted.path, as_of_iso, extracted.events_path)
    guard_covariates(cfg, cleaned.history_path)
    backtest = run_backtest(cfg, cleaned.history_path)
    decision = gate(cfg, backtest.summary)
    if decision.fail:
        return Failed(name=GATE_FAILED, message=decision.message, data=GateFailed(decision.message))
    model = choose_model(cfg, cleaned.history_path, as_of_iso, backtest, decision)
    forecasts = run_forecasts(cfg, model.checkpoint, cleaned, decision.baseline)
    stages = {"extract": extracted, "clean": cleaned, "validate": backtest, "train": model.trained}
    stages = {name: result for name, result in stages.items() if result is not None} | {"forecast": forecasts}
    outcome = RunOutcome(
        run_id=str(flow_run.id), as_of=as_of_iso, started_at=started_at, model_version=model.version,
        gate=decision.message, training=model.training, fallback=model.fallback,
        reproducible=reproducibility(backtest.time_capped_folds, model.stopped_reason),
        interval=forecasts.interval, backtest=backtest.summary, folds=backtest.folds,
        stages=stages,
    )  # fmt: skip
    published = publish(cfg, forecasts.path, run_record(cfg, outcome), cleaned.quality_path)
    scored = score(cfg, cleaned.history_path)
    summary = run_summary(cfg, outcome, published, scored)
    report(cfg, summary, backtest.path, cleaned.quality_path, cleaned.history_path, forecasts.path)
    prune(cfg, as_of_iso)  # last: retention.keep measured from this run's as-of; off without it
    if outcome.fallback is not None:
        return Completed(name=FALLBACK, message=outcome.fallback, data=summary)
    return summary


def nightly_flow(cfg: PipelineConfig) -> Any:
    """`nightly_forecast` with the config's task runner (a deployment, which loads the flow with its
    default runner, gets there through a subflow)."""
    return nightly_forecast.with_options(task_runner=task_runner(cfg))


def run_backtest(cfg: PipelineConfig, history: str) -> ValidateResult:
    """Every fold as its own task (in parallel on Dask), then their summary."""
    started = time.perf_counter()
    runs = [cached(backtest_fold).submit(cfg, history, f) for f in plan_folds(cfg, history)]
    return summarize_backtest(cfg, history, [r.result() for r in runs], time.perf_counter() - started)


def run_forecasts(
    cfg: PipelineConfig, checkpoint: str | None, cleaned: CleanResult, baseline: str
) -> ForecastResult:
    """Every group of series as its own task (in parallel on Dask), then one forecast file."""
    started, history = time.perf_counter(), cleaned.history_path
    parts = [
        cached(forecast_group).submit(cfg, checkpoint, history, cleaned.future_path, i, group, baseline)
        for i, group in enumerate(series_groups(history, cfg.scale.forecast_groups))
    ]
    return merge_forecasts(cfg, history, [p.result() for p in parts], time.perf_counter() - started)


@dataclass(frozen=True)
class ModelChoice:
    """What forecasts this run: a checkpoint (None: the best baseline), and how it was chosen."""

    checkpoint: str | None
    version: str  # the model version, or the baseline's name
    trained: TrainOutput | None
    training: dict[str, str] | None
    fallback: str | None

    @property
    def stopped_reason(self) -> str | None:
        return self.trained.stopped_reason if self.trained is not None else None


def choose_model(
    cfg: PipelineConfig, history: str, as_of: str, backtest: ValidateResult, decision: GateDecision
) -> ModelChoice:
    """The gate's baseline, or (when the LSTM passed) the registry's plan: reuse the champion, or train a
    challenger and let it challenge; a failed training falls back when the config says so."""
    baseline = decision.baseline
    if not decision.use_lstm:
        return ModelChoice(None, baseline, None, None, decision.message)
    plan = plan_training(cfg, history, as_of)
    training = {"plan": plan.action, "reason": plan.reason}
    if plan.action == REUSE:
        selection = reuse_champion(plan)
        return chosen(selection, None, training)
    parent = plan.champion if plan.action == WARM_START else None
    attempt = cached(train)(
        cfg, history, parent.checkpoint_path if parent else None, parent.version if parent else None,
        return_state=True,
    )  # fmt: skip
    if attempt.is_failed():
        failure = attempt.result(raise_on_failure=False)
        fallback = fallback_message(cfg, failure, baseline)
        if fallback is None:
            raise failure
        get_run_logger().error(fallback)
        return ModelChoice(None, baseline, None, training, fallback)
    trained = attempt.result()
    selection = register(cfg, trained, plan, history, as_of, str(flow_run.id), backtest.summary)
    return chosen(selection, trained, training)


def chosen(selection: Selection, trained: TrainOutput | None, training: dict[str, str]) -> ModelChoice:
    return ModelChoice(
        selection.checkpoint_path,
        selection.version,
        trained,
        training | {"selection": selection.message},
        None,
    )


def relay(state: State) -> State:
    """The subflow's outcome as this flow's final state, named as the subflow named it."""
    data = state.result(raise_on_failure=False)
    if state.is_completed():
        return Completed(name=state.name, message=state.message, data=data)
    return Failed(name=state.name, message=state.message, data=data)


def uses_dask() -> bool:
    runner = FlowRunContext.get().task_runner
    return type(runner).__name__ == "DaskTaskRunner"

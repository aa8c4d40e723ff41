"""Model registry in SQL: every trained model is a version row; one champion per pipeline forecasts.

Each run plans its training from the registry (retrain, fine-tune the champion, or reuse it, by the
config's policy); a newly trained model is a challenger that replaces the champion only if it scores a
lower MASE on the same holdout (the last `horizon` steps of every series, which neither model fitted
when the champion is older than the data). Forecasts name the version that made them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from prefect import task

from lstm_model.backtest import holdout_mase
from lstm_model.checkpoint import load_checkpoint
from lstm_model.panel import Panel
from lstm_model.train import TrainResult, warm_start_problem
from tasks._log import stage_logger
from tasks.config import PipelineConfig
from tasks.db import add_columns, advisory_xact_lock, create_engine, missing_columns
from tasks.panel import load_panel
from tasks.parsing import parse_as_of
from tasks.retry import DB_RETRIES
from tasks.schemas import models_table, runs_table

RETRAIN, WARM_START, REUSE = "retrain", "warm_start", "reuse"
CHAMPION, RETIRED, REJECTED = "champion", "retired", "rejected"


@dataclass(frozen=True)
class ModelVersion:
    version: str
    as_of: str  # the as-of of the run that trained it: the newest data it saw
    kind: str  # "trained" (from scratch) | "warm_start"
    parent_version: str | None
    checkpoint_path: str
    config_hash: str
    holdout_mase: float | None
    status: str


@dataclass(frozen=True)
class TrainingPlan:
    action: str  # retrain | warm_start | reuse
    reason: str
    champion: ModelVersion | None


@dataclass(frozen=True)
class Selection:
    """The model that forecasts this run, and why."""

    version: str
    checkpoint_path: str
    promoted: bool
    message: str
    challenger_mase: float | None = None
    champion_mase: float | None = None


def config_hash(cfg: PipelineConfig) -> str:
    """What a checkpoint depends on: model, training and window settings, inputs and frequency."""
    parts = {
        "model": cfg.model_config_for_lstm().to_dict(),
        "training": cfg.train_config().to_dict(),
        "covariates": [cfg.source.covariates, cfg.source.future_covariates, cfg.data.calendar],
        "freq": cfg.data.freq,
    }
    known = {"holidays": cfg.data.holidays, "events": cfg.source.events_table}
    parts |= {name: value for name, value in known.items() if value}  # absent when unset: older hashes hold
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _version(row: Any) -> ModelVersion:
    return ModelVersion(
        version=row.version,
        as_of=parse_as_of(row.as_of).isoformat(),
        kind=row.kind,
        parent_version=row.parent_version,
        checkpoint_path=row.checkpoint_path,
        config_hash=row.config_hash,
        holdout_mase=row.holdout_mase,
        status=row.status,
    )


# Columns added since the registry table was first released: a table without them gets them (NULL in
# older rows: "not recorded then").
ADDED_COLUMNS = frozenset({"stopped_reason"})


def add_missing_columns(conn: sa.Connection, table: sa.Table) -> None:
    """Bring a registry table made by an older release up to date; any other missing column is an error
    that names the table and the columns."""
    missing = missing_columns(conn, table)
    unknown = [c for c in missing if c not in ADDED_COLUMNS]
    if unknown:
        raise LookupError(f"registry table {table.fullname!r} exists but lacks columns {unknown}")
    add_columns(conn, table, missing)


def lock_pipeline(conn: sa.Connection, table: sa.Table, pipeline: str) -> None:
    """Promotions of one pipeline take turns (tasks.db.advisory_xact_lock), so two runs finishing at once
    never leave two champions."""
    advisory_xact_lock(conn, table.fullname, pipeline)


def _has_table(conn: sa.Connection, table: sa.Table) -> bool:
    return sa.inspect(conn).has_table(table.name, schema=table.schema)


def champion_before(
    conn: sa.Connection, table: sa.Table, pipeline: str, as_of: datetime
) -> ModelVersion | None:
    """The champion as a run for `as_of` sees it: of the versions trained for an earlier as-of and ever
    promoted, the one with the latest as-of. A re-run of the same as-of plans exactly as the first attempt
    did, and a backfill of a past date meets the champion of that time."""
    if not _has_table(conn, table):
        return None
    # Only the columns ModelVersion reads: a table made by an older release may lack newer ones.
    columns = [table.c[f.name] for f in dataclasses.fields(ModelVersion)]
    row = conn.execute(
        sa.select(*columns)
        .where(table.c.pipeline == pipeline, table.c.as_of < as_of, table.c.promoted_at.is_not(None))
        .order_by(table.c.as_of.desc(), table.c.promoted_at.desc(), table.c.created_at.desc())
        .limit(1)
    ).first()
    return _version(row) if row is not None else None


def runs_since_full_training(
    conn: sa.Connection, models: sa.Table, runs_name: str, pipeline: str, as_of: datetime
) -> int:
    """Published runs after the last from-scratch training (for an earlier as-of) and before `as_of`."""
    last = conn.execute(
        sa.select(sa.func.max(models.c.as_of)).where(
            models.c.pipeline == pipeline, models.c.kind == "trained", models.c.as_of < as_of,
            models.c.promoted_at.is_not(None),
        )
    ).scalar_one()  # fmt: skip
    if last is None:
        return 0
    runs = runs_table(runs_name, sa.MetaData())
    if not _has_table(conn, runs):
        return 0
    return conn.execute(
        sa.select(sa.func.count(sa.distinct(runs.c.as_of))).where(
            runs.c.pipeline == pipeline, runs.c.as_of > last, runs.c.as_of < as_of
        )
    ).scalar_one()


def drift_score(model: TrainResult, panel: Panel, window: int) -> float:
    """Median over series of |mean of the last `window` target values - the champion's scaler mean|,
    in the champion's scaler standard deviations: how far the data moved since it was fitted."""
    known = [sid for sid in panel.series_ids if sid in set(model.series_ids)]
    if not known:
        return float("inf")
    mean, std = model.scaler.feature_stats(known)
    position = {sid: i for i, sid in enumerate(panel.series_ids)}
    recent = np.array([np.nanmean(panel.target[position[sid]][-window:]) for sid in known])
    return float(np.median(np.abs(recent - mean[:, 0]) / np.maximum(std[:, 0], 1e-12)))


def decide_plan(
    cfg: PipelineConfig,
    champion: ModelVersion | None,
    runs_since: int,
    problem: str | None,
    drift: float | None,
) -> TrainingPlan:
    """The registry policy as a pure function of what the run found."""
    policy = cfg.registry
    if champion is None:
        return TrainingPlan(RETRAIN, "no champion yet", None)
    if champion.config_hash != config_hash(cfg):
        return TrainingPlan(
            RETRAIN, f"the model settings changed since champion {champion.version}", champion
        )
    if problem is not None:
        return TrainingPlan(RETRAIN, f"champion {champion.version} cannot be reused: {problem}", champion)
    if runs_since + 1 >= policy.retrain_every:
        return TrainingPlan(
            RETRAIN,
            f"{runs_since + 1} runs since the last full training "
            f"(registry.retrain_every = {policy.retrain_every})",
            champion,
        )
    if drift is not None and policy.drift_threshold is not None and drift > policy.drift_threshold:
        limit = policy.drift_threshold
        return TrainingPlan(
            RETRAIN, f"the data drifted: score {drift:.2f} > registry.drift_threshold {limit}", champion
        )
    action = WARM_START if policy.between == "warm_start" else REUSE
    drifted = f"drift {drift:.2f}" if drift is not None else "drift not checked"
    return TrainingPlan(
        action,
        f"champion {champion.version}: run {runs_since + 1} of {policy.retrain_every} before the next full "
        f"training, {drifted}",
        champion,
    )


def run_plan_training(cfg: PipelineConfig, history_path: str, as_of: str) -> TrainingPlan:
    when = parse_as_of(as_of).to_pydatetime()
    table = models_table(cfg.registry.table, sa.MetaData())
    engine = create_engine(cfg.output.url)
    try:
        with engine.connect() as conn:
            champion = champion_before(conn, table, cfg.name, when)
            runs_since = (
                runs_since_full_training(conn, table, cfg.output.runs_table, cfg.name, when)
                if champion
                else 0
            )
    finally:
        engine.dispose()
    problem = drift = None
    if champion is not None and champion.config_hash == config_hash(cfg):
        if not Path(champion.checkpoint_path).is_file():
            problem = f"its checkpoint {champion.checkpoint_path} is missing"
        else:
            model, panel = load_checkpoint(champion.checkpoint_path), load_panel(cfg, history_path)
            problem = warm_start_problem(model, panel, cfg.model_config_for_lstm())
            if problem is None:
                drift = drift_score(model, panel, cfg.forecast.lookback)
    plan = decide_plan(cfg, champion, runs_since, problem, drift)
    stage_logger().info("training plan: %s (%s)", plan.action, plan.reason)
    return plan


@task(**DB_RETRIES)
def plan_training(cfg: PipelineConfig, history_path: str, as_of: str) -> TrainingPlan:
    """Retrain, fine-tune the champion or reuse it, as the registry policy says for this run."""
    return run_plan_training(cfg, history_path, as_of)


def reuse_champion(plan: TrainingPlan) -> Selection:
    if plan.champion is None:
        raise ValueError("reuse needs a champion, and the plan has none")
    return Selection(
        plan.champion.version, plan.champion.checkpoint_path, promoted=False,
        message=f"reusing champion {plan.champion.version}: {plan.reason}",
    )  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """Whether a challenger replaces the champion, and the message that says why."""

    promoted: bool
    message: str


def decide_champion(
    challenger: str, challenger_mase: float, champion: ModelVersion | None, champion_mase: float | None
) -> Verdict:
    """The challenger wins when there is no champion, when the champion cannot forecast the current series
    (`champion_mase` None), or when it scores a strictly lower holdout MASE."""
    if champion is None:
        return Verdict(True, f"{challenger} is the first champion (holdout MASE {challenger_mase:.4f})")
    if champion_mase is None:
        return Verdict(
            True, f"{challenger} replaces {champion.version}, which cannot forecast the current series"
        )
    promoted = challenger_mase < champion_mase
    verdict = "beats" if promoted else "does not beat"
    return Verdict(
        promoted,
        f"challenger {challenger} (holdout MASE {challenger_mase:.4f}) {verdict} champion "
        f"{champion.version} ({champion_mase:.4f})",
    )


def champion_holdout_mase(cfg: PipelineConfig, champion: ModelVersion | None, panel: Panel) -> float | None:
    """The champion's MASE on the holdout; None when it has no checkpoint or cannot forecast the panel."""
    if champion is None or not Path(champion.checkpoint_path).is_file():
        return None
    model = load_checkpoint(champion.checkpoint_path)
    if warm_start_problem(model, panel, cfg.model_config_for_lstm()) is not None:
        return None
    return holdout_mase(model, panel, cfg.data.season_length)


def record_challenge(
    cfg: PipelineConfig, trained: Any, as_of: str, run_id: str, backtest: dict[str, dict[str, float]],
    mase: tuple[float, float | None], promoted: bool,
) -> None:  # fmt: skip
    """The challenger's version row (once, however often the run is retried) and, when it won, its
    promotion: champion of the pipeline, or of its own period when a later as-of already has one."""
    challenger_mase, champion_mase = mase
    now, when = datetime.now(UTC), parse_as_of(as_of).to_pydatetime()
    table = models_table(cfg.registry.table, sa.MetaData())
    engine = create_engine(cfg.output.url)
    try:
        with engine.begin() as conn:
            lock_pipeline(conn, table, cfg.name)  # first: two first runs must not both create the table
            table.create(conn, checkfirst=True)
            add_missing_columns(conn, table)
            key = (table.c.pipeline == cfg.name) & (table.c.version == trained.model_version)
            existing = conn.execute(sa.select(table.c.status).where(key)).scalar_one_or_none()
            if existing is None:
                conn.execute(
                    sa.insert(table).values(
                        pipeline=cfg.name, version=trained.model_version, created_at=now, as_of=when,
                        kind=trained.kind, parent_version=trained.parent_version,
                        config_hash=config_hash(cfg), checkpoint_path=trained.checkpoint_path,
                        device=trained.device, epochs=trained.epochs, stopped_reason=trained.stopped_reason,
                        best_val_loss=trained.best_val_loss, backtest=json.dumps(backtest, sort_keys=True),
                        holdout_mase=challenger_mase, champion_holdout_mase=champion_mase,
                        status=REJECTED, run_id=run_id,
                    )
                )  # fmt: skip
            later = conn.execute(
                sa.select(sa.func.count()).where(
                    table.c.pipeline == cfg.name, table.c.promoted_at.is_not(None), table.c.as_of > when
                )
            ).scalar_one()
            if promoted and later:
                # a backfill's winner: champion of its own period, while a later as-of's champion stays live
                conn.execute(sa.update(table).where(key, table.c.promoted_at.is_(None)).values(
                    status=RETIRED, promoted_at=now
                ))  # fmt: skip
            elif promoted and existing != CHAMPION:
                conn.execute(
                    sa.update(table)
                    .where(table.c.pipeline == cfg.name, table.c.status == CHAMPION)
                    .values(status=RETIRED)
                )
                conn.execute(sa.update(table).where(key).values(status=CHAMPION, promoted_at=now))
    finally:
        engine.dispose()


def run_register(
    cfg: PipelineConfig, trained: Any, plan: TrainingPlan, history_path: str, as_of: str, run_id: str,
    backtest: dict[str, dict[str, float]],
) -> Selection:  # fmt: skip
    """Register `trained` (a TrainOutput) and promote it if it beats the champion on the holdout.

    Idempotent: a re-run with the same trained version finds its row and reaches the same decision.
    """
    panel = load_panel(cfg, history_path)
    challenger_mase = holdout_mase(load_checkpoint(trained.checkpoint_path), panel, cfg.data.season_length)
    champion = plan.champion
    if champion is not None and champion.version == trained.model_version:
        # A fine-tune that no epoch improved on gives back the champion itself: nothing to register.
        message = f"fine-tuning kept champion {champion.version} unchanged: no epoch beat it on validation"
        stage_logger().info(message)
        return Selection(champion.version, champion.checkpoint_path, promoted=False, message=message,
                         challenger_mase=challenger_mase)  # fmt: skip
    champion_mase = champion_holdout_mase(cfg, champion, panel)
    verdict = decide_champion(trained.model_version, challenger_mase, champion, champion_mase)
    record_challenge(
        cfg, trained, as_of, run_id, backtest, (challenger_mase, champion_mase), verdict.promoted
    )
    (stage_logger().info if verdict.promoted else stage_logger().warning)(verdict.message)
    winner = trained if verdict.promoted else None
    return Selection(
        version=winner.model_version if winner else champion.version,
        checkpoint_path=winner.checkpoint_path if winner else champion.checkpoint_path,
        promoted=verdict.promoted,
        message=verdict.message,
        challenger_mase=challenger_mase,
        champion_mase=champion_mase,
    )


@task(**DB_RETRIES)
def register(
    cfg: PipelineConfig, trained: Any, plan: TrainingPlan, history_path: str, as_of: str, run_id: str,
    backtest: dict[str, dict[str, float]],
) -> Selection:  # fmt: skip
    """Register the trained model and promote it if it beats the champion on the holdout."""
    return run_register(cfg, trained, plan, history_path, as_of, run_id, backtest)

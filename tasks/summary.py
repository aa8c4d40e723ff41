"""What a run did, said once: the runs table's record and the run summary (CLI, report, flow result) are
both made from one `RunOutcome`, so they never disagree on a field."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from tasks.config import PipelineConfig


@dataclass(frozen=True)
class RunRecord:
    """What the runs table keeps about one run, as JSON text: hashable, so it can be a task input."""

    run_id: str
    pipeline: str
    as_of: str
    started_at: str
    model_version: str
    config_json: str
    metrics_json: str
    timings_json: str
    counts_json: str


@dataclass(frozen=True)
class RunOutcome:
    """A run's decisions and stage results once its forecasts are made, before they are published."""

    run_id: str
    as_of: str
    started_at: str
    model_version: str  # the LSTM version that forecast, or the baseline's name
    gate: str
    training: dict[str, str] | None
    fallback: str | None  # why a baseline was published instead of the LSTM, None when it was not
    reproducible: str
    interval: float | None
    backtest: dict[str, dict[str, float]]
    folds: int
    stages: dict[str, Any]  # stage name -> its result dataclass (each has `seconds`)

    def metrics(self) -> dict[str, Any]:
        return {
            "backtest": self.backtest, "folds": self.folds, "gate": self.gate, "training": self.training,
            "fallback": self.fallback, "interval": self.interval, "reproducible": self.reproducible,
        }  # fmt: skip

    def timings(self) -> dict[str, float]:
        return {name: result.seconds for name, result in self.stages.items()}


def build_run_record(
    cfg: PipelineConfig, run_id: str, as_of: str, started_at: str, model_version: str,
    metrics: dict[str, Any], timings: dict[str, float], counts: dict[str, Any],
) -> RunRecord:  # fmt: skip
    """A runs-table row, with the config's passwords removed."""
    return RunRecord(
        run_id=run_id,
        pipeline=cfg.name,
        as_of=as_of,
        started_at=started_at,
        model_version=model_version,
        config_json=json.dumps(cfg.redacted(), sort_keys=True),
        metrics_json=json.dumps(metrics, sort_keys=True),
        timings_json=json.dumps(timings, sort_keys=True),
        counts_json=json.dumps(counts, sort_keys=True),
    )


def run_record(cfg: PipelineConfig, outcome: RunOutcome) -> RunRecord:
    """The runs-table row of `outcome`."""
    counts = {name: dataclasses.asdict(result) for name, result in outcome.stages.items()}
    return build_run_record(
        cfg, outcome.run_id, outcome.as_of, outcome.started_at, outcome.model_version, outcome.metrics(),
        outcome.timings(), counts,
    )  # fmt: skip


def run_summary(cfg: PipelineConfig, outcome: RunOutcome, published: Any, scored: Any) -> dict[str, Any]:
    """The flow's result: `outcome` with what publish (a PublishResult) and score (a ScoreResult) did."""
    stages = outcome.stages
    return {
        "pipeline": cfg.name,
        "run_id": outcome.run_id,
        "as_of": outcome.as_of,
        "model_version": outcome.model_version,
        **{k: v for k, v in outcome.metrics().items() if k != "folds"},
        "series_forecast": stages["forecast"].series,
        "series_skipped": stages["clean"].series_skipped,
        "rows_published": published.rows,
        "rows_replaced": published.replaced,
        "output_table": cfg.output.table,
        "quality_rows": published.quality_rows,
        "accuracy_scored": scored.scored,
        "timings": {**outcome.timings(), "publish": published.seconds, "score": scored.seconds},
    }

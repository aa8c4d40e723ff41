"""Every deployment of one pipeline config, served together by `lstmcast serve` without a work pool."""

from __future__ import annotations

from prefect.deployments.runner import RunnerDeployment

from deployments.backfill import backfill_deployment
from deployments.nightly import NIGHTLY_CRON, nightly_deployment


def pipeline_deployments(
    config_path: str, cron: str = NIGHTLY_CRON, timezone: str = "UTC"
) -> list[RunnerDeployment]:
    """The nightly deployment on its schedule and the on-demand backfill, for `prefect.serve(...)`."""
    return [nightly_deployment(config_path, cron, timezone), backfill_deployment(config_path)]

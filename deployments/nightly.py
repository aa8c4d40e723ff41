"""The nightly deployment: the forecast flow on a cron schedule in a chosen time zone."""

from __future__ import annotations

from pathlib import Path

from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType

from deployments.alerts import pipeline_of, pipeline_tag
from flows.nightly import nightly_forecast

NIGHTLY_CRON = "30 2 * * *"  # 02:30, after the usual midnight loads have landed


def nightly_deployment(
    config_path: str, cron: str = NIGHTLY_CRON, timezone: str = "UTC", name: str | None = None
):
    """A deployment of `nightly_forecast` for one pipeline config; serve it with `prefect.serve(...)`."""
    return nightly_forecast.to_deployment(
        name=name or f"nightly-{Path(config_path).stem}",
        schedules=[Cron(cron, timezone=timezone)],
        parameters={"config_path": str(config_path), "as_of": None},
        # the pipeline's tag is what its alerts (deployments/alerts.py) match runs on
        tags=["lstmcast", "nightly", pipeline_tag(pipeline_of(config_path))],
        # The installed module, not a file path relative to the working directory of `serve`.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )

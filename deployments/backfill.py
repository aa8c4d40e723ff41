"""The backfill deployment: no schedule, run on demand with the range of as-of dates to (re)forecast."""

from __future__ import annotations

from pathlib import Path

from prefect.types.entrypoint import EntrypointType

from flows.backfill import backfill_forecasts

BACKFILL_EVERY = "1D"
BACKFILL_CONCURRENCY = 2


def backfill_deployment(
    config_path: str,
    every: str = BACKFILL_EVERY,
    concurrency: int = BACKFILL_CONCURRENCY,
    name: str | None = None,
):
    """A deployment of `backfill_forecasts` for one pipeline config; `start` and `end` come with each run."""
    return backfill_forecasts.to_deployment(
        name=name or f"backfill-{Path(config_path).stem}",
        parameters={"config_path": str(config_path), "every": every, "concurrency": concurrency},
        tags=["lstmcast", "backfill"],
        # The installed module, not a file path relative to the working directory of `serve`.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )

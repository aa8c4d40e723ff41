"""The one retry policy of the stages that talk to a database: three retries with exponential backoff,
for transient errors only (a lost connection, a lock, a timeout); bad SQL, tables or data fail at once."""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from tasks.db import is_transient


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: only transient database errors go to the retry policy."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


DB_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_condition_fn": retry_if_transient,
}

"""Who and when of one publish: every forecast, quality and run row it writes carries these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class PublishContext:
    pipeline: str
    run_id: str
    model_version: str
    as_of: datetime
    now: datetime  # created_at of the rows, finished_at of the run

    def constants(self) -> dict[str, Any]:
        """The columns every forecast row of the publish shares."""
        return {
            "pipeline": self.pipeline, "as_of": self.as_of, "model_version": self.model_version,
            "run_id": self.run_id, "created_at": self.now,
        }  # fmt: skip

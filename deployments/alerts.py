"""The pipeline's alerts as Prefect automations: a notification when a nightly run ends badly, and one when
no nightly run has completed by a deadline after it was due.

Both match runs of the `nightly-forecast` flow that carry the pipeline's tag (`pipeline_tag`), which the
nightly deployment gives every run it creates. `create_alerts` replaces the automations of the pipeline by
name, so running it again after changing [alerts] leaves one of each.
"""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from flows.nightly import FALLBACK, GATE_FAILED, nightly_forecast
from tasks.config import PipelineConfig
from tasks.errors import UserError

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.events.schemas.automations import AutomationCore

BAD_ENDINGS = ("Failed", "Crashed", GATE_FAILED, FALLBACK)  # final state names that send an alert
COMPLETED = ("Completed", FALLBACK)  # a run that ended in one of these has published forecasts
# A run becomes due when a worker picks it up (Pending) or, with none there, when Prefect marks it Late.
DUE = ("Pending", "Late")

RUN = "{{ flow_run.name }}"  # Jinja, rendered by the server when the automation fires
STATE = "{{ flow_run.state.name }}"
# The as-of: the run's parameter, else the date in its name (`nightly-<as-of date>`).
AS_OF = "{{ flow_run.parameters.as_of or flow_run.name | replace('nightly-', '', 1) }}"


class AlertsError(UserError, ValueError):
    """Alerts that cannot be created as configured: no block named, or not a notification block."""


def pipeline_tag(pipeline: str) -> str:
    """The tag by which the automations recognise the pipeline's runs."""
    return f"lstmcast-pipeline:{pipeline}"


def pipeline_of(config_path: str | Path) -> str:
    """The pipeline name of a config as `load_config` gives it (the TOML's `name`, else the file name),
    read without validating the file: a deployment can be built before its config exists."""
    path = Path(config_path)
    try:
        name = tomllib.loads(path.read_text(encoding="utf-8")).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        name = None
    return name if isinstance(name, str) else path.stem


def automation_names(pipeline: str) -> tuple[str, str]:
    """(run ended badly, no run completed by the deadline): the names `create_alerts` replaces."""
    return f"lstmcast {pipeline}: nightly run ended badly", f"lstmcast {pipeline}: no nightly forecast"


def _runs_of(pipeline: str) -> list[dict[str, str]]:
    """Related resources an event must carry: the nightly flow, and the pipeline's tag."""
    return [
        {"prefect.resource.role": "flow", "prefect.resource.name": nightly_forecast.name},
        {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{pipeline_tag(pipeline)}"},
    ]


def build_triggers(pipeline: str, deadline: timedelta) -> tuple[Any, Any]:
    """(a run ended badly, a run not completed within `deadline` of becoming due), per flow run."""
    from prefect.events.schemas.automations import EventTrigger, Posture

    run = {"prefect.resource.id": "prefect.flow-run.*"}
    ended_badly = EventTrigger(
        match=run,
        match_related=_runs_of(pipeline),
        expect={f"prefect.flow-run.{state}" for state in BAD_ENDINGS},
        for_each={"prefect.resource.id"},
        posture=Posture.Reactive,
        threshold=1,
        within=timedelta(0),
    )
    not_completed = EventTrigger(
        match=run,
        match_related=_runs_of(pipeline),
        after={f"prefect.flow-run.{state}" for state in DUE},
        expect={f"prefect.flow-run.{state}" for state in COMPLETED},
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=deadline,
    )
    return ended_badly, not_completed


def build_automations(cfg: PipelineConfig, block_document_id: UUID) -> list[AutomationCore]:
    """The two automations of `cfg`'s pipeline, notifying through the given block document."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore

    pipeline, deadline = cfg.name, cfg.alerts.deadline
    ended, late = automation_names(pipeline)
    ended_badly, not_completed = build_triggers(pipeline, cfg.alerts.window().to_pytimedelta())
    tags = ["lstmcast", pipeline_tag(pipeline)]
    ended_body = (
        f"Pipeline {pipeline}: nightly run {RUN} ended {STATE} (as-of {AS_OF}).\n"
        "{{ flow_run.state.message }}\nFlow run id: {{ flow_run.id }}"
    )
    late_body = (
        f"Pipeline {pipeline}: nightly run {RUN} (as-of {AS_OF}) has not completed {deadline} after it "
        f"was due; it is {STATE}.\nFlow run id: {{{{ flow_run.id }}}}"
    )
    return [
        AutomationCore(
            name=ended,
            description=f"Notify when a nightly run of pipeline {pipeline} ends {', '.join(BAD_ENDINGS)}.",
            tags=tags,
            trigger=ended_badly,
            actions=[
                SendNotification(
                    block_document_id=block_document_id,
                    subject=f"lstmcast {pipeline}: {RUN} ended {STATE}",
                    body=ended_body,
                )
            ],
        ),
        AutomationCore(
            name=late,
            description=f"Notify when a nightly run of pipeline {pipeline} has not completed "
            f"{deadline} after it was due.",
            tags=tags,
            trigger=not_completed,
            actions=[
                SendNotification(
                    block_document_id=block_document_id,
                    subject=f"lstmcast {pipeline}: no forecast {deadline} after {RUN}",
                    body=late_body,
                )
            ],
        ),
    ]


def notification_block_id(client: SyncPrefectClient, ref: str) -> UUID:
    """The id of the notification block document `ref` names (`name`, or `type-slug/name`)."""
    slug, _, name = ref.rpartition("/")
    found = [
        doc
        for doc in client.read_block_documents(include_secrets=False)
        if doc.name == name and (not slug or (doc.block_type and doc.block_type.slug == slug))
    ]
    if not found:
        raise AlertsError(
            f"alerts.block: no Prefect block named {ref!r}; create the notification block first "
            "(e.g. a Custom Webhook, Slack Webhook or Email block) or fix the name"
        )
    if len(found) > 1:
        slugs = ", ".join(sorted(f"'{doc.block_type.slug}/{name}'" for doc in found if doc.block_type))
        raise AlertsError(f"alerts.block: several Prefect blocks are named {ref!r}; name one of {slugs}")
    doc = found[0]
    capabilities = doc.block_schema.capabilities if doc.block_schema else []
    if "notify" not in capabilities:
        kind = doc.block_type.name if doc.block_type else "other"
        raise AlertsError(
            f"alerts.block: the Prefect block {ref!r} is a {kind} block, not a notification block"
        )
    return doc.id


def create_alerts(cfg: PipelineConfig) -> list[UUID]:
    """Create the pipeline's automations, deleting any of the same names first; their ids."""
    from prefect import get_client

    if cfg.alerts.block is None:
        raise AlertsError(
            f"alerts.block: pipeline {cfg.name!r} names no notification block; "
            'add [alerts] block = "<block name>" to its config'
        )
    with get_client(sync_client=True) as client:
        block_id = notification_block_id(client, cfg.alerts.block)
        automations = build_automations(cfg, block_id)
        for automation in automations:
            for old in client.read_automations_by_name(automation.name):
                client.delete_automation(old.id)
        return [client.create_automation(automation) for automation in automations]

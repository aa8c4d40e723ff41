"""Alerts through Prefect automations, on the session's Prefect server (it runs the triggers and actions
services: an ephemeral server runs every service marked to run in ephemeral servers)."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import tomli_w
from prefect import get_client, tags
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.blocks.system import Secret
from prefect.events.schemas.automations import Posture

from deployments.alerts import AlertsError, automation_names, create_alerts, pipeline_tag
from deployments.nightly import nightly_deployment
from flows.nightly import GATE_FAILED, nightly_forecast
from tasks.config import ConfigError, load_config, parse_config
from tests.helpers import seasonal_frame, sensor_config_dict, write_table

NOTIFY_WAIT_S = 60.0


class Receiver:
    """A webhook on 127.0.0.1 that records the JSON body of every POST."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                calls.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, n: int, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        return list(self.calls)


@pytest.fixture
def receiver():
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def save_webhook(name: str, url: str) -> None:
    CustomWebhookNotificationBlock(
        name=name, url=url, json_data={"subject": "{{subject}}", "body": "{{body}}"}
    ).save(name, overwrite=True)


def write_config(tmp_path, url: str, name: str, **overrides) -> str:
    path = tmp_path / f"{name}.toml"
    cfg = sensor_config_dict(url, tmp_path / "work", name=name, **overrides)
    path.write_bytes(tomli_w.dumps(cfg).encode())
    return str(path)


def test_alerts_section_defaults_and_checks_the_deadline(sqlite_url, tmp_path):
    base = sensor_config_dict(sqlite_url, tmp_path)
    assert parse_config(base).alerts.block is None and parse_config(base).alerts.deadline == "3h"
    with pytest.raises(ConfigError) as exc:
        parse_config({**base, "alerts": {"block": "b", "deadline": "3"}}, "p.toml")
    assert str(exc.value) == (
        "p.toml: 'alerts.deadline': alerts.deadline must be a duration with a unit such as '3h', got '3'"
    )
    with pytest.raises(ConfigError) as exc:
        parse_config({**base, "alerts": {"block": "b", "deadline": "5s"}}, "p.toml")
    assert (
        str(exc.value) == "p.toml: 'alerts.deadline': alerts.deadline must be at least 10 seconds, got '5s'"
    )


def test_nightly_deployment_tags_its_runs_with_the_pipeline(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url, "plant-a")
    assert nightly_deployment(path).tags == ["lstmcast", "nightly", "lstmcast-pipeline:plant-a"]
    assert nightly_deployment("configs/plant.toml").tags[-1] == "lstmcast-pipeline:plant"


def test_create_reads_back_and_rerunning_replaces_the_automations(tmp_path, sqlite_url):
    save_webhook("alerts-readback", "http://127.0.0.1:9/hook")
    cfg = load_config(
        write_config(tmp_path, sqlite_url, "readback", alerts={"block": "alerts-readback", "deadline": "2h"})
    )
    first = create_alerts(cfg)
    second = create_alerts(cfg)
    assert len(second) == 2 and not set(first) & set(second)
    ended_name, late_name = automation_names("readback")
    with get_client(sync_client=True) as client:
        block_id = client.read_block_document_by_name("alerts-readback", "custom-webhook").id
        (ended,) = client.read_automations_by_name(ended_name)
        (late,) = client.read_automations_by_name(late_name)
    assert {ended.id, late.id} == set(second)
    related = [
        {"prefect.resource.role": "flow", "prefect.resource.name": "nightly-forecast"},
        {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.lstmcast-pipeline:readback"},
    ]
    assert ended.trigger.posture == Posture.Reactive
    assert ended.trigger.expect == {
        "prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.GateFailed",
        "prefect.flow-run.CompletedWithFallback",
    }  # fmt: skip
    assert [m.model_dump() for m in ended.trigger.match_related] == related
    assert late.trigger.posture == Posture.Proactive and late.trigger.within == timedelta(hours=2)
    assert late.trigger.after == {"prefect.flow-run.Pending", "prefect.flow-run.Late"}
    assert late.trigger.expect == {"prefect.flow-run.Completed", "prefect.flow-run.CompletedWithFallback"}
    assert [m.model_dump() for m in late.trigger.match_related] == related
    for automation in (ended, late):
        (action,) = automation.actions
        assert action.type == "send-notification" and action.block_document_id == block_id


def test_a_missing_or_wrong_block_is_named(tmp_path, sqlite_url):
    cfg = load_config(write_config(tmp_path, sqlite_url, "noblock", alerts={"block": "no-such-hook"}))
    with pytest.raises(AlertsError) as exc:
        create_alerts(cfg)
    assert str(exc.value) == (
        "alerts.block: no Prefect block named 'no-such-hook'; create the notification block first "
        "(e.g. a Custom Webhook, Slack Webhook or Email block) or fix the name"
    )
    Secret(value="x").save("alerts-not-a-notifier", overwrite=True)
    cfg = load_config(write_config(tmp_path, sqlite_url, "secret", alerts={"block": "alerts-not-a-notifier"}))
    with pytest.raises(AlertsError) as exc:
        create_alerts(cfg)
    assert str(exc.value) == (
        "alerts.block: the Prefect block 'alerts-not-a-notifier' is a Secret block, not a notification block"
    )
    cfg = load_config(write_config(tmp_path, sqlite_url, "unset"))
    with pytest.raises(AlertsError) as exc:
        create_alerts(cfg)
    assert str(exc.value) == (
        "alerts.block: pipeline 'unset' names no notification block; "
        'add [alerts] block = "<block name>" to its config'
    )


def test_a_gate_failed_run_notifies_the_block_once(tmp_path, sqlite_url, receiver):
    write_table(sqlite_url, "readings", seasonal_frame())  # seasonal naive wins: gate = "fail" fails the run
    save_webhook("alerts-e2e", receiver.url)
    path = write_config(
        tmp_path, sqlite_url, "seasonal", forecast={"gate": "fail"}, alerts={"block": "alerts-e2e"}
    )
    create_alerts(load_config(path))
    with tags(pipeline_tag("seasonal")):  # as the nightly deployment tags its runs
        state = nightly_forecast(path, return_state=True)
    assert state.name == GATE_FAILED
    started = time.monotonic()
    calls = receiver.wait_for(1, NOTIFY_WAIT_S)
    assert calls, f"no notification within {NOTIFY_WAIT_S:.0f} s"
    waited = time.monotonic() - started
    time.sleep(3)  # a duplicate would come from the same event batch
    assert len(receiver.calls) == 1, receiver.calls
    (call,) = receiver.calls
    assert call["subject"] == "lstmcast seasonal: nightly-2020-01-17 ended GateFailed"
    lines = call["body"].splitlines()
    assert (
        lines[0] == "Pipeline seasonal: nightly run nightly-2020-01-17 ended GateFailed (as-of 2020-01-17)."
    )
    assert lines[1] == state.message
    assert lines[2].startswith("Flow run id: ") and lines[2].endswith(str(state.state_details.flow_run_id))
    print(f"notified {waited:.1f} s after the run ended")

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.workers.base import BaseJobConfiguration

from deployments.backfill import backfill_deployment
from deployments.nightly import nightly_deployment
from deployments.serve import pipeline_deployments
from deployments.work_pools import K8S_WORK_POOL, load_base_job_template
from tests.test_serve import api_env, log_tail

REPO = Path(__file__).resolve().parents[1]
FLOWS_AND_NAMES = [
    ("nightly-forecast", "nightly"),
    ("backfill", "backfill"),
    ("nightly-forecast", "nightly-k8s"),
    ("backfill", "backfill-k8s"),
]


def test_nightly_deployment_carries_schedule_time_zone_and_parameters():
    dep = nightly_deployment("configs/plant.toml", cron="0 3 * * *", timezone="Europe/Rome")
    assert dep.name == "nightly-plant"
    assert dep.parameters == {"config_path": "configs/plant.toml", "as_of": None}
    (schedule,) = dep.schedules
    assert schedule.schedule.cron == "0 3 * * *" and schedule.schedule.timezone == "Europe/Rome"
    assert dep.entrypoint == "flows.nightly.nightly_forecast"  # importable from any working directory


def test_unknown_time_zone_is_named_in_the_error():
    with pytest.raises(ValueError, match="Mars/Olympus"):
        nightly_deployment("configs/plant.toml", timezone="Mars/Olympus")


def test_backfill_deployment_is_on_demand_with_range_settings():
    dep = backfill_deployment("configs/plant.toml", every="7D", concurrency=3)
    assert dep.name == "backfill-plant" and dep.flow_name == "backfill"
    assert dep.parameters == {"config_path": "configs/plant.toml", "every": "7D", "concurrency": 3}
    assert dep.schedules == []
    assert dep.entrypoint == "flows.backfill.backfill_forecasts"


def test_pipeline_deployments_share_the_config_and_only_the_nightly_is_scheduled():
    nightly, backfill = pipeline_deployments("/srv/plant.toml", "0 4 * * *", "America/New_York")
    assert (nightly.name, backfill.name) == ("nightly-plant", "backfill-plant")
    assert nightly.parameters["config_path"] == backfill.parameters["config_path"] == "/srv/plant.toml"
    assert [s.schedule.timezone for s in nightly.schedules] == ["America/New_York"]
    assert backfill.schedules == []


class KubernetesJob(BaseJobConfiguration):
    """The part of a rendered Kubernetes job configuration the worker turns into a Job."""

    namespace: str
    job_manifest: dict[str, Any]


def test_prefect_yaml_deploys_to_process_and_kubernetes_pools(tmp_path):
    """The commands of docs/OPERATIONS.md, run against the session's server."""
    image = "registry.example.com/lstmcast:test"
    names = " ".join(f"-n {name}" for _, name in FLOWS_AND_NAMES)
    script = f"""
    set -e
    python -m deployments.work_pools deployments/k8s-work-pool.yaml > {tmp_path}/k8s-work-pool.json
    prefect work-pool create lstmcast --type process
    prefect work-pool create lstmcast-k8s --type kubernetes --base-job-template {tmp_path}/k8s-work-pool.json
    prefect --no-prompt deploy --prefect-file deployments/prefect.yaml {names}
    """
    env = api_env(
        tmp_path / "prefect-home",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        LSTMCAST_CONFIG="/etc/lstmcast/plant.toml",
        LSTMCAST_TIMEZONE="Europe/Rome",
        LSTMCAST_IMAGE=image,
        COLUMNS="200",
    )
    log = tmp_path / "deploy.log"
    with log.open("wb") as out:
        done = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    assert done.returncode == 0, log_tail(log)

    with get_client(sync_client=True) as client:
        deployed = {n: client.read_deployment_by_name(f"{flow}/{n}") for flow, n in FLOWS_AND_NAMES}
        pool = client.read_work_pool("lstmcast-k8s")

    for name in ("nightly", "nightly-k8s"):
        (schedule,) = deployed[name].schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 2 * * *", "Europe/Rome")
        assert deployed[name].parameters == {"config_path": "/etc/lstmcast/plant.toml", "as_of": None}
        assert deployed[name].entrypoint == "flows.nightly.nightly_forecast"
    for name in ("backfill", "backfill-k8s"):
        assert deployed[name].schedules == []
        assert deployed[name].parameters == {
            "config_path": "/etc/lstmcast/plant.toml",
            "every": "1D",
            "concurrency": 2,
        }
        assert deployed[name].entrypoint == "flows.backfill.backfill_forecasts"
    for name in ("nightly", "backfill"):
        assert deployed[name].work_pool_name == "lstmcast"
        assert deployed[name].pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
        ]
    for name in ("nightly-k8s", "backfill-k8s"):
        assert deployed[name].work_pool_name == "lstmcast-k8s"
        assert deployed[name].job_variables == {"image": image, "gpu_count": 1}
    assert pool.type == "kubernetes" and pool.base_job_template == load_base_job_template(K8S_WORK_POOL)

    # What the Kubernetes worker would submit for a run of the nightly deployment.
    job = asyncio.run(
        KubernetesJob.from_template_and_values(pool.base_job_template, deployed["nightly-k8s"].job_variables)
    )
    pod = job.job_manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == image
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["envFrom"] == [{"secretRef": {"name": "lstmcast-db"}}]
    assert {v["name"]: v for v in pod["volumes"]}["data"]["persistentVolumeClaim"] == {
        "claimName": "lstmcast-data"
    }
    assert job.namespace == "lstmcast"

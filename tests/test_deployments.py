from deployments.nightly import nightly_deployment


def test_nightly_deployment_carries_schedule_time_zone_and_parameters():
    dep = nightly_deployment("configs/plant.toml", cron="0 3 * * *", timezone="Europe/Rome")
    assert dep.name == "nightly-plant"
    assert dep.parameters == {"config_path": "configs/plant.toml", "as_of": None}
    (schedule,) = dep.schedules
    assert schedule.schedule.cron == "0 3 * * *" and schedule.schedule.timezone == "Europe/Rome"

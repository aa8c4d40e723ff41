import dataclasses
import uuid
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from tasks.clean import clean
from tasks.config import parse_config
from tasks.extract import extract
from tasks.panel import load_panel
from tasks.registry import (
    REUSE,
    WARM_START,
    ModelVersion,
    config_hash,
    decide_champion,
    decide_plan,
    drift_score,
    run_plan_training,
    run_register,
)
from tasks.schemas import models_table
from tasks.train import run_train
from tests.helpers import sensor_config_dict

AS_OF = ["2016-07-10T00:00:00+00:00", "2016-07-12T00:00:00+00:00", "2016-07-14T00:00:00+00:00"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def cfg(request, sensor_db, tmp_path):
    out = sensor_db
    table = f"models_{uuid.uuid4().hex[:10]}"
    if request.param == "postgres":
        out = request.getfixturevalue("pg_url")
    yield parse_config(
        sensor_config_dict(
            sensor_db, tmp_path / "work", output={"url": out, "runs_table": f"runs_{table}"},
            registry={"table": table},
        )
    )  # fmt: skip
    engine = sa.create_engine(out)
    with engine.begin() as conn:
        for name in (table, f"runs_{table}"):
            conn.execute(sa.text(f'drop table if exists "{name}"'))
    engine.dispose()


@pytest.fixture
def history(cfg) -> str:
    extracted = extract.fn(cfg, AS_OF[-1])
    return clean.fn(cfg, extracted.path, AS_OF[-1]).history_path


def version(trained, as_of: str, status: str = "champion", cfg=None) -> ModelVersion:
    return ModelVersion(
        version=trained.model_version, as_of=as_of, kind=trained.kind, parent_version=trained.parent_version,
        checkpoint_path=trained.checkpoint_path, config_hash=config_hash(cfg) if cfg else "x",
        holdout_mase=None, status=status,
    )  # fmt: skip


def registry_rows(cfg) -> pd.DataFrame:
    engine = sa.create_engine(cfg.output.url)
    with engine.connect() as conn:
        rows = pd.read_sql(sa.select(models_table(cfg.registry.table, sa.MetaData())), conn)
    engine.dispose()
    return rows.set_index("version")


def with_training(cfg, **changes):
    return cfg.model_copy(update={"training": cfg.training.model_copy(update=changes)})


def plan_for(cfg, champion):
    from tasks.registry import TrainingPlan

    return TrainingPlan("retrain", "test", champion)


def test_a_challenger_replaces_the_champion_only_if_its_holdout_is_better(cfg, history):
    untrained = with_training(cfg, learning_rate=1e-9)
    weak = run_train(untrained, history)
    first = run_register(cfg, weak, plan_for(cfg, None), history, AS_OF[0], "run-1", {"lstm": {"mase": 2.0}})
    assert first.promoted and first.version == weak.model_version and first.champion_mase is None
    assert (
        first.message
        == f"{weak.model_version} is the first champion (holdout MASE {first.challenger_mase:.4f})"
    )

    strong = run_train(with_training(cfg, max_epochs=6, steps_per_epoch=20), history)
    second = run_register(
        cfg,
        strong,
        plan_for(cfg, version(weak, AS_OF[0])),
        history,
        AS_OF[1],
        "run-2",
        {"lstm": {"mase": 1.0}},
    )
    assert second.challenger_mase < second.champion_mase == pytest.approx(first.challenger_mase)
    assert second.promoted and second.version == strong.model_version
    assert second.message.startswith(f"challenger {strong.model_version} (holdout MASE")
    assert f"beats champion {weak.model_version}" in second.message

    weak_again = run_train(with_training(untrained, seed=7), history)
    third = run_register(
        cfg, weak_again, plan_for(cfg, version(strong, AS_OF[1])), history, AS_OF[2], "run-3", {}
    )
    assert not third.promoted and third.version == strong.model_version
    assert third.checkpoint_path == strong.checkpoint_path  # the champion keeps forecasting
    assert f"does not beat champion {strong.model_version}" in third.message
    again = run_register(
        cfg, weak_again, plan_for(cfg, version(strong, AS_OF[1])), history, AS_OF[2], "run-3", {}
    )
    assert again == third  # a re-run reaches the same decision without a second row

    rows = registry_rows(cfg)
    assert len(rows) == 3
    assert rows.loc[weak.model_version, "status"] == "retired"
    assert rows.loc[strong.model_version, "status"] == "champion"
    assert rows.loc[weak_again.model_version, "status"] == "rejected"
    assert rows.loc[strong.model_version, "holdout_mase"] == pytest.approx(second.challenger_mase)
    assert rows.loc[strong.model_version, "champion_holdout_mase"] == pytest.approx(second.champion_mase)
    assert rows["promoted_at"].notna().sum() == 2
    assert rows.loc[strong.model_version, "backtest"] == '{"lstm": {"mase": 1.0}}'


def test_the_registry_records_a_fit_the_time_cap_stopped_also_in_a_table_made_before_that_column(
    cfg, history
):
    full = models_table(cfg.registry.table, sa.MetaData())
    older = sa.Table(
        full.name, sa.MetaData(),
        *(sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
          for c in full.columns if c.name != "stopped_reason"),
        schema=full.schema,
    )  # fmt: skip
    old = run_train(cfg, history)  # a champion the older release registered, without the column
    engine = sa.create_engine(cfg.output.url)
    with engine.begin() as conn:
        older.create(conn)
        conn.execute(sa.insert(older).values(
            pipeline=cfg.name, version=old.model_version, created_at=pd.Timestamp(AS_OF[0]).to_pydatetime(),
            as_of=pd.Timestamp(AS_OF[0]).to_pydatetime(), kind="trained", config_hash=config_hash(cfg),
            checkpoint_path=old.checkpoint_path, device="cpu", epochs=1, backtest="{}", status="champion",
            promoted_at=pd.Timestamp(AS_OF[0]).to_pydatetime(), run_id="run-0",
        ))  # fmt: skip
    engine.dispose()
    plan = run_plan_training(cfg, history, AS_OF[1])  # reads the older table as it is
    assert plan.champion is not None and plan.champion.version == old.model_version
    capped = run_train(with_training(cfg, time_budget_s=1e-6, max_epochs=50), history)
    assert capped.stopped_reason == "time_budget"
    run_register(cfg, capped, plan, history, AS_OF[1], "run-1", {})
    normal = run_train(with_training(cfg, seed=3), history)
    run_register(cfg, normal, plan_for(cfg, version(capped, AS_OF[1])), history, AS_OF[2], "run-2", {})
    rows = registry_rows(cfg)
    assert pd.isna(rows.loc[old.model_version, "stopped_reason"])  # not recorded then
    assert rows.loc[capped.model_version, "stopped_reason"] == "time_budget"
    assert rows.loc[normal.model_version, "stopped_reason"] == normal.stopped_reason != "time_budget"


def test_a_registry_table_missing_other_columns_is_refused_by_name(cfg, history):
    engine = sa.create_engine(cfg.output.url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'create table "{cfg.registry.table}" (pipeline text, version text)'))
    engine.dispose()
    trained = run_train(cfg, history)
    with pytest.raises(LookupError) as exc:
        run_register(cfg, trained, plan_for(cfg, None), history, AS_OF[0], "run-1", {})
    assert str(exc.value).startswith(
        f"registry table '{cfg.registry.table}' exists but lacks columns ['created_at', 'as_of', 'kind',"
    )


def test_a_fine_tune_that_gives_back_the_champion_keeps_it_without_a_new_row(cfg, history):
    trained = run_train(cfg, history)
    run_register(cfg, trained, plan_for(cfg, None), history, AS_OF[0], "run-1", {})
    again = run_register(
        cfg, trained, plan_for(cfg, version(trained, AS_OF[0])), history, AS_OF[1], "run-2", {}
    )
    assert not again.promoted and again.version == trained.model_version
    assert again.message == (
        f"fine-tuning kept champion {trained.model_version} unchanged: no epoch beat it on validation"
    )
    assert len(registry_rows(cfg)) == 1


def test_plan_follows_the_policy_from_what_the_registry_holds(cfg, history):
    assert run_plan_training(cfg, history, AS_OF[0]).reason == "no champion yet"
    trained = run_train(cfg, history)
    run_register(cfg, trained, plan_for(cfg, None), history, AS_OF[0], "run-1", {})

    every3 = cfg.model_copy(update={"registry": cfg.registry.model_copy(update={"retrain_every": 3})})
    plan = run_plan_training(every3, history, AS_OF[1])
    assert plan.action == WARM_START and plan.champion.version == trained.model_version
    assert plan.reason.startswith(
        f"champion {trained.model_version}: run 1 of 3 before the next full training"
    )
    # the same as-of again plans as the first attempt did, even once its own model is champion
    assert run_plan_training(every3, history, AS_OF[0]).reason == "no champion yet"

    reuse = every3.model_copy(update={"registry": every3.registry.model_copy(update={"between": "reuse"})})
    assert run_plan_training(reuse, history, AS_OF[1]).action == REUSE
    assert run_plan_training(cfg, history, AS_OF[1]).reason == (
        "1 runs since the last full training (registry.retrain_every = 1)"
    )
    wider = every3.model_copy(update={"model": every3.model.model_copy(update={"hidden_size": 16})})
    assert run_plan_training(wider, history, AS_OF[1]).reason == (
        f"the model settings changed since champion {trained.model_version}"
    )
    Path(trained.checkpoint_path).unlink()
    assert run_plan_training(every3, history, AS_OF[1]).reason == (
        f"champion {trained.model_version} cannot be reused: "
        f"its checkpoint {trained.checkpoint_path} is missing"
    )


def test_drift_is_measured_in_the_champion_scaler_units(cfg, history):
    trained = run_train(cfg, history)
    from lstm_model.checkpoint import load_checkpoint

    model, panel = load_checkpoint(trained.checkpoint_path), load_panel(cfg, history)
    assert drift_score(model, panel, 24) < 2.0
    mean, std = model.scaler.feature_stats(panel.series_ids)
    shifted = dataclasses.replace(panel, target=tuple(t + 5 * std[i, 0] for i, t in enumerate(panel.target)))
    assert drift_score(model, shifted, 24) == pytest.approx(drift_score(model, panel, 24) + 5, abs=0.5)


def test_decide_plan_retrains_on_drift_and_counts_runs():
    cfg = parse_config(sensor_config_dict("sqlite:///x.db", Path("w"), registry={"retrain_every": 4}))
    champion = ModelVersion("lstm-a", AS_OF[0], "trained", None, "a.pt", config_hash(cfg), 0.9, "champion")
    assert decide_plan(cfg, champion, 2, None, 0.5).action == WARM_START
    assert decide_plan(cfg, champion, 3, None, 0.5).reason == (
        "4 runs since the last full training (registry.retrain_every = 4)"
    )
    assert (
        decide_plan(cfg, champion, 0, None, 2.5).reason
        == "the data drifted: score 2.50 > registry.drift_threshold 2.0"
    )
    assert decide_plan(cfg, champion, 0, "the series changed (new: ['x'], gone: [])", None).reason == (
        "champion lstm-a cannot be reused: the series changed (new: ['x'], gone: [])"
    )


def test_the_same_model_trained_twice_is_the_same_version(cfg, history):
    first, second = run_train(cfg, history), run_train(cfg, history)
    assert first.model_version == second.model_version and first.checkpoint_path == second.checkpoint_path
    assert run_train(with_training(cfg, seed=3), history).model_version != first.model_version


def test_decide_champion_promotes_only_a_strictly_better_challenger():
    champion = ModelVersion("lstm-a", AS_OF[0], "trained", None, "a.pt", "h", 0.9, "champion")
    first = decide_champion("lstm-b", 0.8, None, None)
    assert first.promoted and first.message == "lstm-b is the first champion (holdout MASE 0.8000)"
    lost = decide_champion("lstm-b", 0.9, champion, 0.9)
    assert not lost.promoted
    assert lost.message == ("challenger lstm-b (holdout MASE 0.9000) does not beat champion lstm-a (0.9000)")
    assert decide_champion("lstm-b", 0.89, champion, 0.9).promoted
    stale = decide_champion("lstm-b", 5.0, champion, None)
    assert stale.promoted
    assert stale.message == "lstm-b replaces lstm-a, which cannot forecast the current series"


def test_a_champion_is_not_reused_once_the_events_table_names_another_event(cfg, history, tmp_path):
    events = cfg.model_copy(update={
        "source": cfg.source.model_copy(update={"events_table": "events"}),
        "registry": cfg.registry.model_copy(update={"retrain_every": 3, "between": "reuse"}),
    })  # fmt: skip
    frame = pd.read_parquet(history)
    first = frame.assign(**{"event:fair": (frame["ts"].dt.day == 5).astype("float32")})
    paths = [tmp_path / "one" / "history.parquet", tmp_path / "two" / "history.parquet"]
    for path, data in zip(paths, [first, first.assign(**{"event:sale": 0.0})], strict=True):
        path.parent.mkdir()
        data.to_parquet(path)
    trained = run_train(events, str(paths[0]))
    run_register(events, trained, plan_for(events, None), str(paths[0]), AS_OF[0], "run-1", {})
    assert run_plan_training(events, str(paths[0]), AS_OF[1]).action == REUSE
    assert run_plan_training(events, str(paths[1]), AS_OF[1]).reason == (
        f"champion {trained.model_version} cannot be reused: the covariates changed"
    )

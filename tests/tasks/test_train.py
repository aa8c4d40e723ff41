import contextlib
import itertools
import logging
import os
import re
import subprocess
import sys
import time
import types

import pandas as pd

import lstm_model.train as lstm_train
from lstm_model.train import TrainingFailed
from tasks.clean import clean
from tasks.config import parse_config
from tasks.extract import extract
from tasks.forecast import forecast_series
from tasks.train import fallback_message, reproducibility, train
from tests.helpers import sensor_config_dict


def test_training_logs_every_epoch_with_losses_and_learning_rate(sensor_cfg, caplog):
    cfg = sensor_cfg()
    as_of = "2016-07-15T00:00:00+00:00"
    history = clean.fn(cfg, extract.fn(cfg, as_of).path, as_of).history_path
    with caplog.at_level(logging.INFO, logger="lstmcast"):
        trained = train.fn(cfg, history)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == trained.epochs >= 1
    for n, line in enumerate(lines, start=1):
        assert re.fullmatch(
            rf"epoch {n}: train_loss=\d+\.\d{{4}} val_loss=\d+\.\d{{4}} lr=1\.00e-03 \(\d+\.\ds\)", line
        ), line
    assert trained.kind == "trained" and trained.parent_version is None


def test_reproducibility_names_the_fits_the_wall_clock_cap_stopped():
    assert reproducibility((), "early_stopping") == "reproducible"
    assert reproducibility((), None) == "reproducible"  # no training this run (reuse or fallback)
    assert reproducibility((1,), "max_epochs") == (
        "stopped by time, not reproducible (backtest fold 2: training.time_budget_s)"
    )
    assert reproducibility((0, 2), "time_budget") == (
        "stopped by time, not reproducible "
        "(backtest fold 1, backtest fold 3, training: training.time_budget_s)"
    )


@contextlib.contextmanager
def cpu_load(processes: int):
    """Other processes spinning on every core while the block runs."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for p in burners:
            p.kill()
            p.wait()


def test_the_default_config_gives_bit_identical_forecasts_while_another_process_loads_the_cpu(
    sensor_db, tmp_path, monkeypatch
):
    """Same data and seed, the default model and training settings, two runs on a machine other
    processes keep busy, the second on a clock that also runs 1 s per reading (a machine far slower
    than this one): training stops by epochs and early stopping, not by the clock, so the runs train the
    same steps and the forecasts agree to the bit. (A 120 s wall-clock stop, the earlier default, makes
    the second run stop early.)"""
    raw = sensor_config_dict(sensor_db, tmp_path / "work")
    raw["model"], raw["training"] = {}, {}  # every model and training setting at its default
    raw["forecast"]["lookback"] = 48  # two days: read as two daily segments (patch_len auto)
    cfg = parse_config(raw)
    assert cfg.train_config().time_budget_s == 600.0  # only the safety cap
    as_of = "2016-07-15T00:00:00+00:00"
    cleaned = clean.fn(cfg, extract.fn(cfg, as_of).path, as_of)
    with cpu_load(os.cpu_count() or 2):
        runs = [train.fn(cfg, cleaned.history_path)]
        ticks = itertools.count()
        start = time.monotonic()
        slow_clock = types.SimpleNamespace(monotonic=lambda: start + next(ticks))  # 1 s per reading
        monkeypatch.setattr(lstm_train, "time", slow_clock)  # training's clock only
        runs.append(train.fn(cfg, cleaned.history_path))
    assert next(ticks) > 120  # the slow clock passed the earlier default's 120 s
    assert [r.stopped_reason for r in runs] != ["time_budget"] * 2
    assert runs[0].stopped_reason == runs[1].stopped_reason and runs[0].epochs == runs[1].epochs
    assert runs[0].model_version == runs[1].model_version  # a digest of the weights
    frames = [
        forecast_series(cfg, r.checkpoint_path, cleaned.history_path, cleaned.future_path)[0] for r in runs
    ]
    pd.testing.assert_frame_equal(frames[0], frames[1], check_exact=True)


def test_a_fit_the_cap_stops_is_logged_as_not_reproducible(sensor_cfg, caplog):
    cfg = sensor_cfg(training={"time_budget_s": 1e-6, "max_epochs": 50})
    as_of = "2016-07-15T00:00:00+00:00"
    history = clean.fn(cfg, extract.fn(cfg, as_of).path, as_of).history_path
    with caplog.at_level(logging.WARNING, logger="lstmcast"):
        trained = train.fn(cfg, history)
    assert trained.stopped_reason == "time_budget" and trained.epochs == 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "training stopped by time (training.time_budget_s = 1e-06 s) after 1 epochs, not reproducible: "
        "the same data and seed train further on a less busy machine"
    ]


def test_only_a_failed_fit_falls_back_and_only_when_the_config_says_so(tmp_path):
    def cfg(on_failure: str):
        settings = sensor_config_dict("sqlite:///x.db", tmp_path, training={"on_failure": on_failure})
        return parse_config(settings)

    diverged = TrainingFailed("training loss became nan in epoch 1; try a lower training.learning_rate")
    assert fallback_message(cfg("fallback"), diverged, "recent_median") == (
        "training failed (training loss became nan in epoch 1; try a lower training.learning_rate); "
        "training.on_failure = 'fallback': publishing the recent_median forecast"
    )
    assert fallback_message(cfg("fail"), diverged, "recent_median") is None
    assert fallback_message(cfg("fallback"), ValueError("a bug"), "recent_median") is None

import logging
import re

from tasks.clean import clean
from tasks.extract import extract
from tasks.train import train


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

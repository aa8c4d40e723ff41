import numpy as np
import pytest
import torch

import lstm_model.checkpoint as checkpoint_mod
from lstm_model.checkpoint import load_checkpoint, save_checkpoint
from lstm_model.config import ModelConfig, TrainConfig
from lstm_model.train import fit, predict


@pytest.fixture(scope="module")
def trained(make_panel):
    panel = make_panel(n_series=3, length=70, n_past=2, n_future=1)
    result = fit(
        panel,
        ModelConfig(lookback=12, horizon=4, hidden_size=8, num_layers=2, dropout=0.1),
        TrainConfig(max_epochs=2, steps_per_epoch=3, batch_size=16, max_val_windows=64, device="cpu"),
    )
    return panel, result


def test_round_trip_gives_identical_predictions_and_metadata(trained, tmp_path):
    panel, result = trained
    path = tmp_path / "models" / "model.pt"  # parent directory is created
    save_checkpoint(result, path)
    loaded = load_checkpoint(path)
    future = [np.full((4, 1), float(i % 2)) for i in range(3)]
    np.testing.assert_array_equal(predict(loaded, panel, future), predict(result, panel, future))
    assert loaded.model_config == result.model_config and loaded.train_config == result.train_config
    assert (loaded.past_names, loaded.future_names) == (("p0", "p1"), ("f0",))
    assert loaded.history == result.history
    assert (loaded.best_epoch, loaded.stopped_reason, loaded.device) == (
        result.best_epoch,
        result.stopped_reason,
        "cpu",
    )
    assert loaded.scaler.to_dict() == result.scaler.to_dict()
    assert not loaded.model.training
    assert (loaded.model.n_inputs, loaded.model.n_future) == (4, 1)


def test_checkpoint_is_plain_data_loadable_with_weights_only(trained, tmp_path):
    _, result = trained
    save_checkpoint(result, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", map_location="cpu", weights_only=True)
    assert payload["format_version"] == 1
    assert payload["past_names"] == ["p0", "p1"] and payload["future_names"] == ["f0"]
    assert (payload["n_inputs"], payload["n_future"]) == (4, 1)
    assert set(payload["state_dict"]) == set(result.model.state_dict())


def test_save_is_atomic_and_leaves_no_temp_files(trained, tmp_path, monkeypatch):
    _, result = trained
    path = tmp_path / "m.pt"
    save_checkpoint(result, path)
    good = path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]

    def crash(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_mod.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(result, path)
    assert path.read_bytes() == good  # the previous checkpoint is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # and the partial temp file is gone


def test_load_rejects_other_format_versions(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format_version": 99}, path)
    with pytest.raises(ValueError, match=r"has format_version 99; this code reads 1$"):
        load_checkpoint(path)


def test_load_rejects_incomplete_checkpoints(trained, tmp_path):
    _, result = trained
    save_checkpoint(result, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    del payload["scaler"]
    torch.save(payload, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=r"is missing 'scaler'$"):
        load_checkpoint(tmp_path / "broken.pt")

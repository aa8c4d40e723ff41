import dataclasses

import numpy as np
import pytest
import torch

import lstm_model.checkpoint as checkpoint_mod
from lstm_model.checkpoint import load_checkpoint, save_checkpoint
from lstm_model.config import ModelConfig
from lstm_model.prediction import predict
from lstm_model.train import fit


@pytest.fixture(scope="module")
def trained(make_panel, make_train):
    """Covariates, a series embedding and segments: every part of the model a checkpoint must carry."""
    panel = make_panel(n_series=3, length=70, n_past=2, n_future=1, noise=0.3)
    model_cfg = ModelConfig(
        lookback=12, horizon=4, hidden_size=8, num_layers=2, dropout=0.1, patch_len=3, embedding_dim=2
    )
    return panel, fit(panel, model_cfg, make_train())


def test_round_trip_gives_identical_predictions_and_metadata(trained, tmp_path):
    panel, result = trained
    path = tmp_path / "models" / "model.pt"  # parent directory is created
    save_checkpoint(result, path)
    loaded = load_checkpoint(path)
    future = [np.full((4, 1), float(i % 2)) for i in range(3)]
    np.testing.assert_array_equal(predict(loaded, panel, future), predict(result, panel, future))
    assert loaded.model_config == result.model_config and loaded.train_config == result.train_config
    assert loaded.model.n_series == result.model.n_series == 3
    np.testing.assert_array_equal(loaded.calibration, result.calibration)
    assert loaded.calibration.shape == (1, 4) and loaded.calibration.dtype == np.float64
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
    assert payload["format_version"] == 2
    assert payload["past_names"] == ["p0", "p1"] and payload["future_names"] == ["f0"]
    assert (payload["n_inputs"], payload["n_future"], payload["n_series"]) == (4, 1, 3)
    assert set(payload["state_dict"]) == set(result.model.state_dict())
    assert payload["model_config"]["quantiles"] == [0.1, 0.5, 0.9]  # plain list, not a tuple
    assert payload["calibration"].dtype == torch.float64
    torch.testing.assert_close(payload["calibration"], torch.from_numpy(result.calibration), rtol=0, atol=0)
    tensors = [payload["calibration"], *payload["state_dict"].values()]
    assert all(t.device.type == "cpu" for t in tensors)  # saved from any device, stored for the CPU


def test_load_maps_to_the_cpu_on_a_machine_without_cuda(trained, tmp_path, monkeypatch):
    """A checkpoint trained on a GPU must load on a CPU-only forecasting host: load_checkpoint reads
    with map_location='cpu' and weights_only=True, and rebuilds the model on the CPU."""
    panel, result = trained
    save_checkpoint(dataclasses.replace(result, device="cuda:0"), tmp_path / "m.pt")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    calls = []
    real_load = torch.load

    def spy_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(checkpoint_mod.torch, "load", spy_load)
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert calls == [{"map_location": "cpu", "weights_only": True}]
    assert loaded.device == "cuda:0"  # where it was trained, for the record
    assert all(p.device.type == "cpu" for p in loaded.model.parameters())
    future = [np.zeros((4, 1))] * 3
    np.testing.assert_array_equal(predict(loaded, panel, future), predict(result, panel, future))


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
    with pytest.raises(ValueError, match=r"has format_version 99; this code reads 2$"):
        load_checkpoint(path)


def test_load_rejects_incomplete_checkpoints(trained, tmp_path):
    _, result = trained
    save_checkpoint(result, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    del payload["scaler"]
    torch.save(payload, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=r"is missing 'scaler'$"):
        load_checkpoint(tmp_path / "broken.pt")


def test_load_rejects_a_calibration_that_does_not_fit_the_quantiles(trained, tmp_path):
    _, result = trained
    save_checkpoint(result, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["calibration"] = torch.zeros(2, 4, dtype=torch.float64)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as exc:
        load_checkpoint(tmp_path / "bad.pt")
    assert str(exc.value) == (
        f"checkpoint {str(tmp_path / 'bad.pt')!r}: calibration has shape (2, 4), expected (1, 4) "
        "(symmetric pairs of quantiles (0.1, 0.5, 0.9), horizon)"
    )


def test_a_file_with_cuda_storages_loads_on_a_cpu_only_machine(trained, tmp_path, monkeypatch):
    """Every storage in the file tagged 'cuda:0', as torch.save writes tensors that live on a GPU: a
    plain torch.load fails on this CPU-only machine, load_checkpoint maps them to the CPU."""
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA: here torch.load would place the tensors on the GPU")
    panel, result = trained
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        save_checkpoint(dataclasses.replace(result, device="cuda:0"), tmp_path / "gpu.pt")
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(tmp_path / "gpu.pt", weights_only=True)
    loaded = load_checkpoint(tmp_path / "gpu.pt")
    assert loaded.device == "cuda:0" and all(p.device.type == "cpu" for p in loaded.model.parameters())
    future = [np.zeros((4, 1))] * 3
    np.testing.assert_array_equal(predict(loaded, panel, future), predict(result, panel, future))

"""Precision, threads and data placement. No GPU here: CUDA paths run against patched torch.cuda functions."""

import numpy as np
import pytest
import torch

import lstm_model.runtime as runtime_mod
import lstm_model.train as train_mod
from lstm_model.config import ModelConfig
from lstm_model.device import select_device
from lstm_model.panel import Panel
from lstm_model.runtime import place_data, same_device, torch_threads, use_bf16
from lstm_model.train import fit
from lstm_model.windows import Batch, WindowSource

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def gpu(monkeypatch):
    """A fake CUDA device with the given compute capability (8.0 is Ampere, 7.5 Turing)."""

    def set_gpu(capability: tuple[int, int]) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.version, "hip", None)

    return set_gpu


@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_no_bf16_on_the_cpu(precision, gpu):
    assert use_bf16(CPU, precision) is False
    gpu((9, 0))  # even with a bf16-capable GPU in the machine
    assert use_bf16(CPU, precision) is False


def test_explicit_bf16_on_the_cpu_is_an_error_naming_the_setting_and_device():
    with pytest.raises(ValueError) as exc:
        use_bf16(CPU, "bf16")
    assert (
        str(exc.value)
        == "train.precision 'bf16' needs a CUDA device, but the device is cpu; use 'auto' or 'fp32'"
    )


def test_fit_refuses_explicit_bf16_on_the_cpu_before_training(make_panel, make_train, monkeypatch):
    monkeypatch.setattr(train_mod.SeriesScaler, "fit", lambda *a: pytest.fail("got past the precision check"))
    with pytest.raises(
        ValueError, match=r"^train.precision 'bf16' needs a CUDA device, but the device is cpu"
    ):
        fit(make_panel(), ModelConfig(lookback=12, horizon=4), make_train(precision="bf16"))


def test_auto_uses_bf16_only_on_gpus_with_native_support(gpu):
    gpu((8, 0))
    assert use_bf16(CUDA, "auto") is True and use_bf16(CUDA, "bf16") is True
    assert use_bf16(CUDA, "fp32") is False
    gpu((7, 5))  # bf16 is only emulated before Ampere: slower than fp32
    assert use_bf16(CUDA, "auto") is False


def test_explicit_bf16_on_an_old_gpu_fails_loudly(gpu):
    gpu((7, 5))
    with pytest.raises(RuntimeError) as exc:
        use_bf16(torch.device("cuda", 1), "bf16")
    assert str(exc.value) == (
        "train.precision 'bf16' requested but cuda:1 (compute capability 7.5) has no native bfloat16; "
        "use 'auto' or 'fp32'"
    )


def test_unknown_precision_is_a_value_error():
    with pytest.raises(
        ValueError, match=r"^train.precision must be one of \('auto', 'fp32', 'bf16'\), got 'fp16'$"
    ):
        use_bf16(CPU, "fp16")


def test_select_device_auto_picks_the_patched_gpu(gpu):
    gpu((8, 0))
    assert select_device("auto") == CUDA


def test_same_device_treats_plain_cuda_as_the_current_gpu(gpu):
    gpu((8, 0))  # current device 0
    assert same_device(CPU, CPU)
    assert not same_device(CPU, CUDA) and not same_device(CUDA, CPU)
    assert same_device(torch.device("cuda", 0), CUDA) and same_device(CUDA, torch.device("cuda", 0))
    assert not same_device(torch.device("cuda", 1), CUDA)
    assert same_device(torch.device("cuda", 1), torch.device("cuda", 1))


def tiny_source(n: int = 40) -> WindowSource:
    y = np.arange(n, dtype=np.float32)
    panel = Panel(("a",), (y,), (np.zeros((n, 0), np.float32),), (np.zeros((n, 0), np.float32),))
    return WindowSource.from_panel(panel, lookback=4, horizon=2)


def test_place_data_keeps_cpu_data_where_it_is(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: pytest.fail("asked a GPU"))
    source = tiny_source()
    assert place_data(source, CPU) is source


@pytest.mark.parametrize(("free", "moved"), [(10**9, True), (100, False)])
def test_place_data_moves_the_data_to_the_gpu_only_when_it_fits(monkeypatch, free, moved):
    """Data on the GPU when it takes at most half the free memory; otherwise batches are copied."""
    source = tiny_source()  # 40 rows x 1 column x 4 bytes = 160 bytes
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    moved_to = []
    monkeypatch.setattr(WindowSource, "to", lambda self, device: moved_to.append(device) or self)
    placed = place_data(source, CUDA)
    assert placed is source and moved_to == ([CUDA] if moved else [])


def test_batch_to_the_cpu_keeps_every_field():
    batch = tiny_source().gather(np.array([0, 3]))
    assert isinstance(batch, Batch) and batch._fields == ("x_past", "x_future", "y", "series")
    moved = batch.to(CPU)
    assert isinstance(moved, Batch)
    for a, b in zip(batch, moved, strict=True):
        assert torch.equal(a, b)


def test_torch_threads_sets_and_restores_the_thread_count(monkeypatch):
    torch.set_num_threads(1)
    with torch_threads(2) as n:
        assert n == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1
    monkeypatch.setattr(runtime_mod, "available_cores", lambda: 3)
    with torch_threads(None) as n:  # default: every core this process may run on
        assert n == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == 1
    with pytest.raises(KeyError), torch_threads(2):
        raise KeyError("boom")
    assert torch.get_num_threads() == 1  # restored on errors too


def test_fit_runs_with_the_configured_threads_and_restores_them(monkeypatch, make_train):
    seen = []
    monkeypatch.setattr(train_mod, "_fit", lambda *args: seen.append(torch.get_num_threads()) or "result")
    torch.set_num_threads(1)
    assert fit(None, None, make_train(threads=2)) == "result"  # type: ignore[arg-type]
    assert seen == [2] and torch.get_num_threads() == 1

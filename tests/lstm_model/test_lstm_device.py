import pytest
import torch

from lstm_model.device import select_device


@pytest.fixture
def cuda(monkeypatch):
    def set_cuda(available: bool, count: int = 1) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count if available else 0)

    return set_cuda


def test_auto_prefers_cuda_when_available(cuda):
    cuda(True)
    assert select_device("auto") == torch.device("cuda")
    cuda(False)
    assert select_device("auto") == torch.device("cpu")


def test_cpu_is_cpu_even_with_cuda(cuda):
    cuda(True)
    assert select_device("cpu") == torch.device("cpu")


def test_explicit_cuda_when_available(cuda):
    cuda(True, count=2)
    assert select_device("cuda") == torch.device("cuda")
    assert select_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("preference", ["cuda", "cuda:0"])
def test_explicit_cuda_without_cuda_fails_loudly(cuda, preference):
    cuda(False)
    with pytest.raises(RuntimeError) as exc:
        select_device(preference)
    assert str(exc.value) == f"device '{preference}' requested but CUDA is not available"


def test_cuda_index_out_of_range(cuda):
    cuda(True, count=1)
    with pytest.raises(RuntimeError) as exc:
        select_device("cuda:3")
    assert str(exc.value) == "device 'cuda:3' requested but only 1 CUDA device(s) exist"


@pytest.mark.parametrize("preference", ["gpu", "", "CUDA", "cuda:", None])
def test_unknown_preference_is_a_value_error(cuda, preference):
    cuda(True)
    with pytest.raises(ValueError) as exc:
        select_device(preference)  # type: ignore[arg-type]
    assert str(exc.value) == f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {preference!r}"

"""Where and how the computation runs: CPU threads, bf16 autocast, and whether the data lives on the GPU."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from lstm_model.config import PRECISIONS
from lstm_model.windows import WindowSource

GPU_DATA_FRACTION = 0.5  # keep the data on the GPU when it takes at most this share of free memory


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run with `n` intra-op threads (default: every available core), restoring the setting after."""
    before = torch.get_num_threads()
    n = n or available_cores()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def use_bf16(device: torch.device, precision: str) -> bool:
    """Whether to train under bf16 autocast.

    'auto' uses it on CUDA devices with native bf16 (compute capability 8.0+, or ROCm) and fp32 elsewhere:
    on the CPU bf16 LSTMs are slower, and older GPUs only emulate bf16, slowly. An explicit 'bf16' that
    cannot be honoured is an error, like an explicit 'cuda' without a GPU, not a silent fp32 run.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return False
    if device.type != "cuda":
        if precision == "bf16":
            raise ValueError(
                f"train.precision 'bf16' needs a CUDA device, but the device is {device}; "
                "use 'auto' or 'fp32'"
            )
        return False
    if torch.version.hip:
        return True
    major, minor = torch.cuda.get_device_capability(device)
    if precision == "bf16" and major < 8:
        raise RuntimeError(
            f"train.precision 'bf16' requested but {device} (compute capability {major}.{minor}) has no "
            "native bfloat16; use 'auto' or 'fp32'"
        )
    return major >= 8


def same_device(a: torch.device, b: torch.device) -> bool:
    """torch.device("cuda") means the current GPU, which a tensor reports as "cuda:N": plain == would call
    them different and copy (and try to pin) a batch that is already on the GPU."""
    if a.type != b.type:
        return False
    if a.type != "cuda" or a.index == b.index:
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def place_data(source: WindowSource, device: torch.device) -> WindowSource:
    """Data on the GPU when it fits comfortably (batches are then gathered there, with no copies);
    otherwise it stays in host memory and each batch travels through pinned memory."""
    if device.type != "cuda":
        return source
    free, _ = torch.cuda.mem_get_info(device)
    if source.values.numel() * source.values.element_size() <= GPU_DATA_FRACTION * free:
        return source.to(device)
    return source

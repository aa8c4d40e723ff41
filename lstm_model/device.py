"""Device selection.

An explicit "cuda" request fails loudly instead of silently training on CPU for hours.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_CUDA_RE = re.compile(r"cuda(:\d+)?")


def is_valid_device_string(preference: str) -> bool:
    """Whether `preference` is one of "auto", "cpu", "cuda", "cuda:N" (shared with config validation)."""
    return preference in ("auto", "cpu") or _CUDA_RE.fullmatch(preference) is not None


def select_device(preference: str) -> torch.device:
    """Map a config device string to a torch.device; "auto" prefers CUDA when present."""
    import torch  # here, not at module level: config validation uses this module without needing torch

    if not isinstance(preference, str) or not is_valid_device_string(preference):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {preference!r}")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device '{preference}' requested but CUDA is not available")
    device = torch.device(preference)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise RuntimeError(
            f"device '{preference}' requested but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return device

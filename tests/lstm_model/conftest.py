"""Fixtures for the lstm_model tests: small synthetic panels and tiny configs (CPU, a few steps)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from lstm_model import ModelConfig, Panel, TrainConfig


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    """Overrides the suite-wide Prefect test server: lstm_model does not use Prefect, so start none."""
    yield


@pytest.fixture(scope="module", autouse=True)
def _single_torch_thread():
    """Tiny models gain nothing from intra-op threads, but 2 OpenMP threads competing with another
    busy process (a parallel test run, a demo) made this folder ~8x slower; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sine_panel(
    n_series: int = 3,
    length: int = 120,
    *,
    period: int = 12,
    stagger: int = 10,
    n_past: int = 0,
    n_future: int = 0,
    noise: float = 0.0,
    seed: int = 0,
) -> Panel:
    """Level + sine + slight trend per series; series i starts `i * stagger` steps later (end-aligned).

    Future covariate 0 is a 0/1 flag that adds to the target, so it carries real signal.
    """
    rng = np.random.default_rng(seed)
    ids, target, past, future = [], [], [], []
    for i in range(n_series):
        t_len = length - i * stagger
        t = np.arange(length - t_len, length)  # global time of each step: aligned at the end
        fut = rng.integers(0, 2, size=(t_len, n_future)).astype(np.float32)
        y = 10.0 * (i + 1) + 3.0 * np.sin(2 * np.pi * t / period) + 0.02 * t
        y = y + noise * rng.standard_normal(t_len)
        if n_future:
            y = y + 2.0 * fut[:, 0]
        ids.append(f"s{i}")
        target.append(y.astype(np.float32))
        past.append(rng.standard_normal((t_len, n_past)).astype(np.float32))
        future.append(fut)
    return Panel(
        series_ids=tuple(ids),
        target=tuple(target),
        past_covariates=tuple(past),
        future_covariates=tuple(future),
        past_names=tuple(f"p{j}" for j in range(n_past)),
        future_names=tuple(f"f{j}" for j in range(n_future)),
    )


@pytest.fixture(scope="session")
def make_panel() -> Callable[..., Panel]:
    return sine_panel


@pytest.fixture
def tiny_model() -> ModelConfig:
    return ModelConfig(lookback=12, horizon=4, hidden_size=8, num_layers=2, dropout=0.1)


def tiny_train_config(**overrides) -> TrainConfig:
    """A few CPU steps on one thread: fit's default (threads=None: every core) would override the
    fixture above, and 2 threads on a busy 2-core machine made one tiny fit take ~10 s instead of 0.1 s."""
    kwargs = dict(max_epochs=2, steps_per_epoch=3, batch_size=16, max_val_windows=64, device="cpu", threads=1)
    return TrainConfig(**{**kwargs, **overrides})


@pytest.fixture(scope="session")
def make_train() -> Callable[..., TrainConfig]:
    return tiny_train_config


@pytest.fixture
def tiny_train() -> TrainConfig:
    return tiny_train_config()

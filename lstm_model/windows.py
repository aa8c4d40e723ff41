"""Training windows without materialising them.

A window is (series, start). All series' scaled features are concatenated ONCE into one float32
array (N_total, 1+P+F); a window is then just a start row in it, and a batch is gathered with index
arithmetic (`starts[:, None] + arange(lookback + horizon)`). Memory is O(data + batch) instead of
O(data x lookback), which is what lets a long hourly history train on a laptop.

Windows of a series are contiguous ranges of start rows, so the sets of train/validation windows are
kept as per-series (first start, count) ranges: O(n_series) memory, not one index per window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from lstm_model.panel import Panel
from lstm_model.scaling import SeriesScaler

FILL_CHUNK = 1 << 16  # rows scaled at a time while building the concatenated array


def n_val_steps(length: int, horizon: int, val_fraction: float) -> int:
    """Number of trailing steps of a series that hold validation targets (at least `horizon`)."""
    # The small epsilon keeps float noise (e.g. 0.55 * 100 = 55.00000000000001) from adding a step.
    return max(horizon, math.ceil(val_fraction * length - 1e-9))


@dataclass(frozen=True)
class StartRanges:
    """Per series, the contiguous range of valid window starts (rows of the concatenated array)."""

    first: np.ndarray  # (n_series,) int64: first start row of each series' range
    count: np.ndarray  # (n_series,) int64: number of windows in it (0 when the series has none)

    @property
    def total(self) -> int:
        return int(self.count.sum())

    def at(self, k: np.ndarray) -> np.ndarray:
        """Map flat window numbers k in [0, total) to start rows."""
        cum = np.concatenate([[0], np.cumsum(self.count)])
        series = np.searchsorted(cum, k, side="right") - 1  # range that contains window k
        return self.first[series] + (k - cum[series])

    def all(self) -> np.ndarray:
        return self.at(np.arange(self.total, dtype=np.int64))

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Uniform over all windows (with replacement), so longer series contribute proportionally more."""
        if self.total == 0:
            raise ValueError("cannot sample from an empty set of windows")
        return self.at(rng.integers(0, self.total, size=size, dtype=np.int64))

    def evenly(self, max_n: int) -> np.ndarray:
        """All starts, or `max_n` evenly spaced ones: a deterministic, representative validation set."""
        total = self.total
        if total <= max_n:
            return self.all()
        return self.at(np.unique(np.linspace(0, total - 1, max_n).round().astype(np.int64)))


def valid_start_counts(lengths: np.ndarray, lookback: int, horizon: int) -> np.ndarray:
    """Number of windows (lookback + horizon steps, inside one series) per series."""
    return np.maximum(np.asarray(lengths, dtype=np.int64) - (lookback + horizon) + 1, 0)


def split_starts(
    lengths: np.ndarray, offsets: np.ndarray, lookback: int, horizon: int, val_fraction: float
) -> tuple[StartRanges, StartRanges]:
    """Train and validation window starts.

    Validation windows are those whose target span ends inside the last `n_val_steps` of their
    series; training windows' target spans end before that region, so no training target is a
    validation target's final step and the validation score measures the most recent period.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    window = lookback + horizon
    n_val = np.array([n_val_steps(int(t), horizon, val_fraction) for t in lengths], dtype=np.int64)
    all_count = valid_start_counts(lengths, lookback, horizon)
    # A window starting at local s has its last target at s + window - 1; it is a validation window
    # iff that is >= T - n_val, i.e. s >= T - n_val - window + 1.
    train_count = np.clip(lengths - n_val - window + 1, 0, all_count)
    train = StartRanges(first=offsets[:-1].copy(), count=train_count)
    val = StartRanges(first=offsets[:-1] + train_count, count=all_count - train_count)
    return train, val


class WindowSource:
    """Concatenated scaled features of a panel plus the index arithmetic to gather batches."""

    def __init__(
        self,
        values: torch.Tensor,
        offsets: np.ndarray,
        lookback: int,
        horizon: int,
        n_past: int,
        n_future: int,
        codes: np.ndarray | None = None,
    ) -> None:
        self.values = values  # (N_total, 1+P+F) float32; column 0 is the scaled target
        self.offsets = offsets  # (n_series+1,) int64: series i occupies rows [offsets[i], offsets[i+1])
        self.lookback, self.horizon = lookback, horizon
        self.n_past, self.n_future = n_past, n_future
        # Series index each panel position is known by to the model (its embedding row).
        self.codes = np.arange(len(offsets) - 1, dtype=np.int64) if codes is None else codes
        self._arange = torch.arange(lookback + horizon, device=values.device)

    @classmethod
    def from_panel(
        cls, panel: Panel, lookback: int, horizon: int, scaler: SeriesScaler | None = None
    ) -> WindowSource:
        """Concatenate (and, with `scaler`, scale) all series into one preallocated array.

        With a scaler, batches name series by their position in the scaler (the training panel's
        order), which is what a model's series embedding expects.

        Scaling while filling avoids holding a scaled copy of the panel next to the array.
        """
        lengths = panel.lengths()
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        p, f = panel.n_past, panel.n_future
        values = np.empty((int(offsets[-1]), 1 + p + f), dtype=np.float32)
        for i, sid in enumerate(panel.series_ids):
            # Fill in chunks: scaling works in float64, and a whole long series' temporaries would
            # briefly cost several times the size of the final array.
            for lo in range(0, int(lengths[i]), FILL_CHUNK):
                local = slice(lo, lo + FILL_CHUNK)
                rows = slice(offsets[i] + lo, offsets[i] + min(lo + FILL_CHUNK, int(lengths[i])))
                y = panel.target[i][local]
                past, fut = panel.past_covariates[i][local], panel.future_covariates[i][local]
                if scaler is not None:
                    y = scaler.transform_target(sid, y)
                    past, fut = scaler.transform_past(sid, past), scaler.transform_future(sid, fut)
                values[rows, 0] = y
                values[rows, 1 : 1 + p] = past
                values[rows, 1 + p :] = fut
        codes = None if scaler is None else scaler.positions(panel.series_ids)
        return cls(torch.from_numpy(values), offsets, lookback, horizon, p, f, codes)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def to(self, device: torch.device) -> WindowSource:
        """Same source with the data on `device`, so batches are gathered there (no per-batch copy)."""
        values = self.values.to(device)
        return WindowSource(
            values, self.offsets, self.lookback, self.horizon, self.n_past, self.n_future, self.codes
        )

    def split(self, val_fraction: float) -> tuple[StartRanges, StartRanges]:
        return split_starts(self.lengths, self.offsets, self.lookback, self.horizon, val_fraction)

    def series_of(self, starts: np.ndarray) -> np.ndarray:
        """Series index (panel order) of each window start row."""
        return np.searchsorted(self.offsets, np.asarray(starts, dtype=np.int64), side="right") - 1

    def gather(self, starts: np.ndarray) -> Batch:
        """Batch for window start rows `starts` (batch,)."""
        starts = np.asarray(starts, dtype=np.int64)
        starts_t = torch.as_tensor(starts, device=self.values.device)
        idx = starts_t[:, None] + self._arange  # (batch, lookback + horizon)
        block = self.values[idx]  # (batch, lookback + horizon, 1+P+F)
        lb = self.lookback
        x_past = block[:, :lb, :]  # (batch, lookback, 1+P+F)
        x_future = block[:, lb:, 1 + self.n_past :]  # (batch, horizon, F)
        y = block[:, lb:, 0]  # (batch, horizon)
        series = torch.as_tensor(self.codes[self.series_of(starts)], device=self.values.device)  # (batch,)
        # Copies, not .contiguous(): an empty x_future (no future covariates) already counts as
        # contiguous, and that view would keep the whole gathered block alive with the batch.
        fields = (t.clone(memory_format=torch.contiguous_format) for t in (x_past, x_future, y))
        return Batch(*fields, series)


class Batch(NamedTuple):
    x_past: torch.Tensor  # (batch, lookback, 1+P+F)
    x_future: torch.Tensor  # (batch, horizon, F)
    y: torch.Tensor  # (batch, horizon): scaled targets
    series: torch.Tensor  # (batch,) int64: embedding row (scaler position; panel order without a scaler)

    def to(self, device: torch.device) -> Batch:
        """Copy to `device`; host tensors bound for CUDA go through pinned memory, so the copy overlaps
        with compute. Only host memory can be pinned, so tensors already on a GPU are copied directly."""
        if device.type != "cuda":
            return Batch(*(t.to(device) for t in self))
        pinned = (t.pin_memory() if t.device.type == "cpu" else t for t in self)
        return Batch(*(t.to(device, non_blocking=True) for t in pinned))

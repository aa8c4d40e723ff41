import tracemalloc

import numpy as np
import pytest
import torch

from lstm_model.panel import Panel
from lstm_model.scaling import SeriesScaler
from lstm_model.windows import Batch, StartRanges, WindowSource, n_val_steps, split_starts, valid_start_counts


def indexed_panel(lengths, n_past=1, n_future=1) -> Panel:
    """Values encode their row in the concatenated array, so gathered batches can be checked exactly."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    rows = [np.arange(offsets[i], offsets[i + 1], dtype=np.float32) for i in range(len(lengths))]
    return Panel(
        series_ids=tuple(f"s{i}" for i in range(len(lengths))),
        target=tuple(rows),
        past_covariates=tuple(np.repeat(1000 + r[:, None], n_past, axis=1) for r in rows),
        future_covariates=tuple(np.repeat(-r[:, None], n_future, axis=1) for r in rows),
        past_names=tuple(f"p{j}" for j in range(n_past)),
        future_names=tuple(f"f{j}" for j in range(n_future)),
    )


def test_n_val_steps():
    assert n_val_steps(100, 5, 0.1) == 10
    assert n_val_steps(30, 5, 0.1) == 5  # at least one horizon
    assert n_val_steps(101, 1, 0.1) == 11  # rounds up
    assert n_val_steps(100, 1, 0.55) == 55  # 0.55 * 100 is 55.000000000000007 in floating point


def test_valid_start_counts():
    np.testing.assert_array_equal(valid_start_counts(np.array([10, 6, 5, 3]), 3, 3), [5, 1, 0, 0])


def test_split_starts_by_hand():
    lengths = np.array([20, 12])
    offsets = np.array([0, 20, 32])
    train, val = split_starts(lengths, offsets, lookback=4, horizon=2, val_fraction=0.25)
    # s0: n_val = 5 -> targets from local 15 on; window 6: train starts 0..9, val starts 10..14.
    # s1: n_val = 3 -> train local 0..3 (global 20..23), val local 4..6 (global 24..26).
    np.testing.assert_array_equal(train.all(), [*range(0, 10), *range(20, 24)])
    np.testing.assert_array_equal(val.all(), [*range(10, 15), *range(24, 27)])


@pytest.mark.parametrize("val_fraction", [0.05, 0.2, 0.5])
def test_windows_stay_in_one_series_and_train_targets_end_before_validation(val_fraction):
    lengths = np.array([50, 31, 17, 9, 80])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    lookback, horizon = 6, 3
    window = lookback + horizon
    train, val = split_starts(lengths, offsets, lookback, horizon, val_fraction)
    every = np.concatenate([offsets[i] + np.arange(max(0, t - window + 1)) for i, t in enumerate(lengths)])
    got_train, got_val = train.all(), val.all()
    np.testing.assert_array_equal(np.sort(np.concatenate([got_train, got_val])), every)  # a partition
    for starts, is_val in ((got_train, False), (got_val, True)):
        series = np.searchsorted(offsets, starts, side="right") - 1
        local = starts - offsets[series]
        assert (local + window <= lengths[series]).all()  # never crosses into the next series
        last_target = local + window - 1
        val_begin = np.array([t - n_val_steps(int(t), horizon, val_fraction) for t in lengths])[series]
        assert ((last_target >= val_begin) == is_val).all()


def test_gather_returns_the_right_slices():
    panel = indexed_panel([20, 12], n_past=2, n_future=1)
    source = WindowSource.from_panel(panel, lookback=4, horizon=3)
    assert source.values.dtype == torch.float32 and tuple(source.values.shape) == (32, 4)
    starts = np.array([0, 13, 20, 25])
    batch = source.gather(starts)
    assert isinstance(batch, Batch)
    x_past, x_future, y, series = batch
    assert tuple(x_past.shape) == (4, 4, 4)  # (batch, lookback, 1 + P + F)
    assert tuple(x_future.shape) == (4, 3, 1)  # (batch, horizon, F)
    assert tuple(y.shape) == (4, 3)
    assert series.dtype == torch.int64 and series.tolist() == [0, 0, 1, 1]  # rows 20.. belong to s1
    for b, s in enumerate(starts):
        np.testing.assert_array_equal(x_past[b, :, 0], np.arange(s, s + 4))
        np.testing.assert_array_equal(x_past[b, :, 1], 1000 + np.arange(s, s + 4))
        np.testing.assert_array_equal(x_past[b, :, 3], -np.arange(s, s + 4))
        np.testing.assert_array_equal(y[b], np.arange(s + 4, s + 7))
        np.testing.assert_array_equal(x_future[b, :, 0], -np.arange(s + 4, s + 7))


def test_from_panel_scales_each_series_with_its_own_statistics(make_panel):
    panel = make_panel(n_series=2, length=30, n_past=1, n_future=1)
    scaler = SeriesScaler().fit(panel)
    source = WindowSource.from_panel(panel, lookback=4, horizon=2, scaler=scaler)
    values = source.values.numpy()
    np.testing.assert_array_equal(values[30:, 0], scaler.transform_target("s1", panel.target[1]))
    np.testing.assert_array_equal(values[:30, 2:], scaler.transform_future("s0", panel.future_covariates[0]))


def test_gather_without_covariates_has_empty_future():
    source = WindowSource.from_panel(indexed_panel([10], n_past=0, n_future=0), lookback=3, horizon=2)
    batch = source.gather(np.array([0, 5]))
    assert tuple(batch.x_past.shape) == (2, 3, 1)
    assert tuple(batch.x_future.shape) == (2, 2, 0)
    assert tuple(batch.y.shape) == (2, 2)
    assert tuple(batch.series.shape) == (2,)


def test_batches_name_series_by_their_position_in_the_scaler():
    """The series embedding was trained on scaler positions, so a reordered or partial panel must
    still map each series to its own row (and `to` must keep the mapping)."""
    panel = indexed_panel([8, 6, 7])
    scaler = SeriesScaler().fit(panel)
    plain = WindowSource.from_panel(panel.select(["s2", "s0"]), lookback=2, horizon=1)
    scaled = WindowSource.from_panel(panel.select(["s2", "s0"]), lookback=2, horizon=1, scaler=scaler)
    starts = np.array([0, 4, 7, 10])  # s2 occupies rows 0..6, s0 rows 7..14
    np.testing.assert_array_equal(plain.series_of(starts), [0, 0, 1, 1])
    assert plain.gather(starts).series.tolist() == [0, 0, 1, 1]  # panel order without a scaler
    assert scaled.gather(starts).series.tolist() == [2, 2, 0, 0]
    assert scaled.to(torch.device("cpu")).gather(starts).series.tolist() == [2, 2, 0, 0]


def test_sampling_is_seeded_uniform_and_only_from_the_given_windows():
    ranges = StartRanges(first=np.array([0, 100]), count=np.array([10, 30]))
    a = ranges.sample(np.random.default_rng(3), 4000)
    b = ranges.sample(np.random.default_rng(3), 4000)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, ranges.sample(np.random.default_rng(4), 4000))
    assert set(np.unique(a)) == set(range(10)) | set(range(100, 130))
    assert 0.2 < (a < 100).mean() < 0.3  # 10 of the 40 windows belong to the first series
    with pytest.raises(ValueError, match="cannot sample from an empty set of windows"):
        StartRanges(np.array([0]), np.array([0])).sample(np.random.default_rng(0), 1)


def test_evenly_caps_validation_windows_deterministically():
    ranges = StartRanges(first=np.array([0, 100]), count=np.array([10, 30]))
    np.testing.assert_array_equal(ranges.evenly(100), ranges.all())
    # flat window numbers round(linspace(0, 39, 5)) = 0, 10, 20, 29, 39; numbers >= 10 are in series 2
    np.testing.assert_array_equal(ranges.evenly(5), [0, 100, 110, 119, 129])


def storage_bytes(obj) -> int:
    """Bytes behind every tensor and array an object holds (a tensor's whole storage, not its view)."""
    total = 0
    for value in vars(obj).values():
        if isinstance(value, torch.Tensor):
            total += value.untyped_storage().nbytes()
        elif isinstance(value, np.ndarray):
            total += value.nbytes
    return total


def test_memory_is_one_times_the_data_not_times_lookback():
    """2,000,000 steps with lookback 512: materialised windows would need n_windows x lookback x 4 bytes
    (about 4 GB); the source holds the scaled data once and a batch holds only its own windows."""
    n, lookback, horizon, batch = 2_000_000, 512, 24, 256
    window = lookback + horizon
    y = np.sin(np.arange(n, dtype=np.float32) / 24)
    panel = Panel(("long",), (y,), (np.zeros((n, 0), np.float32),), (np.zeros((n, 0), np.float32),))
    scaler = SeriesScaler().fit(panel)
    data_bytes = n * 4
    n_windows = n - window + 1

    tracemalloc.start()
    source = WindowSource.from_panel(panel, lookback, horizon, scaler)
    train, val = source.split(0.1)
    _, build_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert source.values.numpy().nbytes == data_bytes  # exactly one copy of the (scaled) data
    np.testing.assert_array_equal(source.values.numpy()[-999:, 0], scaler.transform_target("long", y[-999:]))
    assert build_peak < 1.5 * data_bytes  # building it never held more than ~1x, let alone lookback x
    # Everything the source keeps, torch storages included (tracemalloc sees only numpy's allocations):
    # the data plus a few small arrays.
    assert storage_bytes(source) < data_bytes + 64 * 1024
    assert train.first.nbytes + train.count.nbytes + val.first.nbytes + val.count.nbytes <= 64  # O(series)
    assert train.total + val.total == n_windows

    starts = train.sample(np.random.default_rng(0), batch)
    tracemalloc.start()
    gathered = source.gather(starts)
    _, gather_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    batch_bytes = batch * window * 4
    # Each field is its own compact tensor of exactly its shape, not a view of something larger.
    for t in gathered:
        assert t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    assert sum(t.numel() for t in gathered[:3]) == batch * window  # O(batch): x_past + x_future + y
    assert sum(t.untyped_storage().nbytes() for t in gathered) <= batch_bytes + batch * 8
    assert gather_peak < 64 * 1024  # the host-side index arithmetic is O(batch) too
    assert batch_bytes * 1000 < n_windows * lookback * 4  # the margin those bounds leave

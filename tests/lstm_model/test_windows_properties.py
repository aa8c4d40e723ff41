"""Properties of the training windows and backtest folds on generated panels.

A window is lookback + horizon consecutive steps of one series; the training/validation split and the
backtest folds must never let a model fit the targets it is then scored on.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lstm_model.backtest import fold_cutoffs, fold_plan
from lstm_model.panel import Panel
from lstm_model.windows import WindowSource, n_val_steps, split_starts, valid_start_counts

SETTINGS = settings(max_examples=50, deadline=None)

lengths_st = st.lists(st.integers(1, 60), min_size=1, max_size=6)
lookbacks = st.integers(1, 12)
horizons = st.integers(1, 6)
fractions = st.floats(0.01, 0.99)


def offsets_of(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def row_panel(lengths: list[int], n_past: int, n_future: int) -> Panel:
    """Every value is its row in the concatenated array (covariates offset and negated), so a gathered
    window shows exactly which rows it came from."""
    offsets = offsets_of(lengths)
    rows = [np.arange(offsets[i], offsets[i + 1], dtype=np.float32) for i in range(len(lengths))]
    return Panel(
        series_ids=tuple(f"s{i}" for i in range(len(lengths))),
        target=tuple(rows),
        past_covariates=tuple(np.repeat(10_000 + r[:, None], n_past, axis=1) for r in rows),
        future_covariates=tuple(np.repeat(-r[:, None], n_future, axis=1) for r in rows),
        past_names=tuple(f"p{j}" for j in range(n_past)),
        future_names=tuple(f"f{j}" for j in range(n_future)),
    )


@SETTINGS
@given(lengths=lengths_st, lookback=lookbacks, horizon=horizons, val_fraction=fractions)
def test_split_is_a_partition_of_windows_inside_one_series(lengths, lookback, horizon, val_fraction):
    offsets = offsets_of(lengths)
    window = lookback + horizon
    train, val = split_starts(np.array(lengths), offsets, lookback, horizon, val_fraction)
    counts = valid_start_counts(np.array(lengths), lookback, horizon)
    np.testing.assert_array_equal(counts, [max(t - lookback - horizon + 1, 0) for t in lengths])
    np.testing.assert_array_equal(train.count + val.count, counts)  # per series, nothing lost or added

    got_train, got_val = train.all(), val.all()
    every = np.concatenate([offsets[i] + np.arange(c) for i, c in enumerate(counts)]).astype(np.int64)
    assert len(got_train) == train.total and len(got_val) == val.total
    assert not set(got_train) & set(got_val)
    np.testing.assert_array_equal(np.sort(np.concatenate([got_train, got_val])), every)

    for starts, is_val in ((got_train, False), (got_val, True)):
        assert (np.diff(starts) > 0).all()
        series = np.searchsorted(offsets, starts, side="right") - 1
        local = starts - offsets[series]
        length = np.array(lengths)[series]
        assert (local >= 0).all() and (local + window <= length).all()  # inside one series
        n_val = np.array([n_val_steps(int(t), horizon, val_fraction) for t in length], dtype=np.int64)
        last_target = local + window - 1
        # Training targets all lie before the validation tail; every validation window ends inside it.
        assert ((last_target >= length - n_val) == is_val).all()

    for t, c, v in zip(lengths, counts, val.count, strict=True):
        n_val = n_val_steps(t, horizon, val_fraction)
        assert n_val >= horizon and n_val >= val_fraction * t - 1e-9
        assert n_val == horizon or n_val < val_fraction * t + 1
        assert v == min(c, n_val)  # the last n_val windows of a series validate, or all it has


@SETTINGS
@given(
    lengths=lengths_st,
    lookback=lookbacks,
    horizon=horizons,
    n_past=st.integers(0, 2),
    n_future=st.integers(0, 2),
    data=st.data(),
)
def test_gathered_windows_are_the_rows_they_name(lengths, lookback, horizon, n_past, n_future, data):
    window = lookback + horizon
    source = WindowSource.from_panel(row_panel(lengths, n_past, n_future), lookback, horizon)
    np.testing.assert_array_equal(source.offsets, offsets_of(lengths))
    train, val = source.split(data.draw(fractions, label="val_fraction"))
    everything = np.sort(np.concatenate([train.all(), val.all()]))
    if not len(everything):
        return
    starts = np.array(data.draw(st.lists(st.sampled_from(list(everything)), min_size=1, max_size=20)))
    batch = source.gather(starts)
    series = source.series_of(starts)
    assert batch.series.tolist() == series.tolist()
    for b, s in enumerate(starts):
        assert source.offsets[series[b]] <= s and s + window <= source.offsets[series[b] + 1]
        np.testing.assert_array_equal(batch.x_past[b, :, 0].numpy(), np.arange(s, s + lookback))
        np.testing.assert_array_equal(batch.y[b].numpy(), np.arange(s + lookback, s + window))
        if n_past:
            np.testing.assert_array_equal(batch.x_past[b, :, 1].numpy(), 10_000 + np.arange(s, s + lookback))
        if n_future:
            np.testing.assert_array_equal(
                batch.x_future[b, :, 0].numpy(), -np.arange(s + lookback, s + window)
            )
    assert tuple(batch.x_future.shape) == (len(starts), horizon, n_future)


@SETTINGS
@given(lengths=lengths_st, max_n=st.integers(2, 50), seed=st.integers(0, 2**16))
def test_evenly_and_sample_pick_only_existing_windows(lengths, max_n, seed):
    train, val = split_starts(np.array(lengths), offsets_of(lengths), 2, 1, 0.3)
    for ranges in (train, val):
        every = ranges.all()
        picked = ranges.evenly(max_n)
        assert len(picked) == min(len(every), max_n)
        assert set(picked) <= set(every) and (np.diff(picked) > 0).all()
        if len(every):
            assert picked[0] == every[0] and picked[-1] == every[-1]  # spans the whole range
            drawn = ranges.sample(np.random.default_rng(seed), 64)
            assert set(drawn) <= set(every)


@SETTINGS
@given(lengths=lengths_st, lookback=lookbacks, horizon=horizons, n_folds=st.integers(1, 4))
def test_backtest_folds_test_only_steps_after_their_training_data(lengths, lookback, horizon, n_folds):
    panel = row_panel(lengths, 0, 0)
    n_steps, window = panel.n_steps, lookback + horizon
    if n_steps - n_folds * horizon < 1:
        return  # fold_cutoffs refuses: no training data would be left
    cutoffs = fold_cutoffs(n_steps, horizon, n_folds)
    # The test blocks are the last n_folds * horizon steps, in order, each horizon long, none shared.
    assert cutoffs == [n_steps - (n_folds - k) * horizon for k in range(n_folds)]
    if not any(t - n_steps + c >= window for c in cutoffs for t in lengths):
        return  # fold_plan refuses: no series has a window before any cutoff
    for cutoff, ids in fold_plan(panel, horizon, window, n_folds):
        for sid in set(panel.series_ids) - set(ids):  # left out only for want of a window before the cutoff
            assert lengths[panel.index(sid)] - n_steps + cutoff < window
        if not ids:
            continue
        train = panel.truncate(cutoff).select(ids)
        test = panel.slice_global(cutoff, cutoff + horizon).select(ids)
        for i in range(len(ids)):
            # The values are row numbers: every training row comes before every test row of the series.
            assert len(train.target[i]) >= window and len(test.target[i]) == horizon
            assert train.target[i].max() < test.target[i].min()

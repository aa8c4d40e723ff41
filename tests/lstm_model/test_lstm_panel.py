import numpy as np
import pandas as pd
import pytest

from lstm_model.panel import Panel


def long_frame() -> pd.DataFrame:
    """Series 'b' starts 2 steps after 'a'; both end at ts=4. Rows interleaved, sorted within series."""
    return pd.DataFrame(
        {
            "series_id": ["a", "a", "a", "b", "a", "b", "a", "b"],
            "ts": [0, 1, 2, 2, 3, 3, 4, 4],
            "y": [1.0, 2.0, 3.0, 10.0, 4.0, 11.0, 5.0, 12.0],
            "temp": [0.1, 0.2, 0.3, 1.0, 0.4, 1.1, 0.5, 1.2],
            "promo": [0, 0, 1, 1, 0, 0, 1, 0],
        }
    )


def simple_panel(lengths=(5, 3)) -> Panel:
    ids = tuple(f"s{i}" for i in range(len(lengths)))
    target = tuple(np.arange(n, dtype=np.float32) + 100 * i for i, n in enumerate(lengths))
    past = tuple(np.arange(n, dtype=np.float32)[:, None] for n in lengths)
    future = tuple(np.zeros((n, 0), np.float32) for n in lengths)
    return Panel(ids, target, past, future, past_names=("p",))


def test_from_frame_groups_series_in_order_of_appearance():
    p = Panel.from_frame(long_frame(), past=["temp"], future=["promo"])
    assert p.series_ids == ("a", "b")
    np.testing.assert_array_equal(p.lengths(), [5, 3])
    np.testing.assert_array_equal(p.target[0], [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(p.target[1], [10, 11, 12])
    np.testing.assert_allclose(p.past_covariates[1][:, 0], [1.0, 1.1, 1.2], rtol=1e-6)
    np.testing.assert_array_equal(p.future_covariates[0][:, 0], [0, 0, 1, 0, 1])
    assert p.past_names == ("temp",) and p.future_names == ("promo",)
    assert all(a.dtype == np.float32 for a in p.target + p.past_covariates + p.future_covariates)
    assert (p.n_series, p.n_steps, p.n_past, p.n_future) == (2, 5, 1, 1)


def test_from_frame_with_timezone_aware_timestamps():
    ts = pd.date_range("2024-03-30", periods=4, freq="h", tz="Europe/Berlin")
    df = pd.DataFrame({"series_id": ["a"] * 4 + ["b"] * 2, "ts": [*ts, *ts[2:]], "y": np.arange(6.0)})
    assert Panel.from_frame(df).lengths().tolist() == [4, 2]
    late = df.iloc[:-1]
    with pytest.raises(ValueError) as exc:
        Panel.from_frame(late)
    assert str(exc.value).startswith(
        "series 'b' ends at 2024-03-30 02:00:00+01:00 but series 'a' ends at 2024-03-30 03:00:00+01:00;"
    )
    shuffled = df.iloc[[0, 2, 1, 3, 4, 5]]
    with pytest.raises(ValueError, match=r"^series 'a': column 'ts' must be strictly increasing"):
        Panel.from_frame(shuffled)


def test_from_frame_without_covariates_and_with_non_default_columns():
    df = long_frame().rename(columns={"series_id": "sid", "ts": "t", "y": "value"})
    df["sid"] = df["sid"].map({"a": 7, "b": 8})
    p = Panel.from_frame(df, series_col="sid", time_col="t", target_col="value")
    assert p.series_ids == ("7", "8")
    assert p.past_covariates[0].shape == (5, 0) and p.future_covariates[1].shape == (3, 0)


@pytest.mark.parametrize(
    ("col", "row", "message"),
    [
        ("y", 5, "series 'b' has non-finite values in column 'y'"),
        ("temp", 0, "series 'a' has non-finite values in column 'temp'"),
    ],
)
def test_from_frame_rejects_non_finite_values_naming_series_and_column(col, row, message):
    df = long_frame()
    df.loc[row, col] = np.nan if col == "y" else np.inf
    with pytest.raises(ValueError) as exc:
        Panel.from_frame(df, past=["temp"])
    assert str(exc.value) == message


def test_from_frame_rejects_values_that_overflow_float32():
    df = long_frame()
    df.loc[7, "y"] = 1e300
    with pytest.raises(ValueError, match=r"^series 'b' has non-finite values in column 'y'$"):
        Panel.from_frame(df)


def test_from_frame_validation_messages():
    df = long_frame()
    with pytest.raises(ValueError, match=r"^column 'rain' not found in frame"):
        Panel.from_frame(df, past=["rain"])
    with pytest.raises(ValueError, match=r"^target column 'y' must not be listed as a covariate$"):
        Panel.from_frame(df, past=["y"])
    unsorted = df.iloc[[1, 0, 2, 3, 4, 5, 6, 7]]
    with pytest.raises(ValueError, match=r"^series 'a': column 'ts' must be strictly increasing within"):
        Panel.from_frame(unsorted)
    ragged = df[~((df["series_id"] == "b") & (df["ts"] == 4))]
    with pytest.raises(ValueError) as exc:
        Panel.from_frame(ragged)
    assert str(exc.value) == (
        "series 'b' ends at 3 but series 'a' ends at 4; all series must end at the same time step"
    )
    text = df.assign(temp=["x"] * len(df))
    with pytest.raises(ValueError, match=r"^column 'temp' must be numeric, got dtype"):
        Panel.from_frame(text, past=["temp"])
    with pytest.raises(ValueError, match=r"^frame has no rows$"):
        Panel.from_frame(df.iloc[:0])


def test_post_init_checks_lengths_and_names_the_series():
    good = simple_panel()
    with pytest.raises(ValueError) as exc:
        Panel(
            good.series_ids,
            good.target,
            (good.past_covariates[0], good.past_covariates[1][:2]),
            good.future_covariates,
            past_names=("p",),
        )
    assert str(exc.value) == (
        "series 's1': past_covariates must have shape (3, 1) (steps, len(past_names)), got (2, 1)"
    )
    with pytest.raises(ValueError, match=r"^series 's0': future_covariates must have shape \(5, 0\)"):
        Panel(
            good.series_ids,
            good.target,
            good.past_covariates,
            (np.zeros((4, 0), np.float32), good.future_covariates[1]),
            past_names=("p",),
        )
    with pytest.raises(ValueError, match=r"^target has 1 entries but there are 2 series$"):
        Panel(
            good.series_ids, good.target[:1], good.past_covariates, good.future_covariates, past_names=("p",)
        )
    with pytest.raises(ValueError, match=r"^series id 's0' appears more than once$"):
        Panel(("s0", "s0"), good.target, good.past_covariates, good.future_covariates, past_names=("p",))
    with pytest.raises(ValueError, match=r"^series 's1' has non-finite values in the target$"):
        Panel(
            good.series_ids,
            (good.target[0], np.array([1, np.nan, 2], np.float32)),
            good.past_covariates,
            good.future_covariates,
            past_names=("p",),
        )
    with pytest.raises(ValueError, match=r"^series 's0': target must be a non-empty 1-D array"):
        Panel(("s0",), (np.zeros(0, np.float32),), (np.zeros((0, 0)),), (np.zeros((0, 0)),))
    with pytest.raises(ValueError, match=r"^a panel needs at least one series$"):
        Panel((), (), (), ())


def test_truncate_uses_the_global_axis_of_the_longest_series():
    p = simple_panel((5, 3))  # s0 occupies global [0, 5), s1 global [2, 5)
    t = p.truncate(4)
    assert t.series_ids == ("s0", "s1")
    np.testing.assert_array_equal(t.target[0], [0, 1, 2, 3])
    np.testing.assert_array_equal(t.target[1], [100, 101])
    np.testing.assert_array_equal(t.past_covariates[1][:, 0], [0, 1])
    assert t.n_steps == 4 and t.past_names == ("p",)
    dropped = p.truncate(2)  # s1 has nothing before global position 2
    assert dropped.series_ids == ("s0",)
    np.testing.assert_array_equal(dropped.target[0], [0, 1])
    assert p.truncate(5).lengths().tolist() == [5, 3]
    with pytest.raises(ValueError, match=r"^need 0 <= start < stop <= n_steps=5, got start=0, stop=6$"):
        p.truncate(6)
    with pytest.raises(ValueError, match=r"got start=0, stop=0$"):
        p.truncate(0)


def test_slice_global_and_select():
    p = simple_panel((5, 3))
    s = p.slice_global(3, 5)
    np.testing.assert_array_equal(s.target[0], [3, 4])
    np.testing.assert_array_equal(s.target[1], [101, 102])
    s = p.slice_global(0, 2)
    assert s.series_ids == ("s0",)
    sel = p.select(["s1"])
    assert sel.series_ids == ("s1",) and sel.target[0] is p.target[1]
    with pytest.raises(KeyError, match="series 'zz' is not in the panel"):
        p.select(["zz"])

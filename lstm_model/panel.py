"""A panel of many time series aligned at their end.

Aligning at the end (every series' last value is at the same time step) is what a batch forecast
needs: one forecast origin for all series, while series may start at different times.
The longest series defines the *global* time axis [0, n_steps); series i occupies
[n_steps - T_i, n_steps) on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


def _numeric_column(df: pd.DataFrame, col: str) -> np.ndarray:
    dtype = df[col].dtype
    if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
        raise ValueError(f"column {col!r} must be numeric, got dtype {dtype}")
    return df[col].to_numpy(dtype=np.float64, na_value=np.nan)


@dataclass(frozen=True, eq=False)
class Panel:
    """Many series, aligned at their END (all end at the same time step), possibly different start."""

    series_ids: tuple[str, ...]
    target: tuple[np.ndarray, ...]  # each (T_i,) float32, finite
    past_covariates: tuple[np.ndarray, ...]  # each (T_i, P) float32: only known up to the present
    future_covariates: tuple[np.ndarray, ...]  # each (T_i, F) float32: known in advance at each step
    past_names: tuple[str, ...] = ()
    future_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Normalise containers/dtypes once so every consumer can rely on tuples of float32 arrays.
        ids = tuple(self.series_ids)
        target = tuple(np.ascontiguousarray(a, dtype=np.float32) for a in self.target)
        past = tuple(np.ascontiguousarray(a, dtype=np.float32) for a in self.past_covariates)
        future = tuple(np.ascontiguousarray(a, dtype=np.float32) for a in self.future_covariates)
        past_names, future_names = tuple(self.past_names), tuple(self.future_names)
        for name, value in (
            ("series_ids", ids),
            ("target", target),
            ("past_covariates", past),
            ("future_covariates", future),
            ("past_names", past_names),
            ("future_names", future_names),
        ):
            object.__setattr__(self, name, value)

        if not ids:
            raise ValueError("a panel needs at least one series")
        if not all(isinstance(s, str) for s in ids):
            raise ValueError(f"series_ids must be strings, got {[type(s).__name__ for s in ids][:5]}")
        if len(set(ids)) != len(ids):
            dup = next(s for s in ids if ids.count(s) > 1)
            raise ValueError(f"series id {dup!r} appears more than once")
        for name, arrays in (("target", target), ("past_covariates", past), ("future_covariates", future)):
            if len(arrays) != len(ids):
                raise ValueError(f"{name} has {len(arrays)} entries but there are {len(ids)} series")
        names = past_names + future_names
        if len(set(names)) != len(names):
            raise ValueError(f"covariate names must be unique across past and future, got {names}")

        n_past, n_future = len(past_names), len(future_names)
        for sid, y, p, f in zip(ids, target, past, future, strict=True):
            if y.ndim != 1 or y.shape[0] == 0:
                raise ValueError(f"series {sid!r}: target must be a non-empty 1-D array, got shape {y.shape}")
            t = y.shape[0]
            if p.shape != (t, n_past):
                raise ValueError(
                    f"series {sid!r}: past_covariates must have shape {(t, n_past)} "
                    f"(steps, len(past_names)), got {p.shape}"
                )
            if f.shape != (t, n_future):
                raise ValueError(
                    f"series {sid!r}: future_covariates must have shape {(t, n_future)} "
                    f"(steps, len(future_names)), got {f.shape}"
                )
            if not np.isfinite(y).all():
                raise ValueError(f"series {sid!r} has non-finite values in the target")
            for arr, cols in ((p, past_names), (f, future_names)):
                if arr.size and not np.isfinite(arr).all():
                    bad = cols[int(np.flatnonzero(~np.isfinite(arr).all(axis=0))[0])]
                    raise ValueError(f"series {sid!r} has non-finite values in column {bad!r}")

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        series_col: str = "series_id",
        time_col: str = "ts",
        target_col: str = "y",
        past: Sequence[str] = (),
        future: Sequence[str] = (),
    ) -> Panel:
        """Build from a long frame (one row per series and time step, sorted by time within series).

        Series keep their order of first appearance. The frame must already be end-aligned and
        sorted: silently re-sorting or padding would hide an upstream bug.
        """
        past, future = tuple(past), tuple(future)
        for col in (series_col, time_col, target_col, *past, *future):
            if col not in df.columns:
                raise ValueError(f"column {col!r} not found in frame (columns: {list(df.columns)})")
        if target_col in past + future:
            raise ValueError(f"target column {target_col!r} must not be listed as a covariate")
        if len(df) == 0:
            raise ValueError("frame has no rows")

        codes, uniques = pd.factorize(df[series_col], sort=False)
        if (codes < 0).any():
            raise ValueError(f"column {series_col!r} has missing series ids")
        order = np.argsort(codes, kind="stable")  # group rows by series, keep row order inside a series
        bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(uniques)))])
        ids = tuple(str(u) for u in uniques)
        row_series = codes[order]

        def grouped(col: str) -> np.ndarray:
            values = _numeric_column(df, col)[order]
            finite = np.isfinite(values) & (np.abs(values) <= np.finfo(np.float32).max)
            if not finite.all():
                sid = ids[row_series[int(np.argmin(finite))]]
                raise ValueError(f"series {sid!r} has non-finite values in column {col!r}")
            return values.astype(np.float32)

        time = df[time_col]
        if isinstance(time.dtype, pd.DatetimeTZDtype):  # object array of Timestamps otherwise: slow compares
            time = time.dt.tz_convert("UTC").dt.tz_localize(None)
        ts = time.to_numpy()[order]
        same_series = row_series[1:] == row_series[:-1]
        not_increasing = same_series & ~(ts[1:] > ts[:-1])
        if not_increasing.any():
            sid = ids[row_series[int(np.argmax(not_increasing))]]
            raise ValueError(
                f"series {sid!r}: column {time_col!r} must be strictly increasing within a series"
            )
        last_rows = order[bounds[1:] - 1]  # frame row of each series' last step
        ends = ts[bounds[1:] - 1]
        late = ends != ends[0]
        if late.any():
            i = int(np.argmax(late))
            first_end, end = df[time_col].iloc[last_rows[0]], df[time_col].iloc[last_rows[i]]
            raise ValueError(
                f"series {ids[i]!r} ends at {end} but series {ids[0]!r} ends at {first_end}; "
                "all series must end at the same time step"
            )

        y = grouped(target_col)
        p = np.stack([grouped(c) for c in past], axis=1) if past else np.empty((len(df), 0), np.float32)
        f = np.stack([grouped(c) for c in future], axis=1) if future else np.empty((len(df), 0), np.float32)
        sl = [slice(bounds[i], bounds[i + 1]) for i in range(len(ids))]
        return cls(
            series_ids=ids,
            target=tuple(y[s] for s in sl),
            past_covariates=tuple(p[s] for s in sl),
            future_covariates=tuple(f[s] for s in sl),
            past_names=past,
            future_names=future,
        )

    @property
    def n_series(self) -> int:
        return len(self.series_ids)

    @property
    def n_steps(self) -> int:
        """Length of the global time axis (the longest series)."""
        return int(self.lengths().max())

    @property
    def n_past(self) -> int:
        return len(self.past_names)

    @property
    def n_future(self) -> int:
        return len(self.future_names)

    def lengths(self) -> np.ndarray:
        return np.array([len(y) for y in self.target], dtype=np.int64)

    def index(self, series_id: str) -> int:
        try:
            return self.series_ids.index(series_id)
        except ValueError:
            raise KeyError(f"series {series_id!r} is not in the panel") from None

    def slice_global(self, start: int, stop: int) -> Panel:
        """Keep global positions [start, stop); series with no steps left are dropped.

        The result is again end-aligned because every kept series covers position stop - 1.
        """
        n = self.n_steps
        if not (0 <= start < stop <= n):
            raise ValueError(f"need 0 <= start < stop <= n_steps={n}, got start={start}, stop={stop}")
        keep: list[tuple[int, slice]] = []
        for i, t in enumerate(self.lengths()):
            first = n - int(t)  # global position of the series' first step
            lo, hi = max(start, first) - first, stop - first
            if hi > lo:
                keep.append((i, slice(lo, hi)))
        if not keep:
            raise ValueError(f"no series has data in global positions [{start}, {stop})")
        return Panel(
            series_ids=tuple(self.series_ids[i] for i, _ in keep),
            target=tuple(self.target[i][s] for i, s in keep),
            past_covariates=tuple(self.past_covariates[i][s] for i, s in keep),
            future_covariates=tuple(self.future_covariates[i][s] for i, s in keep),
            past_names=self.past_names,
            future_names=self.future_names,
        )

    def truncate(self, end: int) -> Panel:
        """Keep global positions [0, end): the data available at a forecast origin `end` (for backtests)."""
        return self.slice_global(0, end)

    def select(self, series_ids: Sequence[str]) -> Panel:
        """Subset of series, in the given order."""
        pos = {sid: i for i, sid in enumerate(self.series_ids)}
        missing = [s for s in series_ids if s not in pos]
        if missing:
            raise KeyError(f"series {missing[0]!r} is not in the panel")
        idx = [pos[s] for s in series_ids]
        return Panel(
            series_ids=tuple(series_ids),
            target=tuple(self.target[i] for i in idx),
            past_covariates=tuple(self.past_covariates[i] for i in idx),
            future_covariates=tuple(self.future_covariates[i] for i in idx),
            past_names=self.past_names,
            future_names=self.future_names,
        )

"""Per-series standardisation.

Series in one panel differ in level and scale by orders of magnitude; a shared network only learns
well when every series (and every covariate) is on a comparable scale. Statistics come from the
panel passed to `fit` only, which must be training data, so nothing leaks from the evaluation period.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lstm_model.panel import Panel

STD_FLOOR = 1e-8  # below this a column is treated as constant (scale 1), e.g. a flag that never flips


class SeriesScaler:
    """Mean/std per series for the target and for each past and future covariate."""

    def __init__(self) -> None:
        self._series_ids: tuple[str, ...] = ()
        self._pos: dict[str, int] = {}
        self._past_names: tuple[str, ...] = ()
        self._future_names: tuple[str, ...] = ()
        # Columns follow the model's input order: [target, past..., future...].
        self._mean: np.ndarray | None = None  # (n_series, 1+P+F) float64
        self._std: np.ndarray | None = None  # (n_series, 1+P+F) float64

    def _set(
        self,
        series_ids: Sequence[str],
        past_names: Sequence[str],
        future_names: Sequence[str],
        mean: np.ndarray,
        std: np.ndarray,
    ) -> SeriesScaler:
        self._series_ids = tuple(series_ids)
        self._pos = {sid: i for i, sid in enumerate(self._series_ids)}
        self._past_names, self._future_names = tuple(past_names), tuple(future_names)
        self._mean, self._std = mean, std
        return self

    def fit(self, panel: Panel) -> SeriesScaler:
        """Fit on `panel` (training data only) and return self."""
        n, c = panel.n_series, 1 + panel.n_past + panel.n_future
        mean = np.empty((n, c), dtype=np.float64)
        std = np.empty((n, c), dtype=np.float64)
        for i in range(n):
            cols = (panel.target[i][:, None], panel.past_covariates[i], panel.future_covariates[i])
            mean[i] = np.concatenate([a.mean(axis=0, dtype=np.float64) for a in cols])
            std[i] = np.concatenate([a.std(axis=0, dtype=np.float64) for a in cols])
        std[std < STD_FLOOR] = 1.0
        return self._set(panel.series_ids, panel.past_names, panel.future_names, mean, std)

    # ----------------------------------------------------------------- accessors
    def _require_fitted(self) -> tuple[np.ndarray, np.ndarray]:
        if self._mean is None or self._std is None:
            raise RuntimeError("SeriesScaler is not fitted; call fit(panel) first")
        return self._mean, self._std

    def _row(self, series_id: str) -> int:
        self._require_fitted()
        if series_id not in self._pos:
            raise KeyError(f"series {series_id!r} was not seen when the scaler was fitted")
        return self._pos[series_id]

    @property
    def series_ids(self) -> tuple[str, ...]:
        return self._series_ids

    @property
    def past_names(self) -> tuple[str, ...]:
        return self._past_names

    @property
    def future_names(self) -> tuple[str, ...]:
        return self._future_names

    def positions(self, series_ids: Sequence[str]) -> np.ndarray:
        """Row of each series in the fitted statistics (= its index in the training panel)."""
        return np.array([self._row(s) for s in series_ids], dtype=np.int64)

    def feature_stats(self, series_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std), each (len(series_ids), 1+P+F), for vectorised scaling of many series at once."""
        mean, std = self._require_fitted()
        rows = self.positions(series_ids)
        return mean[rows], std[rows]

    # ----------------------------------------------------------------- transforms
    def _columns(self, kind: str) -> slice:
        p = len(self._past_names)
        return {"target": slice(0, 1), "past": slice(1, 1 + p), "future": slice(1 + p, None)}[kind]

    def _apply(self, kind: str, series_id: str, values: np.ndarray, inverse: bool) -> np.ndarray:
        mean, std = self._require_fitted()
        row, cols = self._row(series_id), self._columns(kind)
        m, s = mean[row, cols], std[row, cols]
        v = np.asarray(values, dtype=np.float64)
        if kind == "target":
            m, s = m[0], s[0]
        elif v.ndim == 0 or v.shape[-1] != len(m):
            raise ValueError(f"{kind} covariates need a last dimension of {len(m)}, got shape {v.shape}")
        return v * s + m if inverse else (v - m) / s

    def transform_target(self, series_id: str, values: np.ndarray) -> np.ndarray:
        return self._apply("target", series_id, values, inverse=False).astype(np.float32)

    def transform_past(self, series_id: str, values: np.ndarray) -> np.ndarray:
        """`values`: (T, P) past covariates of one series."""
        return self._apply("past", series_id, values, inverse=False).astype(np.float32)

    def transform_future(self, series_id: str, values: np.ndarray) -> np.ndarray:
        """`values`: (T, F) future covariates of one series."""
        return self._apply("future", series_id, values, inverse=False).astype(np.float32)

    def inverse_target(self, series_id: str, values: np.ndarray) -> np.ndarray:
        """Back to the original scale, float64 (forecasts are reported in float64)."""
        return self._apply("target", series_id, values, inverse=True)

    def _check_features(self, panel: Panel) -> None:
        if panel.past_names != self._past_names or panel.future_names != self._future_names:
            raise ValueError(
                f"panel covariates past={panel.past_names} future={panel.future_names} do not match the "
                f"scaler's past={self._past_names} future={self._future_names}"
            )

    def transform_panel(self, panel: Panel) -> Panel:
        """Scaled copy of `panel` (every series must have been seen by `fit`)."""
        self._require_fitted()
        self._check_features(panel)
        sids = panel.series_ids
        return Panel(
            series_ids=sids,
            target=tuple(self.transform_target(s, y) for s, y in zip(sids, panel.target, strict=True)),
            past_covariates=tuple(
                self.transform_past(s, p) for s, p in zip(sids, panel.past_covariates, strict=True)
            ),
            future_covariates=tuple(
                self.transform_future(s, f) for s, f in zip(sids, panel.future_covariates, strict=True)
            ),
            past_names=panel.past_names,
            future_names=panel.future_names,
        )

    # ----------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """Plain lists/floats only, so a checkpoint holding it loads with torch.load(weights_only=True)."""
        mean, std = self._require_fitted()
        out: dict[str, Any] = {
            "series_ids": list(self._series_ids),
            "past_names": list(self._past_names),
            "future_names": list(self._future_names),
        }
        for kind in ("target", "past", "future"):
            cols = self._columns(kind)
            m, s = mean[:, cols], std[:, cols]
            out[f"{kind}_mean"] = m[:, 0].tolist() if kind == "target" else m.tolist()
            out[f"{kind}_std"] = s[:, 0].tolist() if kind == "target" else s.tolist()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SeriesScaler:
        keys = (
            "series_ids",
            "past_names",
            "future_names",
            "target_mean",
            "target_std",
            "past_mean",
            "past_std",
            "future_mean",
            "future_std",
        )
        missing = [k for k in keys if k not in d]
        if missing:
            raise ValueError(f"scaler dict is missing key {missing[0]!r}")
        n, p, f = len(d["series_ids"]), len(d["past_names"]), len(d["future_names"])
        parts: dict[str, np.ndarray] = {}
        for kind, width in (("target", None), ("past", p), ("future", f)):
            for stat in ("mean", "std"):
                key = f"{kind}_{stat}"
                a = np.asarray(d[key], dtype=np.float64)
                shape = (n,) if width is None else (n, width)
                if width is not None and a.size == 0:
                    a = a.reshape(shape)  # [[], []] loads as (n, 0) but [] (n == 0) would not
                if a.shape != shape:
                    raise ValueError(f"scaler dict {key!r} has shape {a.shape}, expected {shape}")
                parts[key] = a[:, None] if width is None else a
        mean = np.concatenate([parts["target_mean"], parts["past_mean"], parts["future_mean"]], axis=1)
        std = np.concatenate([parts["target_std"], parts["past_std"], parts["future_std"]], axis=1)
        return cls()._set(d["series_ids"], d["past_names"], d["future_names"], mean, std)

"""pasta_sales under the fev-bench `hierarchical_sales_1D` protocol: data, windows, baselines, metrics.

Kept separate from the benchmark scripts so every model (lstmcast, neuralforecast, baselines) is scored
by the same code. The protocol, checked against the published baselines (Seasonal Naive 0.9949,
Naive 1.0418 reproduce to 10 decimals):

- daily grid from the first to the last row; the 27 days absent from the file are missing values;
- horizon 28, 10 windows; the last window ends at the last row, each window 28 days after the previous;
  a window's forecast sees only the rows before its cutoff;
- MASE per window (autogluon/fev `metrics.MASE`): |y - yhat| divided by the series' in-sample
  seasonal-naive error (lag 7, mean over the lagged differences that are not missing), averaged over
  every (series, step) cell whose value is finite, so missing targets are skipped; then the mean over
  windows. WAPE likewise (fev: mean |error| / max(1, mean |y|)).
- the published baselines forecast from the history with missing days forward-filled (then
  back-filled), which is what `fill_missing` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATA_FILE = "pasta_sales.csv"
HORIZON = 28
N_WINDOWS = 10
SEASONALITY = 7
FREQ = "D"

# fev-bench results (autogluon/fev, benchmarks/fev_bench/results/*.csv), MASE on hierarchical_sales_1D.
PUBLISHED_MASE = {
    "Seasonal Naive": 0.9949,
    "Naive": 1.0418,
    "AutoETS": 0.8640,
    "AutoARIMA": 0.7736,
    "DeepAR": 0.6970,
    "TFT": 0.7068,
    "PatchTST": 0.6952,
    "LightGBM": 0.6884,
}


@dataclass(frozen=True)
class PastaData:
    """The full daily grid. qty/promo are (n_series, n_steps); absent days are nan in both."""

    dates: pd.DatetimeIndex
    series_ids: tuple[str, ...]  # "B1_1", ...: the QTY_/PROMO_ suffix
    qty: np.ndarray  # float64, units sold
    promo: np.ndarray  # float64, 1 on promotion days

    @property
    def n_series(self) -> int:
        return len(self.series_ids)

    @property
    def n_steps(self) -> int:
        return len(self.dates)


def load(data_dir: Path | None = None) -> PastaData:
    """Read pasta_sales.csv onto a complete daily grid (absent days become nan rows)."""
    path = Path(data_dir or DATA_DIR) / DATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the benchmark reads the shared data set from ../shared/data/ relative to "
            "the project root (see shared/data/README.md)"
        )
    df = pd.read_csv(path, parse_dates=["DATE"]).set_index("DATE").sort_index()
    if df.index.duplicated().any():
        raise ValueError(f"{path}: duplicate dates")
    grid = pd.date_range(df.index[0], df.index[-1], freq=FREQ)
    df = df.reindex(grid)
    ids = tuple(c.removeprefix("QTY_") for c in df.columns if c.startswith("QTY_"))
    missing = [f"PROMO_{s}" for s in ids if f"PROMO_{s}" not in df.columns]
    if missing:
        raise ValueError(f"{path}: no promotion column {missing[0]!r}")
    qty = df[[f"QTY_{s}" for s in ids]].to_numpy(np.float64).T
    promo = df[[f"PROMO_{s}" for s in ids]].to_numpy(np.float64).T
    return PastaData(dates=grid, series_ids=ids, qty=qty, promo=promo)


def cutoffs(n_steps: int, horizon: int = HORIZON, n_windows: int = N_WINDOWS) -> list[int]:
    """First forecast row of each window, oldest first; the last window ends at the last row."""
    first = n_steps - horizon * n_windows
    if first <= 0:
        raise ValueError(f"{n_windows} windows of {horizon} steps do not fit in {n_steps} steps")
    return [first + k * horizon for k in range(n_windows)]


def fill_missing(values: np.ndarray) -> np.ndarray:
    """Forward-fill, then back-fill, nan along time (axis 1), as the published baselines saw the history."""
    return pd.DataFrame(values.T).ffill().bfill().to_numpy().T


def seasonal_naive(history: np.ndarray, horizon: int = HORIZON, season: int = SEASONALITY) -> np.ndarray:
    """Repeat each series' last filled season -> (n_series, horizon)."""
    last = fill_missing(history)[:, -season:]
    return last[:, np.arange(horizon) % season]


def naive(history: np.ndarray, horizon: int = HORIZON) -> np.ndarray:
    """Repeat each series' last filled value -> (n_series, horizon)."""
    return np.repeat(fill_missing(history)[:, -1:], horizon, axis=1)


def seasonal_error(history: np.ndarray, season: int = SEASONALITY) -> np.ndarray:
    """Per series mean |y_t - y_{t-season}| over the pairs with neither value missing (fev: 1.0 if none)."""
    diffs = np.abs(history[:, season:] - history[:, :-season])
    valid = np.isfinite(diffs)
    counts = valid.sum(axis=1)
    sums = np.where(valid, diffs, 0.0).sum(axis=1)
    return np.divide(sums, counts, out=np.ones(len(history)), where=counts > 0)


def mase(y: np.ndarray, yhat: np.ndarray, history: np.ndarray, season: int = SEASONALITY) -> float:
    """One window's MASE, fev style: mean over finite cells of |y - yhat| / seasonal error."""
    ratio = np.abs(y - yhat) / seasonal_error(history, season)[:, None]
    return float(np.mean(ratio[np.isfinite(ratio)]))


def wape(y: np.ndarray, yhat: np.ndarray, epsilon: float = 1.0) -> float:
    """One window's WAPE, fev style: nanmean |y - yhat| / max(epsilon, nanmean |y|)."""
    return float(np.nanmean(np.abs(y - yhat)) / max(epsilon, float(np.nanmean(np.abs(y)))))


Forecaster = Callable[[PastaData, int], np.ndarray]


@dataclass(frozen=True)
class Score:
    mase: float
    wape: float
    per_window: tuple[float, ...]  # MASE of each window, oldest first


def evaluate(forecast: Forecaster, data: PastaData, windows: list[int] | None = None) -> Score:
    """Score `forecast(data, cutoff) -> (n_series, HORIZON)` on the protocol's windows.

    The forecaster receives the whole data set and the cutoff; it must read only rows before the
    cutoff (the known-in-advance promotion flags of the window excepted).
    """
    cuts = cutoffs(data.n_steps) if windows is None else windows
    m, w = [], []
    for cut in cuts:
        history, y = data.qty[:, :cut], data.qty[:, cut : cut + HORIZON]
        yhat = np.asarray(forecast(data, cut), dtype=np.float64)
        if yhat.shape != y.shape:
            raise ValueError(f"forecast has shape {yhat.shape}, expected {y.shape}")
        if not np.isfinite(yhat).all():
            raise ValueError(f"forecast for cutoff {cut} has non-finite values")
        m.append(mase(y, yhat, history))
        w.append(wape(y, yhat))
    return Score(mase=float(np.mean(m)), wape=float(np.mean(w)), per_window=tuple(m))


def seasonal_naive_forecaster(data: PastaData, cut: int) -> np.ndarray:
    return seasonal_naive(data.qty[:, :cut])


def naive_forecaster(data: PastaData, cut: int) -> np.ndarray:
    return naive(data.qty[:, :cut])


def median_forecaster(days: int = 84) -> Forecaster:
    """Flat forecast at each series' median of its last `days` observed values: the level-only bar."""

    def forecast(data: PastaData, cut: int) -> np.ndarray:
        level = np.nanmedian(data.qty[:, cut - days : cut], axis=1)
        return np.repeat(level[:, None], HORIZON, axis=1)

    return forecast

"""ETTh1 standard protocol (Informer / DLinear): data, splits, scaling, test windows and scoring.

Kept apart from the benchmark script so every ETTh1 experiment scores itself the same way, and so
the protocol can be checked on its own: the Repeat baseline must reproduce the published figures.

Protocol: rows [0, 8640) train, [8640, 11520) validation, [11520, 14400) test; validation and test
windows may reach back into the previous part for their look-back; a StandardScaler (population std)
fitted on the train rows only; MSE/MAE on standardized values over every test window (stride 1).
"S" = OT in and out; "M" = all seven variables in and out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ETTH1_FILE = "ETTh1.csv"
VARIABLES = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
TARGET = "OT"

TRAIN = (0, 8640)
VAL = (8640, 11520)
TEST = (11520, 14400)
PAPER_BATCH = 32  # test batch size of the published runs, which drop the last incomplete batch

# Published MSE/MAE on ETTh1 (/work/shared/data/README.md). Informer paper: LSTMa, DeepAR, Informer;
# DLinear paper (look-back 336): DLinear, NLinear, Repeat; PatchTST paper: PatchTST/64.
PUBLISHED: dict[tuple[str, int], dict[str, tuple[float, float]]] = {
    ("S", 24): {"LSTMa": (0.114, 0.272), "DeepAR": (0.107, 0.280), "Informer": (0.098, 0.247)},
    ("S", 48): {"LSTMa": (0.193, 0.358), "DeepAR": (0.162, 0.327), "Informer": (0.158, 0.319)},
    ("S", 168): {"LSTMa": (0.236, 0.392), "DeepAR": (0.239, 0.422), "Informer": (0.183, 0.346)},
    ("S", 336): {
        "LSTMa": (0.590, 0.698),
        "DeepAR": (0.445, 0.552),
        "Informer": (0.222, 0.387),
        "DLinear": (0.098, 0.244),
        "NLinear": (0.081, 0.226),
    },
    ("S", 720): {
        "LSTMa": (0.683, 0.768),
        "DeepAR": (0.658, 0.707),
        "Informer": (0.269, 0.435),
        "DLinear": (0.189, 0.359),
        "NLinear": (0.080, 0.226),
    },
    ("S", 96): {"DLinear": (0.056, 0.180), "NLinear": (0.053, 0.177)},
    ("S", 192): {"DLinear": (0.071, 0.204), "NLinear": (0.069, 0.204)},
    ("M", 24): {"LSTMa": (0.650, 0.624), "Informer": (0.577, 0.549)},
    ("M", 48): {"LSTMa": (0.702, 0.675), "Informer": (0.685, 0.625)},
    ("M", 168): {"LSTMa": (1.212, 0.867), "Informer": (0.931, 0.752)},
    ("M", 96): {
        "DLinear": (0.375, 0.399),
        "NLinear": (0.374, 0.394),
        "PatchTST": (0.370, 0.400),
        "Repeat": (1.295, 0.713),
    },
    ("M", 192): {
        "DLinear": (0.405, 0.416),
        "NLinear": (0.408, 0.415),
        "PatchTST": (0.413, 0.429),
        "Repeat": (1.325, 0.733),
    },
    ("M", 336): {
        "LSTMa": (1.424, 0.994),
        "Informer": (1.128, 0.873),
        "DLinear": (0.439, 0.443),
        "NLinear": (0.429, 0.427),
        "PatchTST": (0.422, 0.440),
        "Repeat": (1.323, 0.744),
    },
    ("M", 720): {
        "LSTMa": (1.960, 1.322),
        "Informer": (1.215, 0.896),
        "DLinear": (0.472, 0.490),
        "NLinear": (0.440, 0.453),
        "PatchTST": (0.447, 0.468),
        "Repeat": (1.339, 0.756),
    },
}


def load_etth1(data_dir: Path = DATA_DIR) -> pd.DataFrame:
    """The unmodified ETTh1 file, with `date` parsed; fails clearly when the shared data is absent."""
    path = Path(data_dir) / ETTH1_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the ETT benchmark reads ../shared/data/{ETTH1_FILE} relative to the "
            "project root (zhouhaoyi/ETDataset, ETT-small/ETTh1.csv)"
        )
    df = pd.read_csv(path, parse_dates=["date"])
    missing = [c for c in ("date", *VARIABLES) if c not in df.columns]
    if missing or len(df) < TEST[1]:
        raise ValueError(
            f"{path}: expected columns {VARIABLES} and >= {TEST[1]} rows, got {list(df.columns)}"
        )
    return df


def columns(setting: str) -> tuple[str, ...]:
    """Variables forecast (and scored) in a setting: OT alone for S, all seven for M."""
    if setting not in ("S", "M"):
        raise ValueError(f"setting must be 'S' or 'M', got {setting!r}")
    return (TARGET,) if setting == "S" else VARIABLES


@dataclass(frozen=True)
class TrainScaler:
    """StandardScaler fitted on the train rows only, population std (ddof=0), as in the papers."""

    mean: np.ndarray  # (C,)
    std: np.ndarray  # (C,)

    @classmethod
    def fit(cls, values: np.ndarray) -> TrainScaler:
        """`values` (rows, C) of the whole file; only rows TRAIN are used."""
        train = np.asarray(values, dtype=np.float64)[TRAIN[0] : TRAIN[1]]
        return cls(mean=train.mean(axis=0), std=train.std(axis=0, ddof=0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Original units -> standardized; the last axis is the variable."""
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.std


def test_origins(horizon: int, drop_last_batch: bool = False) -> np.ndarray:
    """First forecast row of every test window (stride 1): the horizon lies inside the test rows.

    `drop_last_batch` keeps only whole batches of PAPER_BATCH windows, as the published runs do.
    """
    n = TEST[1] - TEST[0] - horizon + 1
    if n <= 0:
        raise ValueError(f"horizon {horizon} is longer than the test part ({TEST[1] - TEST[0]} rows)")
    if drop_last_batch:
        n = (n // PAPER_BATCH) * PAPER_BATCH
    return TEST[0] + np.arange(n, dtype=np.int64)


def truth_windows(scaled: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """Standardized targets (n_windows, horizon, C) of the windows starting at `origins`."""
    idx = np.asarray(origins)[:, None] + np.arange(horizon)
    return np.asarray(scaled)[idx]


def repeat_forecast(scaled: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """The "Repeat" baseline: the last observed value, repeated over the horizon -> (n, horizon, C)."""
    last = np.asarray(scaled)[np.asarray(origins) - 1]  # (n, C)
    return np.repeat(last[:, None, :], horizon, axis=1)


def evaluate(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(MSE, MAE) over every window, step and variable, on standardized values."""
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"pred shape {pred.shape} != truth shape {truth.shape}")
    if not np.isfinite(pred).all():
        raise ValueError("predictions contain non-finite values")
    err = pred - truth
    return float(np.mean(err**2)), float(np.mean(np.abs(err)))


def repeat_scores(
    df: pd.DataFrame, setting: str, horizon: int, drop_last_batch: bool = False
) -> tuple[float, float]:
    """(MSE, MAE) of Repeat on the test windows: the check that the data handling matches the papers."""
    values = df[list(columns(setting))].to_numpy(dtype=np.float64)
    scaled = TrainScaler.fit(values).transform(values)
    origins = test_origins(horizon, drop_last_batch)
    return evaluate(repeat_forecast(scaled, origins, horizon), truth_windows(scaled, origins, horizon))


def main() -> None:
    """Print the Repeat check: M against the DLinear paper, S against the README's measured values."""
    df = load_etth1()
    print("| setting | H | Repeat MSE / MAE (all windows) | dropping last batch of 32 | published |")
    print("|---|---|---|---|---|")
    for setting, horizons in (("M", (96, 192, 336, 720)), ("S", (96, 336))):
        for h in horizons:
            mse, mae = repeat_scores(df, setting, h)
            dmse, dmae = repeat_scores(df, setting, h, drop_last_batch=True)
            pub = PUBLISHED.get((setting, h), {}).get("Repeat")
            pub_s = f"{pub[0]:.3f} / {pub[1]:.3f}" if pub else "-"
            print(f"| {setting} | {h} | {mse:.4f} / {mae:.4f} | {dmse:.3f} / {dmae:.3f} | {pub_s} |")


if __name__ == "__main__":
    main()

import dataclasses
import importlib
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import TimeSeriesSplit

from lstm_model.backtest import backtest, fold_cutoffs, holdout_mase, summarize
from lstm_model.config import ModelConfig, TrainConfig
from lstm_model.metrics import mase
from lstm_model.prediction import predict_origins
from lstm_model.train import fit

# `lstm_model.backtest` as an attribute is the re-exported function, so fetch the module itself.
backtest_mod = importlib.import_module("lstm_model.backtest")

MODEL = ModelConfig(lookback=8, horizon=4, hidden_size=8, num_layers=1, dropout=0.0)
TRAIN = TrainConfig(
    max_epochs=2, steps_per_epoch=2, batch_size=16, max_val_windows=32, device="cpu", threads=1
)
SEASON = 6


def test_fold_cutoffs_follow_time_series_split():
    assert fold_cutoffs(40, 4, 2) == [32, 36]
    expected = [test[0] for _, test in TimeSeriesSplit(n_splits=3, test_size=5).split(np.arange(50))]
    assert fold_cutoffs(50, 5, 3) == expected == [35, 40, 45]
    assert fold_cutoffs(40, 4, 1) == [36]  # sklearn refuses one split; same rule computed directly
    with pytest.raises(ValueError, match=r"^n_folds \* horizon = 40 test steps leave no training data: the"):
        fold_cutoffs(40, 4, 10)
    with pytest.raises(ValueError, match="^n_folds must be a positive integer, got 0$"):
        fold_cutoffs(40, 4, 0)


@pytest.fixture(scope="module")
def ragged_run(make_panel):
    """Lengths 60, 40, 20 (end-aligned); 3 folds of 4 -> cutoffs 48, 52, 56. Series s2 has only
    20 - 12 = 8 < lookback + horizon = 12 training steps at cutoff 48, so it sits out fold 0."""
    panel = make_panel(n_series=3, length=60, stagger=20, period=SEASON, noise=0.5)
    calls = []
    df = backtest(
        panel, MODEL, TRAIN, n_folds=3, season_length=SEASON, on_fold=lambda fold, n: calls.append((fold, n))
    )
    return panel, df, calls


def test_backtest_frame_layout(ragged_run):
    _, df, calls = ragged_run
    assert list(df.columns) == [
        "fold",
        "cutoff",
        "series_id",
        "model",
        "mae",
        "rmse",
        "smape",
        "mase",
        "coverage",
        "stopped",
    ]
    assert set(df["stopped"]) <= {"early_stopping", "max_epochs"}
    assert calls == [(1, 3), (2, 3), (3, 3)]  # progress: folds done so far, total
    per_fold = df.groupby("fold")["series_id"].unique().map(sorted).to_dict()
    assert per_fold == {0: ["s0", "s1"], 1: ["s0", "s1", "s2"], 2: ["s0", "s1", "s2"]}
    assert df.groupby("fold")["cutoff"].unique().map(list).to_dict() == {0: [48], 1: [52], 2: [56]}
    assert len(df) == (2 + 3 + 3) * 5
    models = df.groupby(["fold", "series_id"])["model"].apply(list)
    assert all(m == ["lstm", "seasonal_naive", "naive", "recent_median", "seasonal_mean"] for m in models)
    assert np.isfinite(df[["mae", "rmse", "smape", "mase"]].to_numpy()).all()
    # share of the 4 test steps inside the (0.1, 0.9) interval
    assert df["coverage"].isin([0.0, 0.25, 0.5, 0.75, 1.0]).all()


def test_baseline_rows_equal_independent_computation(ragged_run):
    panel, df, _ = ragged_run
    n_steps, h = panel.n_steps, MODEL.horizon
    checked = 0
    for row in df[df["model"].isin(["naive", "seasonal_naive"])].itertuples():
        y = panel.target[panel.index(row.series_id)].astype(np.float64)
        local_cut = row.cutoff - (n_steps - len(y))  # series are aligned at the end
        history, actual = y[:local_cut], y[local_cut : local_cut + h]
        lag = 1 if row.model == "naive" else SEASON
        if row.model == "naive":
            forecast = np.full(h, history[-1])
        else:
            forecast = np.array([history[len(history) - SEASON + (k % SEASON)] for k in range(h)])
        err = actual - forecast
        # normal interval of a (seasonal) random walk: sigma * sqrt(seasons ahead) around the point
        sigma = np.sqrt(np.mean((history[lag:] - history[:-lag]) ** 2))
        half = NormalDist().inv_cdf(0.9) * sigma * np.sqrt(np.arange(h) // lag + 1)
        inside = (actual >= forecast - half) & (actual <= forecast + half)
        assert row.coverage == pytest.approx(inside.mean(), abs=1e-12)
        scale = np.mean(np.abs(history[SEASON:] - history[:-SEASON]))
        assert row.mae == pytest.approx(np.mean(np.abs(err)), rel=1e-12)
        assert row.rmse == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-12)
        assert row.smape == pytest.approx(
            100 * np.mean(2 * np.abs(err) / (np.abs(actual) + np.abs(forecast))), rel=1e-12
        )
        assert row.mase == pytest.approx(np.mean(np.abs(err)) / scale, rel=1e-12)
        checked += 1
    assert checked == 16


def test_recent_median_and_seasonal_mean_rows_read_the_lookback_before_the_cutoff(ragged_run):
    panel, df, _ = ragged_run
    h, lookback = MODEL.horizon, MODEL.lookback
    for row in df[df["model"].isin(["recent_median", "seasonal_mean"])].itertuples():
        y = panel.target[panel.index(row.series_id)].astype(np.float64)
        local_cut = row.cutoff - (panel.n_steps - len(y))
        window, actual = y[local_cut - lookback : local_cut], y[local_cut : local_cut + h]
        if row.model == "recent_median":
            forecast = np.full(h, np.median(window))
        else:  # one whole season of 6 fits in the lookback of 8: the last season, repeated
            forecast = window[-SEASON:][np.arange(h) % SEASON]
        assert row.mae == pytest.approx(np.mean(np.abs(actual - forecast)), rel=1e-9)


def test_each_fold_trains_only_on_data_before_its_cutoff_and_uses_panel_future(make_panel, monkeypatch):
    panel = make_panel(n_series=2, length=50, stagger=5, n_future=1)
    seen_fit, seen_future = [], []
    real_fit, real_predict = backtest_mod.fit, backtest_mod.predict

    def spy_fit(train_panel, model_cfg, train_cfg):
        seen_fit.append(train_panel.lengths().tolist())
        return real_fit(train_panel, model_cfg, train_cfg)

    def spy_predict(result, train_panel, future):
        seen_future.append([f.copy() for f in future])
        return real_predict(result, train_panel, future)

    monkeypatch.setattr(backtest_mod, "fit", spy_fit)
    monkeypatch.setattr(backtest_mod, "predict", spy_predict)
    df = backtest(panel, MODEL, TRAIN, n_folds=2, season_length=SEASON)
    assert seen_fit == [[42, 37], [46, 41]]  # cutoffs 42 and 46 on a 50-step axis
    for fold, cutoff in enumerate((42, 46)):
        for i, t in enumerate(panel.lengths()):
            local = cutoff - (50 - t)
            np.testing.assert_array_equal(seen_future[fold][i], panel.future_covariates[i][local : local + 4])
    assert set(df["model"]) == {"lstm", "seasonal_naive", "naive", "recent_median", "seasonal_mean"}


def test_no_eligible_series_is_an_error(make_panel):
    panel = make_panel(n_series=2, length=40)  # 2 folds of 4: at most 36 steps before a cutoff
    cfg = ModelConfig(lookback=33, horizon=4, hidden_size=8)
    with pytest.raises(ValueError, match=r"^no fold has an eligible series: .* lookback \+ horizon = 37 "):
        backtest(panel, cfg, TRAIN, n_folds=2, season_length=SEASON)


def test_summarize_means_per_model():
    df = pd.DataFrame(
        {
            "fold": [0, 0, 1, 1],
            "cutoff": [8, 8, 9, 9],
            "series_id": ["a", "a", "a", "a"],
            "model": ["lstm", "naive", "lstm", "naive"],
            "mae": [1.0, 2.0, 3.0, 6.0],
            "rmse": [1.0, 1.0, 1.0, 1.0],
            "smape": [10.0, 20.0, 30.0, 40.0],
            "mase": [0.5, np.nan, 1.5, 2.0],
            "coverage": [0.5, 1.0, 1.0, np.nan],
        }
    )
    s = summarize(df)
    assert list(s.index) == ["lstm", "naive"]
    assert list(s.columns) == ["mae", "rmse", "smape", "mase", "coverage"]
    assert s.loc["lstm", "coverage"] == 0.75 and s.loc["naive", "coverage"] == 1.0
    assert s.loc["lstm", "mae"] == 2.0 and s.loc["naive", "mae"] == 4.0
    assert s.loc["naive", "smape"] == 30.0 and s.loc["naive", "mase"] == 2.0  # nan MASE skipped
    with pytest.raises(ValueError, match="^backtest frame is missing column 'mase'$"):
        summarize(df.drop(columns="mase"))


def test_coverage_is_nan_without_a_symmetric_interval(make_panel):
    panel = make_panel(n_series=2, length=40, period=SEASON)
    cfg = dataclasses.replace(MODEL, quantiles=(0.5,))  # a point forecast only
    df = backtest(panel, cfg, TRAIN, n_folds=1, season_length=SEASON)
    assert len(df) == 2 * 5 and df["coverage"].isna().all()
    assert np.isfinite(df["mae"]).all()


def test_holdout_mase_scores_the_last_horizon_from_one_origin(tiny_model, make_panel, make_train):
    panel = make_panel(n_series=3, length=120)
    result = fit(panel, tiny_model, make_train())
    score = holdout_mase(result, panel, season_length=12)
    horizon, origin = tiny_model.horizon, panel.n_steps - tiny_model.horizon
    preds = predict_origins(result, panel, np.array([origin]))[:, 0, :, tiny_model.median_index]
    expected = np.mean(
        [mase(panel.target[i][-horizon:], preds[i], panel.target[i][:-horizon], 12) for i in range(3)]
    )
    assert score == pytest.approx(expected)
    short = make_panel(n_series=1, length=tiny_model.lookback + tiny_model.horizon - 1)
    with pytest.raises(ValueError, match="no series has lookback \\+ horizon = 16 steps to score"):
        holdout_mase(result, short.select(["s0"]), season_length=12)

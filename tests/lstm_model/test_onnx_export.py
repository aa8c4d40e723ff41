import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lstm_model import ModelConfig, SeriesScaler, TrainResult, fit, predict
from lstm_model.calibration import apply_calibration, quantile_pairs
from lstm_model.model import LSTMForecaster
from lstm_model.onnx_export import export_bytes, export_metadata, export_onnx

ort = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4
BATCHES = (1, 5, 33)  # one window, and batch sizes other than the traced one

# Every model option takes each of its values at least once.
CASES = {
    "plain": dict(patch_len=1, embedding_dim=0, n_past=0, n_future=0, instance_norm=True),
    "patches": dict(patch_len=4, embedding_dim=0, n_past=0, n_future=0, instance_norm=True),
    "embedding": dict(patch_len=1, embedding_dim=3, n_past=0, n_future=0, instance_norm=False),
    "past_covariates": dict(patch_len=3, embedding_dim=0, n_past=2, n_future=0, instance_norm=True),
    "future_covariates": dict(patch_len=1, embedding_dim=0, n_past=0, n_future=2, instance_norm=False),
    "everything": dict(patch_len=4, embedding_dim=2, n_past=1, n_future=2, instance_norm=True),
    "no_instance_norm": dict(patch_len=2, embedding_dim=2, n_past=2, n_future=1, instance_norm=False),
}
QUANTILES = {
    "three": (0.1, 0.5, 0.9),
    "five": (0.05, 0.25, 0.5, 0.75, 0.95),
    "mse": (0.5,),  # training.loss = "mse": one output, no interval
}


def random_result(make_panel, make_train, *, quantiles, n_past, n_future, seed=0, **model) -> TrainResult:
    """A model with random weights (an untrained one is the naive forecast: too easy to match) and a
    random calibration, with a scaler fitted on a small panel."""
    panel = make_panel(n_series=4, length=60, n_past=n_past, n_future=n_future, seed=seed)
    cfg = ModelConfig(lookback=12, horizon=4, hidden_size=8, num_layers=2, quantiles=quantiles, **model)
    torch.manual_seed(seed)
    net = LSTMForecaster(1 + n_past + n_future, n_future, cfg, n_series=panel.n_series).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    rng = np.random.default_rng(seed)
    return TrainResult(
        model=net, scaler=SeriesScaler().fit(panel), model_config=cfg, train_config=make_train(),
        past_names=panel.past_names, future_names=panel.future_names, history=[], best_epoch=0,
        stopped_reason="max_epochs", device="cpu",
        calibration=rng.uniform(-0.2, 0.5, (len(quantile_pairs(quantiles)), cfg.horizon)),
    )  # fmt: skip


def inputs(result: TrainResult, batch: int, seed: int) -> dict[str, np.ndarray]:
    cfg, model = result.model_config, result.model
    rng = np.random.default_rng(seed)
    feeds = {
        "x_past": rng.standard_normal((batch, cfg.lookback, model.n_inputs)),
        "x_future": rng.standard_normal((batch, cfg.horizon, model.n_future)),
        # the last row is the "unknown series" embedding
        "series": rng.integers(0, model.n_series + 1, batch),
    }
    names = json.loads(export_metadata(result)["inputs"])
    return {n: feeds[n].astype(np.int64 if n == "series" else np.float32) for n in names}


def torch_forecast(result: TrainResult, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The scaled forecast as the pipeline computes it: the network, then the calibration."""
    tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.no_grad():
        out = result.model(tensors["x_past"], tensors.get("x_future"), tensors.get("series")).numpy()
    return apply_calibration(out, result.calibration, result.model_config.quantiles)


# Every case with three quantiles; the other quantile sets with the plain and the full model.
PAIRS = [(case, "three") for case in CASES] + [
    (case, q) for case in ("plain", "everything") for q in QUANTILES if q != "three"
]


@pytest.mark.parametrize(("case", "quantile_set"), PAIRS, ids=[f"{c}-{q}" for c, q in PAIRS])
def test_onnxruntime_matches_pytorch_for_every_model_option(make_panel, make_train, case, quantile_set):
    quantiles = QUANTILES[quantile_set]
    result = random_result(make_panel, make_train, quantiles=quantiles, **CASES[case])
    session = ort.InferenceSession(export_bytes(result), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == json.loads(export_metadata(result)["inputs"])
    assert [o.shape for o in session.get_outputs()] == [["batch", 4, len(quantiles)]]
    worst = 0.0
    for seed, batch in enumerate(BATCHES):
        feeds = inputs(result, batch, seed)
        (got,) = session.run(None, feeds)
        assert got.shape == (batch, 4, len(quantiles))
        worst = max(worst, float(np.abs(got - torch_forecast(result, feeds)).max()))
    print(f"{case}-{quantile_set}: max abs difference {worst:.2e}")
    assert worst < TOLERANCE


def test_the_metadata_says_how_to_feed_the_model(make_panel, make_train):
    result = random_result(make_panel, make_train, quantiles=(0.1, 0.5, 0.9), **CASES["everything"])
    session = ort.InferenceSession(
        export_bytes(result, {"version": "v1"}), providers=["CPUExecutionProvider"]
    )
    meta = session.get_modelmeta().custom_metadata_map
    assert {k: meta[k] for k in meta if k not in ("scaler", "model_config")} == {
        "inputs": '["x_past", "x_future", "series"]',
        "output": "quantiles",
        "x_past_columns": '["target", "p0", "f0", "f1"]',
        "x_future_columns": '["f0", "f1"]',
        "past_names": '["p0"]',
        "future_names": '["f0", "f1"]',
        "lookback": "12",
        "horizon": "4",
        "quantiles": "[0.1, 0.5, 0.9]",
        "patch_len": "4",
        "embedding_dim": "2",
        "instance_norm": "true",
        "n_series": "4",
        "version": "v1",
    }
    assert ModelConfig.from_dict(json.loads(meta["model_config"])) == result.model_config
    scaler = json.loads(meta["scaler"])
    mean, std = result.scaler.feature_stats(result.series_ids)
    assert scaler["series_ids"] == ["s0", "s1", "s2", "s3"]
    assert scaler["columns"] == ["target", "p0", "f0", "f1"]
    np.testing.assert_array_equal(scaler["mean"], mean)
    np.testing.assert_array_equal(scaler["std"], std)


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_code() -> str:
    """The Python block of README.md's section "Forecasting with an ONNX file"."""
    section = README.read_text().split("## Forecasting with an ONNX file\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def readme_forecast(path, series_id, history, past=None, future_history=None, future_next=None):
    """Runs README's lines as a user would: their file and series, and with covariates the stacking that
    the comment shows."""
    code = readme_code()
    for line in ('"model.onnx"', 'index("OT")', "np.column_stack([history])[-lookback:]"):
        assert line in code  # the lines this test puts the user's values in
    code = code.replace('"model.onnx"', repr(path)).replace('index("OT")', f"index({series_id!r})")
    if past is not None or future_history is not None:
        stacked = "np.column_stack([history, past_covariates, future_covariates_history])"
        code = code.replace("np.column_stack([history])[-lookback:]", f"{stacked}[-lookback:]")
    n = len(history)
    scope = {
        "history": history,
        "past_covariates": past if past is not None else np.zeros((n, 0)),
        "future_covariates_history": future_history if future_history is not None else np.zeros((n, 0)),
        "future_next": future_next,
    }
    exec(code, scope)
    return scope["forecast"]


@pytest.mark.parametrize("case", ["plain", "everything"])
def test_the_readme_steps_forecast_what_predict_forecasts(make_panel, make_train, tmp_path, case):
    options = CASES[case]
    n_past, n_future = options["n_past"], options["n_future"]
    panel = make_panel(n_series=3, length=80, n_past=n_past, n_future=n_future, noise=0.1)
    model = {k: v for k, v in options.items() if k not in ("n_past", "n_future")}
    cfg = ModelConfig(lookback=12, horizon=4, hidden_size=8, num_layers=2, **model)
    result = fit(panel, cfg, make_train(max_epochs=3))
    path = export_onnx(result, tmp_path / "model.onnx")
    rng = np.random.default_rng(1)
    future = [rng.integers(0, 2, (4, n_future)).astype(np.float32) for _ in range(3)] if n_future else None
    expected = predict(result, panel, future)  # (n_series, horizon, Q)
    for i, sid in enumerate(panel.series_ids):
        got = readme_forecast(
            str(path), sid, panel.target[i],
            future_history=panel.future_covariates[i] if n_future else None,
            future_next=future[i] if future else None,
            past=panel.past_covariates[i] if n_past else None,
        )  # fmt: skip
        target_std = result.scaler.feature_stats([sid])[1][0, 0]
        np.testing.assert_allclose(got, expected[i], rtol=0, atol=TOLERANCE * target_std)

import io

import numpy as np
import pytest
import torch

from lstm_model.panel import Panel
from lstm_model.scaling import SeriesScaler


def test_fit_returns_self_and_standardises_each_series_and_column(make_panel):
    panel = make_panel(n_series=3, length=60, n_past=2, n_future=1)
    scaler = SeriesScaler()
    assert scaler.fit(panel) is scaler
    for i, sid in enumerate(panel.series_ids):
        y = scaler.transform_target(sid, panel.target[i])
        p = scaler.transform_past(sid, panel.past_covariates[i])
        assert y.dtype == np.float32 and p.dtype == np.float32
        assert abs(float(y.mean())) < 1e-5 and abs(float(y.std()) - 1) < 1e-5
        np.testing.assert_allclose(p.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(p.std(axis=0), 1, atol=1e-5)
        f = scaler.transform_future(sid, panel.future_covariates[i])
        np.testing.assert_allclose(f.mean(axis=0), 0, atol=1e-5)


def test_inverse_target_round_trip_in_float64(make_panel):
    panel = make_panel(n_series=2, length=40)
    scaler = SeriesScaler().fit(panel)
    back = scaler.inverse_target("s1", scaler.transform_target("s1", panel.target[1]))
    assert back.dtype == np.float64
    np.testing.assert_allclose(back, panel.target[1], rtol=1e-6)


def test_constant_series_and_flags_get_unit_scale():
    n = 6
    panel = Panel(
        ("c",),
        (np.full(n, 5.0, np.float32),),
        (np.zeros((n, 0), np.float32),),
        (np.ones((n, 1), np.float32),),
        future_names=("holiday",),
    )
    scaler = SeriesScaler().fit(panel)
    np.testing.assert_array_equal(scaler.transform_target("c", panel.target[0]), np.zeros(n))
    np.testing.assert_array_equal(scaler.transform_future("c", np.array([[0.0], [1.0]])), [[-1.0], [0.0]])
    assert scaler.to_dict()["target_std"] == [1.0]


def test_statistics_come_only_from_the_panel_it_is_fitted_on(make_panel):
    full = make_panel(n_series=2, length=100)
    train = full.truncate(60)
    scaler = SeriesScaler().fit(train)
    y = train.target[0].astype(np.float64)
    d = scaler.to_dict()
    assert d["target_mean"][0] == pytest.approx(y.mean(), rel=1e-12)
    assert d["target_std"][0] == pytest.approx(y.std(), rel=1e-12)
    assert d["target_mean"][0] != pytest.approx(float(full.target[0].mean()), rel=1e-3)


def test_unknown_series_and_unfitted_scaler(make_panel):
    panel = make_panel(n_series=2, length=30)
    with pytest.raises(RuntimeError, match=r"^SeriesScaler is not fitted; call fit\(panel\) first$"):
        SeriesScaler().transform_target("s0", panel.target[0])
    scaler = SeriesScaler().fit(panel)
    with pytest.raises(KeyError) as exc:
        scaler.inverse_target("zz", np.zeros(3))
    assert exc.value.args[0] == "series 'zz' was not seen when the scaler was fitted"


def test_covariate_width_and_panel_feature_mismatch(make_panel):
    scaler = SeriesScaler().fit(make_panel(n_series=1, length=30, n_past=2))
    with pytest.raises(ValueError, match=r"^past covariates need a last dimension of 2, got shape \(5, 3\)$"):
        scaler.transform_past("s0", np.zeros((5, 3)))
    other = make_panel(n_series=1, length=30, n_past=1)
    with pytest.raises(ValueError, match=r"^panel covariates past=\('p0',\) future=\(\) do not match the"):
        scaler.transform_panel(other)


def test_transform_panel_matches_per_series_transforms(make_panel):
    panel = make_panel(n_series=2, length=30, n_past=1, n_future=1)
    scaler = SeriesScaler().fit(panel)
    scaled = scaler.transform_panel(panel)
    np.testing.assert_array_equal(scaled.target[1], scaler.transform_target("s1", panel.target[1]))
    np.testing.assert_array_equal(
        scaled.future_covariates[0], scaler.transform_future("s0", panel.future_covariates[0])
    )


def test_dict_round_trip_is_plain_and_loads_with_weights_only(make_panel):
    panel = make_panel(n_series=3, length=40, n_past=2, n_future=1)
    scaler = SeriesScaler().fit(panel)
    d = scaler.to_dict()
    assert isinstance(d["target_mean"], list) and isinstance(d["past_std"][0][0], float)
    buf = io.BytesIO()
    torch.save(d, buf)
    buf.seek(0)
    restored = SeriesScaler.from_dict(torch.load(buf, weights_only=True))
    assert restored.series_ids == panel.series_ids and restored.past_names == ("p0", "p1")
    for i, sid in enumerate(panel.series_ids):
        np.testing.assert_array_equal(
            restored.transform_past(sid, panel.past_covariates[i]),
            scaler.transform_past(sid, panel.past_covariates[i]),
        )
        np.testing.assert_array_equal(
            restored.inverse_target(sid, np.arange(3.0)), scaler.inverse_target(sid, np.arange(3.0))
        )


def test_round_trip_without_covariates_and_bad_dict(make_panel):
    scaler = SeriesScaler().fit(make_panel(n_series=2, length=20))
    restored = SeriesScaler.from_dict(scaler.to_dict())
    assert restored.to_dict() == scaler.to_dict()
    broken = {**scaler.to_dict(), "target_std": [1.0]}
    with pytest.raises(ValueError, match=r"^scaler dict 'target_std' has shape \(1,\), expected \(2,\)$"):
        SeriesScaler.from_dict(broken)
    with pytest.raises(ValueError, match=r"^scaler dict is missing key 'past_mean'$"):
        SeriesScaler.from_dict({k: v for k, v in scaler.to_dict().items() if k != "past_mean"})

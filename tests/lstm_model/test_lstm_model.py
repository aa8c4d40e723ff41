import warnings

import pytest
import torch

from lstm_model.config import ModelConfig
from lstm_model.model import INSTANCE_NORM_FLOOR, LSTMForecaster

CFG = ModelConfig(lookback=10, horizon=4, hidden_size=8, num_layers=2, dropout=0.1)
Q = len(CFG.quantiles)

# One tiny variant per architecture option; every one must keep the (batch, horizon, Q) contract.
OPTIONS = {
    "default": {},
    "patches": {"patch_len": 5},
    "embedding": {"embedding_dim": 3},
    "no_instance_norm": {"instance_norm": False},
    "five_quantiles": {"quantiles": (0.05, 0.25, 0.5, 0.75, 0.95)},
    "everything": {"patch_len": 2, "embedding_dim": 2, "instance_norm": False, "context_size": 3},
}


def build(n_inputs: int, n_future: int, **options) -> LSTMForecaster:
    cfg = ModelConfig(lookback=10, horizon=4, hidden_size=8, num_layers=2, dropout=0.1, **options)
    return LSTMForecaster(n_inputs, n_future, cfg, n_series=3 if cfg.embedding_dim else 0)


def inputs(model: LSTMForecaster, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cfg = model.cfg
    x_past = torch.randn(batch, cfg.lookback, model.n_inputs)
    x_future = torch.randn(batch, cfg.horizon, model.n_future)
    return x_past, x_future, torch.arange(batch) % 3


def test_forward_shape_without_future_covariates():
    model = LSTMForecaster(n_inputs=3, n_future=0, cfg=CFG)
    out = model(torch.randn(5, 10, 3))
    assert tuple(out.shape) == (5, 4, Q)
    assert tuple(model(torch.randn(5, 10, 3), torch.zeros(5, 4, 0)).shape) == (5, 4, Q)


@pytest.mark.parametrize("n_future", [0, 2])
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_forward_shape_for_each_option(option, n_future):
    torch.manual_seed(0)
    model = build(n_inputs=3 + n_future, n_future=n_future, **OPTIONS[option])
    n_quantiles = len(model.cfg.quantiles)
    for mode in (model.train, model.eval):
        mode()
        out = model(*inputs(model, 7))
        assert tuple(out.shape) == (7, 4, n_quantiles) and out.dtype == torch.float32
        assert torch.isfinite(out).all()


def test_decoder_reads_one_context_per_step_plus_the_future_covariates():
    model = LSTMForecaster(n_inputs=4, n_future=2, cfg=CFG)
    ctx = CFG.context_size
    assert model.context[0].out_features == 4 * ctx + ctx  # one per horizon step + one shared
    assert model.decoder[0].in_features == 2 * ctx + 2  # local + shared context + n_future
    assert model.decoder[-1].out_features == Q


def test_patches_shorten_the_recurrence():
    """With patch_len p the LSTM reads lookback / p steps, each a linear embedding of p raw steps."""
    model = build(n_inputs=2, n_future=0, patch_len=5)
    assert model.patch is not None and model.patch[0].in_features == 5 * 2
    assert model.lstm.input_size == 8  # hidden_size: the patch embedding's width
    seen = []
    model.lstm.register_forward_hook(lambda module, args, output: seen.append(tuple(args[0].shape)))
    model(torch.randn(6, 10, 2))
    assert seen == [(6, 2, 8)]  # (batch, lookback / patch_len, hidden)
    assert build(n_inputs=2, n_future=0).patch is None  # patch_len 1: the raw steps


def test_future_covariates_reach_the_output():
    torch.manual_seed(0)
    model = LSTMForecaster(n_inputs=2, n_future=1, cfg=CFG).eval()
    torch.nn.init.normal_(model.decoder[-1].weight)
    x = torch.randn(3, 10, 2)
    a = model(x, torch.zeros(3, 4, 1))
    b = model(x, torch.ones(3, 4, 1))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_untrained_model_is_the_naive_forecast_for_every_quantile(option):
    """Zero-initialised decoder output and highway, anchored at the last scaled target: persistence."""
    torch.manual_seed(0)
    model = build(n_inputs=2, n_future=1, **OPTIONS[option])
    x_past, x_future, series = inputs(model, 6)
    n_quantiles = len(model.cfg.quantiles)
    naive = x_past[:, -1, 0][:, None, None].expand(6, 4, n_quantiles)
    for mode in (model.train, model.eval):  # dropout must not break it either
        mode()
        torch.testing.assert_close(model(x_past, x_future, series), naive, rtol=0, atol=0)
    torch.nn.init.normal_(model.decoder[-1].bias)
    assert not torch.equal(model(x_past, x_future, series), naive)


def test_instance_norm_makes_the_forecast_follow_the_window_level_and_spread():
    """RevIN: shifting a window shifts its forecast, stretching it around its last value stretches the
    forecast's deviation from that value by the same factor. Without it the network sees raw units."""
    torch.manual_seed(0)
    model = build(n_inputs=1, n_future=0).eval()
    for layer in (model.decoder[-1], model.highway):
        torch.nn.init.normal_(layer.weight)
    x = torch.randn(5, 10, 1)
    last = x[:, -1:, :]  # (batch, 1, 1)
    out = model(x)
    torch.testing.assert_close(model(x + 7.0), out + 7.0, rtol=0, atol=1e-4)
    stretched = model(last + 3.0 * (x - last))
    torch.testing.assert_close(stretched - last, 3.0 * (out - last), rtol=1e-4, atol=1e-4)

    plain = build(n_inputs=1, n_future=0, instance_norm=False).eval()
    plain.load_state_dict(model.state_dict())
    plain_out = plain(x)
    assert not torch.allclose(plain(last + 3.0 * (x - last)) - last, 3.0 * (plain_out - last), atol=1e-3)


def test_flat_windows_and_a_one_step_lookback_stay_finite():
    """A flat window has spread 0 (the floor is divided out instead); a one-step lookback used to give
    nan from the unbiased std of a single value."""
    torch.manual_seed(0)
    model = build(n_inputs=1, n_future=0)
    for layer in (model.decoder[-1], model.highway):
        torch.nn.init.normal_(layer.weight)
    x = torch.full((4, 10, 1), 2.5, requires_grad=True)
    out = model(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # The forecast moves away from the flat level by at most floor * |network output|: no blow-up.
    assert (out - 2.5).abs().max() < 100 * INSTANCE_NORM_FLOOR

    one_step = LSTMForecaster(1, 0, ModelConfig(lookback=1, horizon=3, hidden_size=8))
    torch.nn.init.normal_(one_step.decoder[-1].bias)
    assert torch.isfinite(one_step(torch.randn(4, 1, 1))).all()


def test_series_embedding_distinguishes_series_and_keeps_the_unknown_row_at_zero():
    torch.manual_seed(0)
    model = build(n_inputs=1, n_future=0, embedding_dim=3).eval()
    assert model.embedding is not None and tuple(model.embedding.weight.shape) == (4, 3)  # 3 series + unknown
    assert torch.equal(model.embedding.weight[-1], torch.zeros(3))
    torch.nn.init.normal_(model.decoder[-1].weight)
    x = torch.randn(1, 10, 1).expand(3, 10, 1)  # the same window for three series
    out = model(x, None, torch.tensor([0, 1, 2]))
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])
    without = build(n_inputs=1, n_future=0)
    assert without.embedding is None and without.n_series == 0


def test_dropout_only_between_stacked_layers():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nn.LSTM warns when dropout is set with a single layer
        single = LSTMForecaster(1, 0, ModelConfig(lookback=5, horizon=2, num_layers=1, dropout=0.3))
    assert single.lstm.dropout == 0.0
    stacked = LSTMForecaster(1, 0, ModelConfig(lookback=5, horizon=2, num_layers=3, dropout=0.3))
    assert stacked.lstm.dropout == 0.3 and stacked.lstm.num_layers == 3


def test_input_validation_messages():
    model = LSTMForecaster(n_inputs=3, n_future=1, cfg=CFG)
    with pytest.raises(ValueError, match=r"^x_future of shape \(2, 4, 1\) is required"):
        model(torch.randn(2, 10, 3))
    with pytest.raises(ValueError, match=r"^x_future must have shape \(2, 4, 1\), got \(2, 5, 1\)$"):
        model(torch.randn(2, 10, 3), torch.randn(2, 5, 1))
    with pytest.raises(ValueError, match=r"^x_past must have shape \(batch, 10, 3\), got \(2, 10, 2\)$"):
        model(torch.randn(2, 10, 2), torch.randn(2, 4, 1))
    no_future = LSTMForecaster(n_inputs=1, n_future=0, cfg=CFG)
    with pytest.raises(ValueError, match="^x_future was given but the model has no future covariates$"):
        no_future(torch.randn(2, 10, 1), torch.randn(2, 4, 1))
    embeds = build(n_inputs=1, n_future=0, embedding_dim=2)
    message = r"^series indices of shape \(2,\) are required: the model embeds series$"
    with pytest.raises(ValueError, match=message):
        embeds(torch.randn(2, 10, 1))
    with pytest.raises(ValueError, match=message):
        embeds(torch.randn(2, 10, 1), None, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"^n_inputs must be a positive integer"):
        LSTMForecaster(0, 0, CFG)
    with pytest.raises(ValueError, match=r"^n_future must be an integer in \[0, n_inputs\), got 2$"):
        LSTMForecaster(2, 2, CFG)
    with pytest.raises(ValueError, match=r"^a series embedding needs n_series >= 1, got 0$"):
        LSTMForecaster(1, 0, ModelConfig(lookback=10, horizon=4, embedding_dim=2))


def test_gradients_flow_to_the_lstm_after_the_first_update():
    """The zero-initialised output layer blocks gradients to the LSTM on the very first step only."""
    torch.manual_seed(0)
    model = LSTMForecaster(n_inputs=1, n_future=0, cfg=CFG)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 10, 1), torch.randn(8, 4, 1)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y.expand(8, 4, Q)).backward()
        opt.step()
    assert model.lstm.weight_hh_l0.grad is not None and model.lstm.weight_hh_l0.grad.abs().sum() > 0

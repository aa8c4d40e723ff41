import warnings

import pytest
import torch

from lstm_model.config import ModelConfig
from lstm_model.model import LSTMForecaster

CFG = ModelConfig(lookback=10, horizon=4, hidden_size=8, num_layers=2, dropout=0.1)


def test_forward_shape_without_future_covariates():
    model = LSTMForecaster(n_inputs=3, n_future=0, cfg=CFG)
    out = model(torch.randn(5, 10, 3))
    assert tuple(out.shape) == (5, 4)
    assert tuple(model(torch.randn(5, 10, 3), torch.zeros(5, 4, 0)).shape) == (5, 4)


def test_forward_shape_with_future_covariates_and_head_width():
    model = LSTMForecaster(n_inputs=4, n_future=2, cfg=CFG)
    assert model.head[0].in_features == 8 + 4 * 2  # hidden + horizon * n_future
    out = model(torch.randn(7, 10, 4), torch.randn(7, 4, 2))
    assert tuple(out.shape) == (7, 4)


def test_future_covariates_reach_the_output():
    torch.manual_seed(0)
    model = LSTMForecaster(n_inputs=2, n_future=1, cfg=CFG).eval()
    torch.nn.init.normal_(model.head[-1].weight)
    x = torch.randn(3, 10, 2)
    a = model(x, torch.zeros(3, 4, 1))
    b = model(x, torch.ones(3, 4, 1))
    assert not torch.allclose(a, b)


def test_untrained_model_is_the_naive_forecast():
    """Zero-initialised last layer + skip from the last scaled target: starts at persistence."""
    model = LSTMForecaster(n_inputs=2, n_future=0, cfg=CFG).eval()
    x = torch.randn(6, 10, 2)
    out = model(x)
    torch.testing.assert_close(out, x[:, -1, 0:1].expand(6, 4), rtol=0, atol=0)
    torch.nn.init.normal_(model.head[-1].bias)
    assert not torch.equal(model(x), out)


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
    with pytest.raises(ValueError, match=r"^x_past must have shape \(batch, lookback, 3\), got \(2, 10, 2"):
        model(torch.randn(2, 10, 2), torch.randn(2, 4, 1))
    no_future = LSTMForecaster(n_inputs=1, n_future=0, cfg=CFG)
    with pytest.raises(ValueError, match="^x_future was given but the model has no future covariates$"):
        no_future(torch.randn(2, 10, 1), torch.randn(2, 4, 1))
    with pytest.raises(ValueError, match=r"^n_inputs must be a positive integer"):
        LSTMForecaster(0, 0, CFG)
    with pytest.raises(ValueError, match=r"^n_future must be an integer in \[0, n_inputs\), got 2$"):
        LSTMForecaster(2, 2, CFG)


def test_gradients_flow_to_the_lstm_after_the_first_update():
    torch.manual_seed(0)
    model = LSTMForecaster(n_inputs=1, n_future=0, cfg=CFG)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 10, 1), torch.randn(8, 4)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    assert model.lstm.weight_hh_l0.grad is not None and model.lstm.weight_hh_l0.grad.abs().sum() > 0

"""Dropout inside layers, as PyTorch: between the layers of GRU/LSTM (not after the
last), on MultiheadAttention's weights (returned ones included), in
scaled_dot_product_attention and so in TransformerEncoderLayer; training mode only
(scaled_dot_product_attention: always). With p = 1 every dropped value is 0, so the
results equal PyTorch's exactly; with 0 < p < 1 the kept values are scaled by 1/(1-p),
the same seed gives the same mask and a compiled step replays it to the bit."""
import warnings

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.nn as nn
import tapegrad.nn.functional as F
from replay_check import replays_as_eager

torch = pytest.importorskip("torch")


def _copy(tm, gm):
    for (_, t), (_, g) in zip(tm.named_parameters(), gm.named_parameters()):
        g.data = tg.tensor(t.detach().numpy().copy())


@pytest.mark.parametrize("cls", ["GRU", "LSTM"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_dropout_between_layers_as_pytorch(cls, bidirectional):
    kw = dict(num_layers=3, dropout=1.0, bidirectional=bidirectional)
    tm = getattr(torch.nn, cls)(4, 5, **kw).double()
    gm = getattr(nn, cls)(4, 5, dtype=tg.float64, **kw)
    _copy(tm, gm)
    x0 = np.random.default_rng(0).standard_normal((6, 2, 4))
    out = []
    for L, m in ((tg, gm), (torch, tm)):
        for training in (True, False):
            m.train(training)
            x = L.tensor(x0, requires_grad=True)
            y, state = m(x)
            h = state[0] if cls == "LSTM" else state
            (y.sum() + (h * h).sum()).backward()
            out += [y.detach().numpy(), h.detach().numpy(), x.grad.numpy()]
    half = len(out) // 2
    for got, want in zip(out[:half], out[half:]):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)
    assert not np.allclose(out[0], out[3])        # training dropped, evaluation did not


def test_rnn_dropout_checks_and_repr_as_pytorch():
    for bad in (1.5, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="dropout should be a number in range"):
            nn.GRU(3, 4, num_layers=2, dropout=bad)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = nn.LSTM(3, 4, dropout=0.5)
    assert [str(w.message) for w in caught] == [
        "dropout option adds dropout after all but last recurrent layer, so non-zero "
        "dropout expects num_layers greater than 1, but got dropout=0.5 and num_layers=1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = repr(torch.nn.LSTM(3, 4, dropout=0.5))
    assert repr(m) == want == "LSTM(3, 4, dropout=0.5)"
    assert repr(nn.GRU(3, 4, num_layers=2, dropout=0.25, bidirectional=True)) == \
        "GRU(3, 4, num_layers=2, dropout=0.25, bidirectional=True)"


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_dropout_as_pytorch(need_weights):
    tm = torch.nn.MultiheadAttention(8, 2, dropout=1.0).double()
    gm = nn.MultiheadAttention(8, 2, dropout=1.0, dtype=tg.float64)
    _copy(tm, gm)
    rng = np.random.default_rng(1)
    q0, k0 = rng.standard_normal((5, 2, 8)), rng.standard_normal((6, 2, 8))
    out = []
    for L, m in ((tg, gm), (torch, tm)):
        for training in (True, False):
            m.train(training)
            q, k = L.tensor(q0, requires_grad=True), L.tensor(k0, requires_grad=True)
            y, w = m(q, k, k, need_weights=need_weights)
            (y * y.detach().cos()).sum().backward()
            out += [y.detach().numpy(), q.grad.numpy(), k.grad.numpy()]
            out += [w.detach().numpy()] if need_weights else []
    half = len(out) // 2
    for got, want in zip(out[:half], out[half:]):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)
    assert not out[1].any()             # all weights dropped: q does not matter


def test_attention_dropout_keeps_and_scales():
    m = nn.MultiheadAttention(8, 2, dropout=0.5, dtype=tg.float64)
    x = tg.tensor(np.random.default_rng(2).standard_normal((40, 3, 8)))
    m.eval()
    _, w_eval = m(x, x, x, average_attn_weights=False)
    m.train()
    tg.manual_seed(7)
    _, w1 = m(x, x, x, average_attn_weights=False)
    tg.manual_seed(7)
    _, w2 = m(x, x, x, average_attn_weights=False)
    w_eval, w1 = w_eval.detach().numpy(), w1.detach().numpy()
    np.testing.assert_array_equal(w1, w2.detach().numpy())
    kept = w1 != 0
    assert 0.45 < kept.mean() < 0.55
    np.testing.assert_allclose(w1[kept], 2 * w_eval[kept], rtol=1e-12)


def test_scaled_dot_product_attention_dropout_as_pytorch():
    rng = np.random.default_rng(3)
    q0, k0, v0 = (rng.standard_normal((2, 3, 4, 5)) for _ in range(3))
    out = []
    for L in (tg, torch):
        q, k, v = (L.tensor(a, requires_grad=True) for a in (q0, k0, v0))
        y = L.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=1.0)
        (y + 1).sum().backward()
        out.append([y.detach().numpy(), q.grad.numpy(), v.grad.numpy()])
    for got, want in zip(*out):
        np.testing.assert_array_equal(got, want)
    q = tg.tensor(q0)
    with pytest.raises(RuntimeError, match="dropout probability has to be between 0 and 1, "
                                           "but got 1.5"):
        F.scaled_dot_product_attention(q, q, q, dropout_p=1.5)
    tg.manual_seed(3)
    a = F.scaled_dot_product_attention(q, q, q, dropout_p=0.4)
    tg.manual_seed(3)
    np.testing.assert_array_equal(a.numpy(),
                                  F.scaled_dot_product_attention(q, q, q, dropout_p=0.4).numpy())
    assert not np.array_equal(a.numpy(), F.scaled_dot_product_attention(q, q, q).numpy())


def test_transformer_encoder_layer_drops_attention_weights_as_pytorch():
    tm = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=1.0).double()
    gm = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=1.0, dtype=tg.float64)
    assert gm.self_attn.dropout == tm.self_attn.dropout == 1.0
    _copy(tm, gm)
    x0 = np.random.default_rng(4).standard_normal((5, 2, 8))
    got, want = (m(L.tensor(x0)).detach().numpy() for L, m in ((tg, gm), (torch, tm)))
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)


def test_compiled_steps_with_layer_dropout_replay_as_eager():
    x0 = np.random.default_rng(5).standard_normal((7, 4, 6)).astype(np.float32)

    def train(wrap):
        tg.manual_seed(0)
        gru = nn.GRU(6, 8, num_layers=2, dropout=0.3)
        att = nn.MultiheadAttention(8, 2, dropout=0.2)
        params = list(gru.parameters()) + list(att.parameters())
        opt = tg.optim.SGD(params, lr=0.05)

        def step(x):
            opt.zero_grad()
            h, _ = gru(x)
            y, _ = att(h, h, h)
            loss = (y * y).mean()
            loss.backward()
            opt.step()
            return loss

        step = wrap(step)
        losses = [step(tg.tensor(x0)).item() for _ in range(6)]
        return losses, [p.detach().numpy().copy() for p in params], step

    replays_as_eager(train, 6)

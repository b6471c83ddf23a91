"""Activations, LayerNorm, Embedding and losses: values and gradients as PyTorch's
(float64, to rounding), at ordinary points and at the edges (0, the bounds, large |x|),
modules with PyTorch's defaults, and a compiled step over them equal to eager."""
import numpy as np
import pytest

import tapegrad as tg
import tapegrad.nn as nn
import tapegrad.nn.functional as F
from replay_check import replays_as_eager

torch = pytest.importorskip("torch")

X = np.array([-800.0, -30.0, -2.5, -1.0, -0.3, 0.0, 1e-9, 0.4, 1.0, 2.0, 5.0, 25.0, 800.0])

FUNCTIONS = {
    "gelu": lambda F, x: F.gelu(x),
    "gelu_tanh": lambda F, x: F.gelu(x, approximate="tanh"),
    "silu": lambda F, x: F.silu(x),
    "leaky_relu": lambda F, x: F.leaky_relu(x, 0.1),
    "elu": lambda F, x: F.elu(x, alpha=1.5),
    "softplus": lambda F, x: F.softplus(x, beta=2.0, threshold=10.0),
    "hardtanh": lambda F, x: F.hardtanh(x, -1.0, 2.0),
}


def value_and_grad(L, fn, data, up):
    x = L.tensor(data, requires_grad=True)
    y = fn(L.nn.functional, x)
    (y * L.tensor(up)).sum().backward()
    return y.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("name", FUNCTIONS)
def test_activation_values_and_gradients(name):
    up = np.linspace(0.5, 1.5, X.size)
    got = value_and_grad(tg, FUNCTIONS[name], X, up)
    want = value_and_grad(torch, FUNCTIONS[name], X, up)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-15)


def test_layer_norm_and_module():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((3, 4, 5))
    w, b = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    out = []
    for L in (tg, torch):
        x = L.tensor(data, requires_grad=True)
        wt, bt = L.tensor(w, requires_grad=True), L.tensor(b, requires_grad=True)
        y = L.nn.functional.layer_norm(x, (4, 5), wt, bt, eps=1e-5)
        (y * y.detach().sin()).sum().backward()
        out.append([y.detach().numpy(), x.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()])
    for g, t in zip(*out):
        np.testing.assert_allclose(g, t, rtol=1e-10, atol=1e-12)
    m = nn.LayerNorm(5)
    assert m.weight.tolist() == [1.0] * 5 and m.bias.tolist() == [0.0] * 5
    with pytest.raises(RuntimeError, match="expected input with shape"):
        m(tg.ones(3, 4))


def test_embedding_rows_and_padding_gradient():
    idx = [[0, 2, 2], [4, 0, 1]]
    w0 = np.arange(15.0).reshape(5, 3)
    out = []
    for L in (tg, torch):
        w = L.tensor(w0, requires_grad=True)
        y = L.nn.functional.embedding(L.tensor(idx), w, padding_idx=0)
        (y * L.tensor(np.arange(18.0).reshape(2, 3, 3))).sum().backward()
        out.append((y.detach().numpy(), w.grad.numpy()))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])
    tg.manual_seed(0)
    e = nn.Embedding(10, 4, padding_idx=-1)
    assert e.padding_idx == 9 and not e.weight.detach().numpy()[9].any()
    assert abs(e.weight.detach().numpy()[:9].std() - 1) < 0.5
    with pytest.raises(RuntimeError, match="Long"):
        e(tg.tensor([1.0]))


LOSSES = {
    "smooth_l1": lambda F, x, t: F.smooth_l1_loss(x, t, beta=0.5),
    "smooth_l1_beta0_sum": lambda F, x, t: F.smooth_l1_loss(x, t, reduction="sum", beta=0.0),
    "huber": lambda F, x, t: F.huber_loss(x, t, delta=0.7),
    "huber_none": lambda F, x, t: F.huber_loss(x, t, reduction="none", delta=2.0),
    "kl_batchmean": lambda F, x, t: F.kl_div(x.log_softmax(1), t.softmax(1),
                                             reduction="batchmean"),
    "kl_log_target_sum": lambda F, x, t: F.kl_div(x.log_softmax(1), t.log_softmax(1),
                                                  reduction="sum", log_target=True),
    "bce": lambda F, x, t: F.binary_cross_entropy(x.sigmoid(), t.sigmoid()),
    "bce_weight_sum": lambda F, x, t: F.binary_cross_entropy(
        x.sigmoid(), (t > 0).double(), weight=t.abs(), reduction="sum"),
}


@pytest.mark.parametrize("name", LOSSES)
def test_losses_values_and_gradients(name):
    rng = np.random.default_rng(1)
    xs, ts = rng.standard_normal((4, 5)) * 2, rng.standard_normal((4, 5)) * 2
    xs[0, 0], ts[0, 0] = 0.3, 0.3 + 0.5            # at the bound of smooth_l1's beta
    out = []
    for L in (tg, torch):
        x, t = L.tensor(xs, requires_grad=True), L.tensor(ts)
        y = LOSSES[name](L.nn.functional, x, t)
        y.sum().backward()
        out.append((y.detach().numpy(), x.grad.numpy()))
    for g, w in zip(*out):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15)


def test_kl_div_zero_target_and_mean_warning():
    x = tg.tensor([[-1.0, -2.0]], requires_grad=True)
    t = tg.tensor([[0.0, 1.0]])
    with pytest.warns(UserWarning, match="batchmean"):
        y = F.kl_div(x, t)
    y.backward()
    assert y.item() == 1.0 and x.grad.numpy().tolist() == [[0.0, -0.5]]


def test_module_forms_and_reprs():
    assert repr(nn.GELU(approximate="tanh")) == "GELU(approximate='tanh')"
    assert repr(nn.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"
    assert repr(nn.SiLU()) == "SiLU()"
    x = tg.tensor([-2.0, 0.5, 3.0])
    for m, f in ((nn.ELU(0.5), lambda v: F.elu(v, 0.5)), (nn.Softplus(), F.softplus),
                 (nn.Hardtanh(), F.hardtanh), (nn.SiLU(), F.silu)):
        np.testing.assert_array_equal(m(x).numpy(), f(x).numpy())
    y = tg.tensor([-1.0, 1.0, 2.5])
    assert nn.HuberLoss(delta=0.5)(x, y).item() == F.huber_loss(x, y, delta=0.5).item()
    assert nn.SmoothL1Loss()(x, y).item() == F.smooth_l1_loss(x, y).item()
    assert nn.KLDivLoss(reduction="batchmean")(x.log_softmax(0), y.softmax(0)).item() == \
        F.kl_div(x.log_softmax(0), y.softmax(0), reduction="batchmean").item()


def test_compiled_step_over_the_new_layers_equals_eager():
    """Embedding, LayerNorm, GELU, SiLU and a Huber loss in one model, trained compiled:
    every call after the first two replays, with eager's parameters bit for bit."""
    def train(wrap):
        tg.manual_seed(0)
        model = nn.Sequential(nn.Embedding(20, 8, padding_idx=0), nn.LayerNorm(8),
                              nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8), nn.SiLU(),
                              nn.Linear(8, 1))
        opt = tg.optim.Adam(model.parameters(), lr=0.01)
        lossf = nn.HuberLoss(delta=0.5)

        @wrap
        def step(tokens, y):
            opt.zero_grad()
            loss = lossf(model(tokens).squeeze(-1).mean(1), y)
            loss.backward()
            opt.step()
            return loss
        rng = np.random.default_rng(0)
        for _ in range(8):
            step(tg.tensor(rng.integers(0, 20, (4, 6))),
                 tg.tensor(rng.standard_normal(4), dtype=tg.float32))
        return [p.detach().numpy().copy() for p in model.parameters()], step
    want, _ = train(lambda f: f)
    got, step = train(tg.compile)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert step.fallbacks == 0 and step.records <= 2 and step.replays == 8 - step.records


CONVS = [  # N, C, H, W, O, kernel, stride, padding, dilation, groups
    (2, 3, 8, 7, 4, 3, 1, 0, 1, 1),
    (2, 4, 9, 9, 6, 3, 2, 1, 1, 2),
    (1, 2, 10, 10, 2, (3, 2), (2, 1), (1, 0), (2, 1), 2),
    (3, 1, 8, 8, 5, 5, 1, 2, 1, 1),
]


@pytest.mark.parametrize("case", CONVS)
def test_conv2d_as_pytorch(case):
    n, c, h, w, o, k, s, p, d, g = case
    rng = np.random.default_rng(2)
    kk = (k, k) if isinstance(k, int) else k
    x0, w0, b0 = (rng.standard_normal((n, c, h, w)), rng.standard_normal((o, c // g, *kk)),
                  rng.standard_normal(o))
    out = []
    for L in (tg, torch):
        x, wt, b = (L.tensor(a, requires_grad=True) for a in (x0, w0, b0))
        y = L.nn.functional.conv2d(x, wt, b, stride=s, padding=p, dilation=d, groups=g)
        (y * y.detach().cos()).sum().backward()
        out.append([y.detach().numpy(), x.grad.numpy(), wt.grad.numpy(), b.grad.numpy()])
    for got, want in zip(*out):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", [
    lambda F, x, w: F.conv2d(x, w, padding=1),
    lambda F, x, w: F.conv2d(x, w, stride=2, padding=(2, 1), dilation=(1, 2)),
    lambda F, x, w: F.avg_pool2d(x, 3, stride=2, padding=1) * 2.0,
    lambda F, x, w: F.unfold(x, 2, padding=1).sum(1),
], ids=["conv", "conv-strided", "avg-pool", "unfold"])
def test_padded_windows_double_backward_and_replay(fn):
    """Padding positions read the fill value inside the gather (no padded copy): the
    gradient of the gradient skips them as PyTorch's, and a replay equals eager."""
    rng = np.random.default_rng(4)
    x0, w0 = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3))
    out = []
    for L in (tg, torch):
        x, w = L.tensor(x0, requires_grad=True), L.tensor(w0, requires_grad=True)
        y = fn(L.nn.functional, x, w)
        gx, = L.autograd.grad((y * y).sum(), x, create_graph=True)
        (gx * gx).sum().backward()
        out.append([gx.detach().numpy(), x.grad.numpy(), w.grad])
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-10, atol=1e-12)
    if out[1][2] is not None:
        np.testing.assert_allclose(out[0][2].numpy(), out[1][2].numpy(), rtol=1e-10)
    x = tg.tensor(x0.astype(np.float32), requires_grad=True)
    w = tg.tensor(w0.astype(np.float32), requires_grad=True)

    def step():
        x.grad = None
        loss = (fn(tg.nn.functional, x, w) ** 2).sum()
        loss.backward()
        return loss, x.grad

    want = step()
    c = tg.compile(step)
    for _ in range(3):
        got = c()
        assert got[0].item() == want[0].item()
        np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
    assert c.replays == 2


def test_conv1d_and_pools_as_pytorch():
    rng = np.random.default_rng(3)
    x1, w1 = rng.standard_normal((2, 4, 11)), rng.standard_normal((6, 2, 3))
    x2 = rng.standard_normal((2, 3, 9, 8))
    x2[0, 0, :2, :2] = 5.0                      # a tie inside one window
    cases = [
        (x1, lambda L, x: L.nn.functional.conv1d(x, L.tensor(w1), stride=2, padding=1,
                                                 groups=2)),
        (x2, lambda L, x: L.nn.functional.max_pool2d(x, 2)),
        (x2, lambda L, x: L.nn.functional.max_pool2d(x, 3, stride=2, padding=1)),
        (x2, lambda L, x: L.nn.functional.avg_pool2d(x, (3, 2), stride=(2, 2), padding=1)),
        (x2, lambda L, x: L.nn.functional.adaptive_avg_pool2d(x, (4, 3))),
        (x2, lambda L, x: L.nn.functional.adaptive_avg_pool2d(x, 1)),
    ]
    for data, f in cases:
        out = []
        for L in (tg, torch):
            x = L.tensor(data, requires_grad=True)
            y = f(L, x)
            (y * y.detach().sin()).sum().backward()
            out.append((y.detach().numpy(), x.grad.numpy()))
        for got, want in zip(*out):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_conv_modules_defaults_and_errors():
    tg.manual_seed(0)
    m = nn.Conv2d(3, 8, 3, padding=1)
    bound = 1 / np.sqrt(27)
    assert m.weight.shape == (8, 3, 3, 3) and np.abs(m.weight.tolist()).max() <= bound
    assert repr(nn.MaxPool2d(2)).startswith("MaxPool2d(kernel_size=2, stride=2")
    assert m(tg.ones(2, 3, 8, 8)).shape == (2, 8, 8, 8)
    with pytest.raises(RuntimeError, match="expected input"):
        m(tg.ones(2, 4, 8, 8))
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 8, 3, groups=2)
    with pytest.raises(RuntimeError, match="too small"):
        F.conv2d(tg.ones(1, 1, 2, 2), tg.ones(1, 1, 3, 3))


def test_compiled_cnn_step_equals_eager():
    def train(wrap):
        tg.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(4, 8, 3), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(8, 3))
        opt = tg.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

        @wrap
        def step(x, y):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss
        rng = np.random.default_rng(0)
        for _ in range(6):
            step(tg.tensor(rng.standard_normal((5, 1, 8, 8)), dtype=tg.float32),
                 tg.tensor(rng.integers(0, 3, 5)))
        return [p.detach().numpy().copy() for p in model.parameters()], step
    want, _ = train(lambda f: f)
    got, step = train(tg.compile)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert step.fallbacks == 0 and step.records <= 2 and step.replays == 6 - step.records


@pytest.mark.parametrize("shape", [(6, 4), (5, 3, 7), (4, 3, 5, 5)])
def test_batch_norm_train_and_eval_as_pytorch(shape):
    rng = np.random.default_rng(4)
    batches = [rng.standard_normal(shape) * 2 + 1 for _ in range(3)]
    out = []
    for L in (tg, torch):
        m = (L.nn.BatchNorm2d if len(shape) == 4 else L.nn.BatchNorm1d)(shape[1],
                                                                         momentum=0.2)
        m = m.double()
        seen = []
        for b in batches:
            x = L.tensor(b, requires_grad=True)
            y = m(x)
            (y * y.detach().cos()).sum().backward()
            seen += [y.detach().numpy(), x.grad.numpy(), m.weight.grad.numpy()]
        m.eval()
        seen.append(m(L.tensor(batches[0])).detach().numpy())
        seen += [m.running_mean.numpy(), m.running_var.numpy(),
                 np.array(m.num_batches_tracked.item())]
        out.append(seen)
    for got, want in zip(*out):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)


def test_batch_norm_compiled_train_steps_equal_eager():
    def train(wrap):
        tg.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
        opt = tg.optim.SGD(model.parameters(), lr=0.1)

        @wrap
        def step(x, y):
            model.train()
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            return loss
        rng = np.random.default_rng(0)
        for _ in range(6):
            step(tg.tensor(rng.standard_normal((7, 6)), dtype=tg.float32),
                 tg.tensor(rng.standard_normal((7, 2)), dtype=tg.float32))
        bn = model[1]
        return ([p.detach().numpy().copy() for p in model.parameters()] +
                [bn.running_mean.numpy().copy(), bn.running_var.numpy().copy(),
                 bn.num_batches_tracked.numpy().copy()]), step
    want, _ = train(lambda f: f)
    got, step = train(tg.compile)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert got[-1] == 6
    assert step.fallbacks == 0 and step.records <= 2 and step.replays == 6 - step.records


def _copy_params(src, dst):
    for (n, p), (m, q) in zip(src.named_parameters(), dst.named_parameters()):
        assert n == m
        q.data = tg.tensor(p.detach().numpy().copy())


RNNS = [
    ("LSTM", dict(num_layers=2, bidirectional=True, batch_first=True), (4, 6, 3)),
    ("LSTM", dict(), (6, 3)),                                    # unbatched
    ("GRU", dict(num_layers=2), (6, 4, 3)),
    ("GRU", dict(bidirectional=True, bias=False), (6, 4, 3)),
]


@pytest.mark.parametrize("cls,kw,shape", RNNS)
def test_recurrent_layers_as_pytorch(cls, kw, shape):
    tm = getattr(torch.nn, cls)(3, 5, **kw).double()
    gm = getattr(nn, cls)(3, 5, **kw, dtype=tg.float64)
    assert [n for n, _ in gm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    _copy_params(tm, gm)
    x0 = np.random.default_rng(8).standard_normal(shape)
    out = []
    for L, m in ((tg, gm), (torch, tm)):
        x = L.tensor(x0, requires_grad=True)
        y, hn = m(x)
        h = hn[0] if isinstance(hn, tuple) else hn
        (y.sum() + (h * h).sum()).backward()
        out.append([y.detach().numpy(), h.detach().numpy(), x.grad.numpy()]
                   + [p.grad.numpy() for p in m.parameters()])
    for got, want in zip(*out):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cls", ["LSTMCell", "GRUCell"])
def test_recurrent_cells_as_pytorch(cls):
    tm = getattr(torch.nn, cls)(3, 4).double()
    gm = getattr(nn, cls)(3, 4, dtype=tg.float64)
    _copy_params(tm, gm)
    rng = np.random.default_rng(9)
    x0, h0 = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    out = []
    for L, m in ((tg, gm), (torch, tm)):
        x, h = L.tensor(x0, requires_grad=True), L.tensor(h0)
        y = m(x, (h, h * 0.5) if cls == "LSTMCell" else h)
        y = y[0] if isinstance(y, tuple) else y
        y.sum().backward()
        out.append((y.detach().numpy(), x.grad.numpy()))
    for got, want in zip(*out):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    bound = 1 / np.sqrt(4)
    assert all(np.abs(p.tolist()).max() <= bound for p in getattr(nn, cls)(3, 4).parameters())


def test_compiled_gru_language_model_step_equals_eager():
    def train(wrap):
        tg.manual_seed(0)
        emb, rnn, head = nn.Embedding(12, 6), nn.GRU(6, 8, batch_first=True), nn.Linear(8, 12)
        params = list(emb.parameters()) + list(rnn.parameters()) + list(head.parameters())
        opt = tg.optim.Adam(params, lr=0.01)

        @wrap
        def step(tokens):
            opt.zero_grad()
            out, _ = rnn(emb(tokens[:, :-1]))
            loss = F.cross_entropy(head(out).reshape(-1, 12), tokens[:, 1:].reshape(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            return loss
        rng = np.random.default_rng(0)
        losses = [step(tg.tensor(rng.integers(0, 12, (3, 7)))).item() for _ in range(6)]
        return losses, [p.detach().numpy().copy() for p in params], step
    replays_as_eager(train, 6)


ATTENTION = [  # batch_first, options
    (False, {}), (True, {}), (True, {"attn_mask": "bool"}), (False, {"key_padding_mask": 1}),
    (True, {"attn_mask": "float", "average_attn_weights": False}),
    (True, {"is_causal": True}),
]


@pytest.mark.parametrize("batch_first,opts", ATTENTION)
def test_multihead_attention_as_pytorch(batch_first, opts):
    e, h = 8, 2
    tm = torch.nn.MultiheadAttention(e, h, batch_first=batch_first).double()
    gm = nn.MultiheadAttention(e, h, batch_first=batch_first, dtype=tg.float64)
    assert [n for n, _ in gm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    _copy_params(tm, gm)
    rng = np.random.default_rng(10)
    causal = opts.get("is_causal", False)
    lk = 5 if causal else 6
    q0 = rng.standard_normal((2, 5, e) if batch_first else (5, 2, e))
    k0, v0 = (rng.standard_normal((2, lk, e) if batch_first else (lk, 2, e))
              for _ in range(2))
    m0 = rng.random((5, lk)) > 0.6
    m0[:, 0] = False
    out = []
    for L, m in ((tg, gm), (torch, tm)):
        q, k, v = (L.tensor(a, requires_grad=True) for a in (q0, k0, v0))
        kw = {}
        if opts.get("attn_mask") == "bool":
            kw["attn_mask"] = L.tensor(m0)
        elif opts.get("attn_mask") == "float":
            kw["attn_mask"] = L.tensor(np.where(m0, -1.5, 0.0))
        if "key_padding_mask" in opts:
            pad = np.zeros((2, lk), bool)
            pad[0, 4:] = True
            kw["key_padding_mask"] = L.tensor(pad)
        if causal:
            kw["attn_mask"] = L.tensor(np.triu(np.ones((5, 5), bool), 1))
            kw["is_causal"] = True
        if "average_attn_weights" in opts:
            kw["average_attn_weights"] = opts["average_attn_weights"]
        y, w = m(q, k, v, **kw)
        (y * y.detach().cos()).sum().backward()
        out.append([y.detach().numpy(), w.detach().numpy(), q.grad.numpy(), k.grad.numpy(),
                    v.grad.numpy()] + [p.grad.numpy() for p in m.parameters()])
    for got, want in zip(*out):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)


def test_scaled_dot_product_attention_as_pytorch():
    rng = np.random.default_rng(11)
    q0, k0, v0 = (rng.standard_normal(s) for s in ((2, 3, 4, 5), (2, 3, 4, 5), (2, 3, 4, 7)))
    m0 = rng.random((4, 4)) > 0.3
    m0[:, 0] = True
    for kw in ({}, {"is_causal": True}, {"attn_mask": m0}, {"attn_mask": np.where(m0, 0, -2.)},
               {"scale": 0.3}):
        out = []
        for L in (tg, torch):
            q, k, v = (L.tensor(a, requires_grad=True) for a in (q0, k0, v0))
            args = {n: L.tensor(a) if isinstance(a, np.ndarray) else a for n, a in kw.items()}
            y = L.nn.functional.scaled_dot_product_attention(q, k, v, **args)
            (y * y.detach().cos()).sum().backward()
            out.append([y.detach().numpy(), q.grad.numpy(), k.grad.numpy(), v.grad.numpy()])
        for got, want in zip(*out):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_compiled_attention_step_with_changing_padding_masks():
    def train(wrap):
        tg.manual_seed(0)
        mha = nn.MultiheadAttention(8, 2, batch_first=True)
        head = nn.Linear(8, 1)
        params = list(mha.parameters()) + list(head.parameters())
        opt = tg.optim.SGD(params, lr=0.05)

        @wrap
        def step(x, pad, y):
            opt.zero_grad()
            a, _ = mha(x, x, x, key_padding_mask=pad, need_weights=False)
            loss = F.mse_loss(head(a).mean(1).squeeze(1), y)
            loss.backward()
            opt.step()
            return loss
        rng = np.random.default_rng(0)
        losses = []
        for i in range(6):
            pad = np.zeros((3, 5), bool)
            pad[i % 3, 3 + i % 2:] = True
            losses.append(step(tg.tensor(rng.standard_normal((3, 5, 8)), dtype=tg.float32),
                               tg.tensor(pad),
                               tg.tensor(rng.standard_normal(3), dtype=tg.float32)).item())
        return losses, [p.detach().numpy().copy() for p in params], step
    replays_as_eager(train, 6)


@pytest.mark.parametrize("norm_first,activation,batch_first",
                         [(False, "relu", True), (True, "gelu", False)])
def test_transformer_encoder_layer_as_pytorch(norm_first, activation, batch_first):
    kw = dict(dim_feedforward=16, dropout=0.0, activation=activation,
              batch_first=batch_first, norm_first=norm_first)
    tm = torch.nn.TransformerEncoderLayer(8, 2, **kw).double()
    gm = nn.TransformerEncoderLayer(8, 2, **kw, dtype=tg.float64)
    assert [n for n, _ in gm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    _copy_params(tm, gm)
    x0 = np.random.default_rng(12).standard_normal((2, 5, 8) if batch_first else (5, 2, 8))
    pad = np.zeros((2, 5), bool)
    pad[1, 3:] = True
    out = []
    for L, m in ((tg, gm), (torch, tm)):
        x = L.tensor(x0, requires_grad=True)
        y = m(x, src_key_padding_mask=L.tensor(pad))
        (y * y.detach().cos()).sum().backward()
        out.append([y.detach().numpy(), x.grad.numpy()] + [p.grad.numpy() for p in m.parameters()])
    for got, want in zip(*out):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)

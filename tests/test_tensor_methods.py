"""Tensor methods PyTorch code uses around the ops, against PyTorch: f-string formatting,
devices, type(), storage facts, in-place unary ops and random fills, addcmul/addcdiv,
gather (also replayed with new indices) and nonzero."""
import numpy as np
import pytest

import tapegrad as tg

from conftest import assert_close


def test_a_zero_dim_tensor_formats_as_its_number(torch):
    for lib in (tg, torch):
        t = lib.tensor(1.23456)
        assert f"{t:.3f}" == "1.235" and f"{t:>8.2e}" == "1.23e+00"
        with pytest.raises(TypeError):
            f"{lib.ones(2):.3f}"
    assert f"{tg.ones(2)}" == str(tg.ones(2))
    loss = (tg.ones(3, requires_grad=True) * 2).sum()
    assert f"loss {loss:.4f}" == "loss 6.0000"


def test_devices_are_the_cpu(torch):
    x = tg.ones(2, 3)
    assert x.device == tg.device("cpu") == "cpu" and repr(x.device) == repr(torch.device("cpu"))
    assert not x.is_cuda and not tg.cuda.is_available() and tg.cuda.device_count() == 0
    assert x.to("cpu") is x and x.cpu() is x and x.to(tg.device("cpu")) is x
    assert x.to("cpu", tg.float64).dtype == tg.float64
    assert x.to(tg.zeros(1, dtype=tg.float64)).dtype == tg.float64
    assert x.to(copy=True) is not x
    dev = tg.device("cuda" if tg.cuda.is_available() else "cpu")
    model = tg.nn.Linear(3, 1).to(dev)
    assert model(x.to(dev)).shape == (2, 1)
    for bad in (lambda: x.cuda(), lambda: x.to("cuda"), lambda: tg.device("cuda:0")):
        with pytest.raises(RuntimeError, match="CPU only"):
            bad()


def test_type_and_storage_facts_match_torch(torch):
    a = np.arange(12.0).reshape(3, 4)
    for make in (lambda lib: lib.tensor(a), lambda lib: lib.tensor(a).t(),
                 lambda lib: lib.tensor(a, dtype=lib.float32)[:, 1::2]):
        x, xt = make(tg), make(torch)
        assert x.stride() == xt.stride() and x.stride(-1) == xt.stride(-1)
        assert x.element_size() == xt.element_size() and x.nelement() == xt.nelement()
        assert x.type().replace("tapegrad", "torch") == xt.type()
    x = tg.tensor(a)
    assert x.type(tg.float32).dtype == tg.float32
    assert x[1:].data_ptr() == x.data_ptr() + 4 * 8
    assert x.mT.shape == (4, 3) and tg.ones(2, 3, 4).mT.shape == (2, 4, 3)


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "abs", "neg", "sigmoid", "tanh",
                                  "sin", "reciprocal", "square", "relu", "floor", "atan",
                                  "arctan", "sinh", "cosh", "exp2", "deg2rad"])
def test_inplace_unary_ops_match_torch(name, torch):
    data = np.random.default_rng(0).uniform(0.5, 2.0, (2, 3))
    for lib in (tg, torch):
        leaf = lib.tensor(data, requires_grad=True)
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            getattr(leaf, name + "_")()
    x, xt = tg.tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    y, yt = x * 1.5, xt * 1.5
    assert getattr(y, name + "_")() is y
    getattr(yt, name + "_")()
    assert_close(y, yt, rtol=1e-12)
    (y * y).sum().backward()
    (yt * yt).sum().backward()
    assert_close(x.grad, xt.grad, rtol=1e-10)


def test_inplace_random_fills():
    w = tg.nn.Parameter(tg.empty(1000, dtype=tg.float64))
    with pytest.raises(RuntimeError, match="leaf Variable"):
        w.uniform_(-1, 1)
    with tg.no_grad():
        u = w.uniform_(-2.0, 3.0).detach().numpy()
        assert u.min() >= -2.0 and u.max() < 3.0 and abs(u.mean() - 0.5) < 0.2
        n = w.normal_(1.0, 0.5).detach().numpy()
        assert abs(n.mean() - 1.0) < 0.1 and abs(n.std() - 0.5) < 0.1
        b = w.bernoulli_(0.25).detach().numpy()
        assert set(np.unique(b)) <= {0.0, 1.0} and abs(b.mean() - 0.25) < 0.06
    r = tg.zeros(500, dtype=tg.int64).random_(3, 7).numpy()
    assert set(np.unique(r)) == {3, 4, 5, 6}
    g = tg.Generator().manual_seed(3)
    a = tg.empty(5).normal_(generator=g).numpy().copy()
    assert np.array_equal(tg.empty(5).normal_(generator=g.manual_seed(3)).numpy(), a)


def test_addcmul_addcdiv_match_torch(torch):
    rng = np.random.default_rng(1)
    a, b, c = rng.standard_normal((3, 2, 3)) + 2.0
    for name in ("addcmul", "addcdiv"):
        ts = [tg.tensor(v, requires_grad=True) for v in (a, b, c)]
        rs = [torch.tensor(v, requires_grad=True) for v in (a, b, c)]
        out = getattr(tg, name)(*ts, value=0.5)
        ref = getattr(torch, name)(*rs, value=0.5)
        assert_close(out, ref, rtol=1e-12)
        out.sum().backward()
        ref.sum().backward()
        for t, r in zip(ts, rs):
            assert_close(t.grad, r.grad, rtol=1e-12)
        y, yt = tg.tensor(a) * 1.0, torch.tensor(a) * 1.0
        getattr(y, name + "_")(tg.tensor(b), tg.tensor(c), value=2.0)
        getattr(yt, name + "_")(torch.tensor(b), torch.tensor(c), value=2.0)
        assert_close(y, yt, rtol=1e-12)


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_gather_matches_torch(dim, torch):
    rng = np.random.default_rng(2)
    data = rng.standard_normal((3, 4, 5))
    shape = [3, 4, 5]
    shape[dim] = 6
    index = rng.integers(0, data.shape[dim], shape)
    x, xt = tg.tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    out = x.gather(dim, tg.tensor(index))
    ref = xt.gather(dim, torch.tensor(index))
    assert_close(out, ref)
    out.sum().backward()
    ref.sum().backward()
    assert_close(x.grad, xt.grad)
    with pytest.raises(RuntimeError):
        x.gather(dim, tg.tensor(index).float())
    small = index[:2, :3, :4] % data.shape[dim]        # smaller in the other dims too
    assert_close(x.gather(dim, tg.tensor(small)), xt.gather(dim, torch.tensor(small)))


def test_gather_replays_with_new_indices():
    """Along a short dim gather compares indices with positions: a replay computes it
    again with the new ones (a policy gradient's chosen actions)."""
    q = tg.randn(8, 4)
    c = tg.compile(lambda q, a: q.gather(1, a.unsqueeze(1)).squeeze(1) * 2.0)
    for i in range(4):
        a = tg.randint(0, 4, (8,))
        want = q.numpy()[np.arange(8), a.numpy()] * 2.0
        np.testing.assert_array_equal(c(q, a).numpy(), want)
    assert c.records == 1 and c.replays == 3
    long = tg.randn(3, tg._methods.GATHER_COMPARE + 5, requires_grad=True)
    idx = tg.tensor([[0, 68], [3, 3], [1, 2]])
    out = long.gather(1, idx)
    out.sum().backward()
    want = np.zeros(long.shape)
    np.add.at(want, (np.arange(3)[:, None], idx.numpy()), 1.0)
    np.testing.assert_array_equal(long.grad.numpy(), want)
    np.testing.assert_array_equal(out.detach().numpy(),
                                  long.detach().numpy()[np.arange(3)[:, None], idx.numpy()])


def test_nonzero_matches_torch(torch):
    data = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, -1.0]])
    assert np.array_equal(tg.tensor(data).nonzero().numpy(),
                          torch.tensor(data).nonzero().numpy())
    got = tg.nonzero(tg.tensor(data), as_tuple=True)
    ref = torch.nonzero(torch.tensor(data), as_tuple=True)
    assert [g.tolist() for g in got] == [r.tolist() for r in ref]


def test_scatter_add_and_index_add_match_torch(torch):
    rng = np.random.default_rng(5)
    base, src = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    idx = np.array([[0, 1, 2], [0, 0, 0], [3, 2, 1], [1, 1, 1]])
    rows = np.array([0, 2, 2, 3])
    calls = [
        lambda L, b, s: b.scatter_add(0, L.tensor(idx), s),
        lambda L, b, s: b.scatter_add(1, L.tensor(idx[:3, :2] % 3), s[:3, :2]),
        lambda L, b, s: b.index_add(0, L.tensor(rows), s, alpha=2.0),
        lambda L, b, s: b.index_add(1, L.tensor([2, 0, 0]), s[:, :3]),
    ]
    for call in calls:
        b, s = tg.tensor(base, requires_grad=True), tg.tensor(src, requires_grad=True)
        bt, st = torch.tensor(base, requires_grad=True), torch.tensor(src, requires_grad=True)
        out, ref = call(tg, b, s), call(torch, bt, st)
        assert_close(out, ref, rtol=1e-12)
        w = rng.standard_normal(tuple(ref.shape))
        (out * tg.tensor(w)).sum().backward()
        (ref * torch.tensor(w)).sum().backward()
        assert_close(b.grad, bt.grad, rtol=1e-12)
        assert_close(s.grad, st.grad, rtol=1e-12)
    y = tg.zeros(4, 3)
    assert y.index_add_(0, tg.tensor([1, 1]), tg.ones(2, 3)) is y
    assert y.numpy()[1].tolist() == [2.0, 2.0, 2.0]
    for lib in (tg, torch):
        with pytest.raises(RuntimeError, match="index -1 is out of bounds for dimension 0"):
            lib.zeros(2, 2).index_add(0, lib.tensor([-1]), lib.ones(1, 2))
        with pytest.raises(RuntimeError, match="out of bounds for dimension 0 with size 2"):
            lib.zeros(2, 2).scatter_add(0, lib.tensor([[2, 0]]), lib.ones(1, 2))

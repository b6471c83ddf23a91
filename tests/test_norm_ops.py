"""Layer and batch normalisation as one op each: values and gradients against PyTorch
for every combination of weight and bias, constant rows and channels, running
statistics, double backward, the compiled replay bit for bit, and PyTorch's errors."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad import nn

torch = pytest.importorskip("torch")


def _run(L, data, w, b, shape, req, dtype, create_graph=False):
    dt = getattr(L, dtype)
    x = L.tensor(data, dtype=dt, requires_grad=req[0])
    wt = None if w is None else L.tensor(w, dtype=dt, requires_grad=req[1])
    bt = None if b is None else L.tensor(b, dtype=dt, requires_grad=req[2])
    y = L.nn.functional.layer_norm(x, shape, wt, bt, eps=1e-5)
    up = L.tensor(np.cos(np.arange(y.numel())).reshape(tuple(y.shape)), dtype=dt)
    (y * up).sum().backward()
    grads = [None if t is None or t.grad is None else t.grad.numpy().copy()
             for t in (x, wt, bt)]
    return [y.detach().numpy().copy()] + grads


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
@pytest.mark.parametrize("req", [(True, True, True), (False, True, True), (True, False, False)],
                         ids=["all", "params", "input"])
def test_values_and_gradients_as_pytorch(dtype, affine, req):
    rng = np.random.default_rng(0)
    shape = (4, 5)
    data = rng.standard_normal((3, 4, 5)) * 3 + 1
    data[1] = 2.5                                   # a constant row: variance 0
    w = rng.standard_normal(shape) if affine in ("both", "weight") else None
    b = rng.standard_normal(shape) if affine in ("both", "bias") else None
    if not any(r and t is not None for r, t in zip(req, (data, w, b))):
        pytest.skip("nothing requires grad")
    got = _run(tg, data, w, b, shape, req, dtype)
    want = _run(torch, data, w, b, shape, req, dtype)
    tol = 1e-11 if dtype == "float64" else 2e-5
    for what, g, t in zip(("value", "x", "weight", "bias"), got, want):
        assert (g is None) == (t is None), what
        if g is not None:
            np.testing.assert_allclose(g, t, rtol=tol, atol=tol, err_msg=what)


def test_double_backward_as_pytorch_and_gradgradcheck():
    rng = np.random.default_rng(1)
    data, w, b = rng.standard_normal((2, 3, 6)), rng.standard_normal(6), rng.standard_normal(6)
    out = []
    for L in (tg, torch):
        x = L.tensor(data, requires_grad=True)
        wt, bt = L.tensor(w, requires_grad=True), L.tensor(b, requires_grad=True)
        y = L.nn.functional.layer_norm(x, (6,), wt, bt)
        gx, gw = L.autograd.grad((y * y.detach().exp()).sum(), (x, wt), create_graph=True)
        (gx.pow(2).sum() + (gw * gw).sum()).backward()
        out.append([None if t.grad is None else t.grad.numpy().copy() for t in (x, wt, bt)])
    assert out[1][2] is None and out[0][2] is None      # no second-order path to the bias
    for g, t in zip(out[0][:2], out[1][:2]):
        np.testing.assert_allclose(g, t, rtol=1e-9, atol=1e-11)
    args = [tg.tensor(v, requires_grad=True) for v in (data[:, :2], w, b)]

    def fn(x, w, b):
        return tg.nn.functional.layer_norm(x, (6,), w, b)
    assert tg.autograd.gradcheck(fn, args)
    assert tg.autograd.gradgradcheck(fn, args)


def test_grad_fn_name_and_errors():
    x = tg.randn(2, 3, requires_grad=True)
    assert tg.nn.functional.layer_norm(x, (3,)).grad_fn.name() == "NativeLayerNormBackward0"
    with pytest.raises(RuntimeError, match="expected input with shape"):
        tg.nn.functional.layer_norm(x, (2,))
    with pytest.raises(RuntimeError, match="Expected weight to be of same shape"):
        tg.nn.functional.layer_norm(x, (3,), tg.ones(4))
    with pytest.raises(RuntimeError, match="expected scalar type Float"):
        tg.nn.functional.layer_norm(x, (3,), tg.ones(3, dtype=tg.float64))
    with pytest.raises(RuntimeError, match="not implemented for 'Long'"):
        tg.nn.functional.layer_norm(tg.ones(2, 3, dtype=tg.int64), (3,))
    n = len(x._tape.T) if x._tape is not None else 0
    with pytest.raises(RuntimeError):
        tg.nn.functional.layer_norm(x, (3,), tg.ones(4))
    assert (len(x._tape.T) if x._tape is not None else 0) == n


def test_compiled_training_step_bit_identical_to_eager():
    def make():
        tg.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Tanh(),
                              nn.LayerNorm(16, elementwise_affine=False), nn.Linear(16, 2))
        opt = tg.optim.Adam(model.parameters(), lr=1e-2)

        def step(x, y):
            opt.zero_grad()
            loss = tg.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            return loss
        return model, step

    (m1, eager), (m2, step) = make(), make()
    comp = tg.compile(step)
    rng = np.random.default_rng(2)
    for _ in range(4):
        x = tg.tensor(rng.standard_normal((5, 8)).astype(np.float32))
        y = tg.tensor(rng.standard_normal((5, 2)).astype(np.float32))
        assert eager(x, y).item() == comp(x, y).item()
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert np.array_equal(p1.detach().numpy(), p2.detach().numpy())
    assert comp.replays >= 2 and comp.fallbacks == 0


def _bn(L, data, w, b, dtype, training=True):
    dt = getattr(L, dtype)
    c = data.shape[1]
    x = L.tensor(data, dtype=dt, requires_grad=True)
    wt = None if w is None else L.tensor(w, dtype=dt, requires_grad=True)
    bt = None if b is None else L.tensor(b, dtype=dt, requires_grad=True)
    rm, rv = L.zeros(c, dtype=dt), L.ones(c, dtype=dt)
    y = L.nn.functional.batch_norm(x, rm, rv, wt, bt, training=training, momentum=0.3)
    up = L.tensor(np.sin(np.arange(y.numel())).reshape(tuple(y.shape)), dtype=dt)
    (y * up).sum().backward()
    return [y.detach().numpy().copy(), rm.numpy().copy(), rv.numpy().copy()] + \
        [None if t is None else t.grad.numpy().copy() for t in (x, wt, bt)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 4)])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_as_pytorch(dtype, shape, affine, training):
    rng = np.random.default_rng(3)
    data = rng.standard_normal(shape) * 2 + 0.5
    data[:, 1] = -1.5                                 # a constant channel: variance 0
    w = rng.standard_normal(shape[1]) if affine else None
    b = rng.standard_normal(shape[1]) if affine else None
    got = _bn(tg, data, w, b, dtype, training)
    want = _bn(torch, data, w, b, dtype, training)
    tol = 1e-11 if dtype == "float64" else 3e-5
    for what, g, t in zip(("value", "running mean", "running var", "x", "weight", "bias"),
                          got, want):
        assert (g is None) == (t is None), what
        if g is not None:
            np.testing.assert_allclose(g, t, rtol=tol, atol=tol, err_msg=what)


def test_batch_norm_double_backward_as_pytorch():
    rng = np.random.default_rng(4)
    data, w = rng.standard_normal((4, 3, 5)), rng.standard_normal(3)
    out = []
    for L in (tg, torch):
        x, wt = L.tensor(data, requires_grad=True), L.tensor(w, requires_grad=True)
        y = L.nn.functional.batch_norm(x, None, None, wt, None, training=True)
        gx, = L.autograd.grad((y * y.detach().cos()).sum(), (x,), create_graph=True)
        (gx * gx).sum().backward()
        out.append([x.grad.numpy().copy(), wt.grad.numpy().copy()])
    for g, t in zip(*out):
        np.testing.assert_allclose(g, t, rtol=1e-9, atol=1e-11)
    assert tg.nn.functional.batch_norm(tg.tensor(data, requires_grad=True), None, None,
                                       training=True).grad_fn.name() == \
        "NativeBatchNormBackward0"


def test_batch_norm_errors_as_pytorch():
    x = tg.randn(4, 3)
    with pytest.raises(RuntimeError, match="weight should contain 3 elements not 4"):
        tg.nn.functional.batch_norm(x, None, None, tg.ones(4), training=True)
    with pytest.raises(RuntimeError, match="mixed dtype"):
        tg.nn.functional.batch_norm(x, None, None, tg.ones(3, dtype=tg.float64),
                                    training=True)
    with pytest.raises(NotImplementedError, match="not implemented for 'Long'"):
        tg.nn.functional.batch_norm(tg.ones(4, 3, dtype=tg.int64), None, None, training=True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        tg.nn.functional.batch_norm(tg.randn(1, 3), None, None, training=True)

"""tapegrad.autograd.functional against torch.autograd.functional: same values, same
return structures (a Tensor for a Tensor, tuples for tuples), same errors; and exact
Hessian-vector products of the n-dimensional Rosenbrock function against SciPy."""
import numpy as np
import pytest

import tapegrad as tg
import tapegrad.autograd.functional as F

torch = pytest.importorskip("torch")
TF = torch.autograd.functional

RTOL = 1e-10


# ---------------------------------------------------------------------------
# Helpers
def _pair(arrays):
    """The same float64 values as a tapegrad and as a torch tuple."""
    return (tuple(tg.tensor(a, dtype=tg.float64) for a in arrays),
            tuple(torch.tensor(a, dtype=torch.float64) for a in arrays))


def _unpack(x, single):
    return x[0] if single else x


def assert_same(got, want, path="result", requires_grad=None):
    """Same nesting of tuples, same shapes, same values; and requires_grad equal to
    ``requires_grad`` when given (``"torch"``: equal to the torch result's)."""
    if isinstance(want, tuple):
        assert isinstance(got, tuple), f"{path}: expected a tuple, got {type(got).__name__}"
        assert len(got) == len(want), f"{path}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{path}[{i}]", requires_grad)
        return
    assert isinstance(got, tg.Tensor), f"{path}: expected a Tensor, got {type(got).__name__}"
    assert tuple(got.shape) == tuple(want.shape), f"{path}: shape {got.shape} != {want.shape}"
    assert got.dtype == tg.float64
    w = want.detach().numpy()
    np.testing.assert_allclose(got.detach().numpy(), w, rtol=RTOL,
                               atol=RTOL * max(1.0, float(np.abs(w).max(initial=0))),
                               err_msg=path)
    if requires_grad == "torch":
        assert got.requires_grad == want.requires_grad, f"{path}: requires_grad"
    elif requires_grad is not None:
        assert got.requires_grad == requires_grad, f"{path}: requires_grad"


# Functions written once, for either library (ns = tapegrad or torch).
def exp_reducer(ns):
    return lambda x: ns.exp(x).sum(dim=1)


def adder(ns):
    return lambda x, y: 2 * x + 3 * y


def two_outputs(ns):
    return lambda x, y: (ns.tanh(x) * y, (x * x).sum() + (y ** 3).sum())


def layer(ns):
    return lambda w, x: ns.sigmoid(x.matmul(w)).sum(dim=0) / (w * w + 1.0).sum()


def unused_second(ns):
    return lambda x, y: x * 2.0


def cube_sum(ns):
    return lambda x: (x ** 3).sum()


def scalar_mix(ns):
    return lambda x, y: (ns.tanh(x) * y).sum() + (x ** 3).sum() * (y * y).sum()


def log_barrier(ns):
    return lambda w, x: ns.log(ns.sigmoid(x.matmul(w)) + 1.0).sum() + (w ** 4).mean()


rng = np.random.default_rng(1234)
A34, B4, C4, D34 = (rng.standard_normal((3, 4)), rng.standard_normal(4),
                    rng.standard_normal(4), rng.standard_normal((3, 4)))
W42, X34 = rng.standard_normal((4, 2)), rng.standard_normal((3, 4))

# (name, function factory, input arrays, single input?)
VECTOR_CASES = [
    ("exp_reducer", exp_reducer, (A34,), True),
    ("adder", adder, (B4, C4), False),
    ("two_outputs", two_outputs, (A34, B4), False),
    ("layer", layer, (W42, X34), False),
    ("unused_second", unused_second, (B4, C4), False),
]
SCALAR_CASES = [
    ("cube_sum", cube_sum, (A34,), True),
    ("scalar_mix", scalar_mix, (A34, B4), False),
    ("log_barrier", log_barrier, (W42, X34), False),
]


def _outputs(fn_factory, arrays):
    """func(inputs) computed by torch (for the shapes of v in vjp)."""
    _, pt = _pair(arrays)
    return fn_factory(torch)(*pt)


def _random_like(x):
    if isinstance(x, tuple):
        return tuple(_random_like(e) for e in x)
    return rng.standard_normal(tuple(x.shape))


def _both(v):
    if isinstance(v, tuple):
        return tuple(tg.tensor(a, dtype=tg.float64) for a in v), \
            tuple(torch.tensor(a, dtype=torch.float64) for a in v)
    return tg.tensor(v, dtype=tg.float64), torch.tensor(v, dtype=torch.float64)


def _call(name, fn_factory, arrays, single, v=None, **kw):
    tgi, pti = _pair(arrays)
    args_tg = (fn_factory(tg), _unpack(tgi, single))
    args_pt = (fn_factory(torch), _unpack(pti, single))
    if v is not None:
        vt, vp = _both(v)
        args_tg += (vt,)
        args_pt += (vp,)
    return getattr(F, name)(*args_tg, **kw), getattr(TF, name)(*args_pt, **kw)


# ---------------------------------------------------------------------------
# vjp, jvp, jacobian
@pytest.mark.parametrize("case", VECTOR_CASES, ids=[c[0] for c in VECTOR_CASES])
@pytest.mark.parametrize("create_graph", [False, True])
def test_vjp(case, create_graph):
    _, fn, arrays, single = case
    out = _outputs(fn, arrays)
    v = _random_like(out)
    got, want = _call("vjp", fn, arrays, single, v, create_graph=create_graph)
    assert_same(got, want, requires_grad="torch")


@pytest.mark.parametrize("case", VECTOR_CASES, ids=[c[0] for c in VECTOR_CASES])
def test_jvp(case):
    _, fn, arrays, single = case
    v = _random_like(arrays[0]) if single else _random_like(tuple(arrays))
    got, want = _call("jvp", fn, arrays, single, v)
    assert_same(got, want, requires_grad=False)


@pytest.mark.parametrize("case", VECTOR_CASES, ids=[c[0] for c in VECTOR_CASES])
@pytest.mark.parametrize("vectorize", [False, True])
def test_jacobian(case, vectorize):
    _, fn, arrays, single = case
    got, want = _call("jacobian", fn, arrays, single, vectorize=vectorize)
    assert_same(got, want, requires_grad=False)


def test_scalar_output_v_may_be_omitted():
    got, want = _call("vjp", cube_sum, (A34,), True)
    assert_same(got, want)
    got, want = _call("jvp", exp_reducer, (np.array([[0.7]]),), True)
    assert_same(got, want)
    got, want = _call("hvp", cube_sum, (np.array([1.5]),), True)
    assert_same(got, want)
    got, want = _call("vhp", cube_sum, (np.array(1.5),), True)
    assert_same(got, want)


# ---------------------------------------------------------------------------
# hessian, hvp, vhp
@pytest.mark.parametrize("case", SCALAR_CASES, ids=[c[0] for c in SCALAR_CASES])
def test_hessian(case):
    _, fn, arrays, single = case
    got, want = _call("hessian", fn, arrays, single)
    assert_same(got, want, requires_grad=False)


@pytest.mark.parametrize("case", SCALAR_CASES, ids=[c[0] for c in SCALAR_CASES])
@pytest.mark.parametrize("name", ["hvp", "vhp"])
def test_hvp_vhp(case, name):
    _, fn, arrays, single = case
    v = _random_like(arrays[0]) if single else _random_like(tuple(arrays))
    got, want = _call(name, fn, arrays, single, v)
    assert_same(got, want, requires_grad=False)


def test_hvp_equals_hessian_times_v():
    x = rng.standard_normal(5)
    v = rng.standard_normal(5)
    f = lambda t: (tg.tanh(t) * t).sum() + (t ** 4).sum()  # noqa: E731
    H = F.hessian(f, tg.tensor(x)).numpy()
    _, hv = F.hvp(f, tg.tensor(x), tg.tensor(v))
    _, vh = F.vhp(f, tg.tensor(x), tg.tensor(v))
    np.testing.assert_allclose(hv.numpy(), H @ v, rtol=1e-12)
    np.testing.assert_allclose(vh.numpy(), v @ H, rtol=1e-12)


# ---------------------------------------------------------------------------
# create_graph: results stay differentiable, and their gradients agree with torch
@pytest.mark.parametrize("name", ["vjp", "jvp", "hvp", "vhp"])
def test_create_graph_results_are_differentiable(name):
    x = rng.standard_normal((2, 3))
    v = rng.standard_normal((2, 3)) if name != "vjp" else np.array(1.7)
    fns = {"tg": lambda t: (tg.tanh(t) * t * t).sum(),
           "pt": lambda t: (torch.tanh(t) * t * t).sum()}
    if name == "jvp":
        fns = {"tg": lambda t: tg.tanh(t) * t * t, "pt": lambda t: torch.tanh(t) * t * t}
    xt = tg.tensor(x, requires_grad=True)
    xp = torch.tensor(x, requires_grad=True)
    out_t, res_t = getattr(F, name)(fns["tg"], xt, tg.tensor(v), create_graph=True)
    out_p, res_p = getattr(TF, name)(fns["pt"], xp, torch.tensor(v), create_graph=True)
    assert res_t.requires_grad and out_t.requires_grad
    assert_same(res_t, res_p)
    (res_t * res_t).sum().backward()
    (res_p * res_p).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), xp.grad.numpy(), rtol=RTOL)


def test_create_graph_jacobian_and_hessian():
    x = rng.standard_normal(4)
    xt = tg.tensor(x, requires_grad=True)
    xp = torch.tensor(x, requires_grad=True)
    Jt = F.jacobian(lambda t: tg.tanh(t) * t.sum(), xt, create_graph=True)
    Jp = TF.jacobian(lambda t: torch.tanh(t) * t.sum(), xp, create_graph=True)
    assert Jt.requires_grad
    assert_same(Jt, Jp)
    Ht = F.hessian(lambda t: (tg.tanh(t) * t.sum()).sum(), xt, create_graph=True)
    Hp = TF.hessian(lambda t: (torch.tanh(t) * t.sum()).sum(), xp, create_graph=True)
    assert_same(Ht, Hp)
    (Jt.sum() + (Ht * Ht).sum()).backward()
    (Jp.sum() + (Hp * Hp).sum()).backward()
    np.testing.assert_allclose(xt.grad.numpy(), xp.grad.numpy(), rtol=RTOL)


def test_results_detached_and_inputs_untouched():
    x = tg.tensor(A34, requires_grad=True)
    out, res = F.vjp(exp_reducer(tg), x, tg.ones(3, dtype=tg.float64))
    assert not out.requires_grad and not res.requires_grad
    assert x.grad is None
    J = F.jacobian(exp_reducer(tg), x)
    H = F.hessian(cube_sum(tg), x)
    assert not J.requires_grad and not H.requires_grad and x.grad is None
    np.testing.assert_array_equal(x.detach().numpy(), A34)


def test_input_captured_by_closure_is_not_the_argument():
    # As in PyTorch (issue 32576): only the tensors passed as arguments are differentiated.
    xt, xp = tg.tensor(B4), torch.tensor(B4)
    got = F.vjp(lambda t: t * xt, xt, tg.ones(4, dtype=tg.float64))
    want = TF.vjp(lambda t: t * xp, xp, torch.ones(4, dtype=torch.float64))
    assert_same(got, want)


# ---------------------------------------------------------------------------
# strict mode and argument errors: PyTorch's exception types and messages
def _errors(fn_tg, fn_pt):
    with pytest.raises(Exception) as et:
        fn_tg()
    with pytest.raises(Exception) as ep:
        fn_pt()
    assert type(et.value) is type(ep.value)
    return str(et.value), str(ep.value)


@pytest.mark.parametrize("name", ["vjp", "jvp", "jacobian"])
def test_strict_independent_input(name):
    tgi, pti = _pair((B4, C4))
    extra_t, extra_p = (), ()
    if name == "vjp":
        extra_t, extra_p = (tg.ones(4, dtype=tg.float64),), (torch.ones(4, dtype=torch.float64),)
    if name == "jvp":
        extra_t, extra_p = _both((B4, C4))
        extra_t, extra_p = (extra_t,), (extra_p,)
    mt, mp = _errors(lambda: getattr(F, name)(unused_second(tg), tgi, *extra_t, strict=True),
                     lambda: getattr(TF, name)(unused_second(torch), pti, *extra_p,
                                               strict=True))
    assert mt == mp
    # non-strict: zeros, as torch
    got = getattr(F, name)(unused_second(tg), tgi, *extra_t)
    want = getattr(TF, name)(unused_second(torch), pti, *extra_p)
    assert_same(got, want)


def test_strict_output_without_grad():
    mt, mp = _errors(lambda: F.vjp(lambda x: x.detach() * 2, tg.tensor(B4), tg.tensor(C4),
                                   strict=True),
                     lambda: TF.vjp(lambda x: x.detach() * 2, torch.tensor(B4),
                                    torch.tensor(C4), strict=True))
    assert mt == mp


def test_strict_linear_function_hessian():
    mt, mp = _errors(lambda: F.hessian(lambda x: (2 * x).sum(), tg.tensor(B4), strict=True),
                     lambda: TF.hessian(lambda x: (2 * x).sum(), torch.tensor(B4), strict=True))
    assert mt == mp
    assert_same(F.hessian(lambda x: (2 * x).sum(), tg.tensor(B4)),
                TF.hessian(lambda x: (2 * x).sum(), torch.tensor(B4)))


def test_argument_errors():
    x_t, x_p = tg.tensor(B4), torch.tensor(B4)
    # v of the wrong size
    mt, mp = _errors(lambda: F.vjp(lambda x: x * 2, x_t, tg.ones(3, dtype=tg.float64)),
                     lambda: TF.vjp(lambda x: x * 2, x_p, torch.ones(3, dtype=torch.float64)))
    assert mt.replace("tapegrad.", "torch.") == mp
    # v omitted for a non-scalar output / input
    mt, mp = _errors(lambda: F.vjp(lambda x: x * 2, x_t), lambda: TF.vjp(lambda x: x * 2, x_p))
    assert mt == mp
    mt, mp = _errors(lambda: F.hvp(cube_sum(tg), x_t), lambda: TF.hvp(cube_sum(torch), x_p))
    assert mt == mp
    # tuple of the wrong length
    mt, mp = _errors(lambda: F.jvp(adder(tg), (x_t, x_t), (x_t,)),
                     lambda: TF.jvp(adder(torch), (x_p, x_p), (x_p,)))
    assert mt == mp
    # non-tensor inputs
    with pytest.raises(TypeError, match="must be either a Tensor or a tuple of Tensors"):
        F.vjp(lambda x: x, [x_t])
    # hvp/vhp/hessian of a non-scalar function
    for name in ("hvp", "vhp"):
        mt, mp = _errors(lambda: getattr(F, name)(lambda x: x * 2, x_t, x_t),
                         lambda: getattr(TF, name)(lambda x: x * 2, x_p, x_p))
        assert mt == mp
    mt, mp = _errors(lambda: F.hessian(lambda x: x * 2, x_t),
                     lambda: TF.hessian(lambda x: x * 2, x_p))
    assert mt == mp


# ---------------------------------------------------------------------------
# Exact Hessian-vector products of the Rosenbrock function, against SciPy
def rosen(x):
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


@pytest.mark.parametrize("n", [5, 1_000, 100_000])
def test_rosenbrock_hvp_matches_scipy(n):
    optimize = pytest.importorskip("scipy.optimize")
    r = np.random.default_rng(n)
    x = r.uniform(-2.0, 2.0, n)
    p = r.standard_normal(n)
    value, hv = F.hvp(rosen, tg.tensor(x), tg.tensor(p))
    want = optimize.rosen_hess_prod(x, p)
    assert hv.dtype == tg.float64 and tuple(hv.shape) == (n,)
    np.testing.assert_allclose(hv.numpy(), want, rtol=1e-10,
                               atol=1e-10 * np.abs(want).max())
    np.testing.assert_allclose(value.item(), optimize.rosen(x), rtol=1e-12)
    # vhp is the same product (the Hessian is symmetric)
    _, vh = F.vhp(rosen, tg.tensor(x), tg.tensor(p))
    np.testing.assert_allclose(vh.numpy(), want, rtol=1e-10, atol=1e-10 * np.abs(want).max())


def test_rosenbrock_hessian_matches_scipy():
    optimize = pytest.importorskip("scipy.optimize")
    x = np.random.default_rng(5).uniform(-2.0, 2.0, 6)
    H = F.hessian(rosen, tg.tensor(x))
    np.testing.assert_allclose(H.numpy(), optimize.rosen_hess(x), rtol=1e-12, atol=1e-9)
    _, g = F.vjp(rosen, tg.tensor(x))
    np.testing.assert_allclose(g.numpy(), optimize.rosen_der(x), rtol=1e-12, atol=1e-9)

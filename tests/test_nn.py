"""tapegrad.nn, nn.functional, nn.init, nn.utils and tg.save/tg.load.

Values and gradients are compared with PyTorch (when installed) in float64.
"""
import copy
import io
import json
import math
import warnings
from collections import OrderedDict

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.nn as nn
import tapegrad.nn.functional as F
import tapegrad.optim  # noqa: F401  (binds tg.optim until __init__ imports it)
from tapegrad.serialization import load, save


@pytest.fixture
def th():
    return pytest.importorskip("torch")


def arr(t):
    """A tapegrad or torch tensor as a float64 NumPy array."""
    return np.asarray(t.detach().numpy(), dtype=np.float64)


def rng(seed=0):
    return np.random.default_rng(seed)


def compare(th, f_tg, f_th, inputs, rtol=1e-10, atol=1e-12, seed=1):
    """Runs f on tapegrad and torch copies of ``inputs``; compares outputs and grads.

    ``inputs`` are NumPy arrays; floating ones require grad. Non-scalar outputs are
    reduced with a fixed random upstream gradient.
    """
    tgi, thi = [], []
    for a in inputs:
        a = np.asarray(a)
        req = a.dtype.kind == "f"
        tgi.append(tg.tensor(a.copy(), requires_grad=req))
        thi.append(th.tensor(a.copy(), requires_grad=req))
    out_tg = f_tg(*tgi)
    out_th = f_th(*thi)
    np.testing.assert_allclose(arr(out_tg), arr(out_th), rtol=rtol, atol=atol)
    assert tuple(out_tg.shape) == tuple(out_th.shape)
    up = rng(seed).standard_normal(tuple(out_th.shape))
    (out_tg * tg.tensor(up)).sum().backward()
    (out_th * th.tensor(up)).sum().backward()
    for a, b in zip(tgi, thi):
        if b.requires_grad:
            assert b.grad is not None
            assert a.grad is not None, "tapegrad produced no gradient"
            np.testing.assert_allclose(arr(a.grad), arr(b.grad), rtol=rtol, atol=atol)
    return out_tg, out_th


def copy_from_torch(tg_module, th_module):
    """Loads a torch module's state (as float64 arrays) into a tapegrad module."""
    sd = OrderedDict((k, tg.tensor(v.detach().numpy().astype(np.float64)))
                     for k, v in th_module.state_dict().items())
    tg_module.load_state_dict(sd)


# ---------------------------------------------------------------------------
# Module mechanics
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(2, 3)
        self.act = nn.Tanh()
        self.predict = nn.Linear(3, 1)
        self.scale = nn.Parameter(tg.ones(1))
        self.register_buffer("count", tg.zeros(1))
        self.plain = 5

    def forward(self, x):
        return self.predict(self.act(self.hidden(x))) * self.scale


def test_registration_and_traversal():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["scale", "hidden.weight", "hidden.bias", "predict.weight",
                     "predict.bias"]
    assert [n for n, _ in net.named_children()] == ["hidden", "act", "predict"]
    assert [type(m).__name__ for m in net.modules()] == ["Net", "Linear", "Tanh", "Linear"]
    assert list(net.children())[0] is net.hidden
    assert [n for n, _ in net.named_buffers()] == ["count"]
    assert net.plain == 5 and "plain" not in dict(net.named_parameters())
    assert all(isinstance(p, tg.Tensor) and isinstance(p, nn.Parameter)
               for p in net.parameters())
    assert list(net.parameters(recurse=False)) == [net.scale]
    assert net.get_submodule("predict") is net.predict
    assert net.get_parameter("hidden.bias") is net.hidden.bias
    out = net(tg.randn(4, 2))
    assert tuple(out.shape) == (4, 1) and out.requires_grad


def test_shared_parameters_listed_once():
    lin = nn.Linear(3, 3)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(seq.parameters())) == 2
    assert list(seq.state_dict().keys()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_setattr_rules():
    net = Net()
    with pytest.raises(TypeError, match="cannot assign 'tapegrad.FloatTensor' as parameter"):
        net.scale = tg.ones(1)
    net.scale = None
    assert "scale" not in dict(net.named_parameters())
    net.extra = nn.Parameter(tg.zeros(2))
    assert "extra" in dict(net.named_parameters())
    del net.extra
    assert "extra" not in dict(net.named_parameters())
    net.hidden = nn.Linear(2, 3, bias=False)
    assert "hidden.bias" not in dict(net.named_parameters())
    with pytest.raises(AttributeError, match="'Net' object has no attribute 'nope'"):
        net.nope

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(tg.ones(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()


def test_parameter_is_a_leaf_that_prints_as_parameter():
    t = tg.tensor([1.0, 2.0])
    p = nn.Parameter(t)
    assert p.is_leaf and p.requires_grad and p.grad_fn is None
    assert repr(p).startswith("Parameter containing:\ntensor([1., 2.], requires_grad=True)")
    with tg.no_grad():
        t.mul_(3)          # shares storage with its source, as in PyTorch
    assert arr(p).tolist() == [3.0, 6.0]
    frozen = nn.Parameter(tg.ones(2), requires_grad=False)
    assert not frozen.requires_grad and "requires_grad" not in repr(frozen)
    y = p * 2
    assert type(y) is tg.Tensor and not y.is_leaf
    y.sum().backward()
    q = copy.deepcopy(p)
    assert isinstance(q, nn.Parameter) and q is not p
    assert arr(q).tolist() == arr(p).tolist() and arr(q.grad).tolist() == [2.0, 2.0]
    with tg.no_grad():
        q.add_(1.0)
    assert arr(p).tolist() == [3.0, 6.0]
    with pytest.raises(RuntimeError):
        nn.Parameter(tg.tensor([1, 2]))   # integer tensors cannot require grad


def test_sequential_indexing():
    seq = nn.Sequential(nn.Linear(1, 10), nn.ReLU(), nn.Linear(10, 1))
    assert isinstance(seq[0], nn.Linear) and isinstance(seq[-1], nn.Linear)
    assert len(seq) == 3 and len(seq[1:]) == 2 and isinstance(seq[1:][0], nn.ReLU)
    with pytest.raises(IndexError):
        seq[3]
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Linear"]
    od = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.Sigmoid())]))
    assert [n for n, _ in od.named_parameters()] == ["fc.weight", "fc.bias"]
    assert repr(seq) == ("Sequential(\n  (0): Linear(in_features=1, out_features=10, "
                         "bias=True)\n  (1): ReLU()\n  (2): Linear(in_features=10, "
                         "out_features=1, bias=True)\n)")
    ml = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
    assert len(list(ml.parameters())) == 4 and ml[1] is list(ml)[1]


def test_train_eval_and_requires_grad_():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Sequential(nn.Dropout()))
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    x = tg.randn(3, 2)
    assert arr(net(x)).tolist() == arr(net[0](x)).tolist()   # dropout off in eval
    net.train()
    assert all(m.training for m in net.modules())
    with pytest.raises(ValueError):
        net.train("yes")
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())
    assert not net(x).requires_grad


def test_module_zero_grad_clears_parameters_only():
    net = nn.Linear(3, 2)
    x = tg.ones(1, 3, requires_grad=True)
    net(x).sum().backward()
    assert net.weight.grad is not None
    g = net.weight.grad
    net.zero_grad(set_to_none=False)
    assert net.weight.grad is g and not np.any(arr(g))
    assert x.grad is not None and np.all(arr(x.grad) != 0)
    net.zero_grad()
    assert net.weight.grad is None and net.bias.grad is None
    assert x.grad is not None


def test_seed_003_linear_backward_twice():
    """A Linear layer's graph saves values: a second backward needs retain_graph."""
    net = nn.Linear(3, 4)
    inp = tg.autograd.Variable(tg.randn(2, 3), requires_grad=True)
    loss = tg.sum(net(inp))
    loss.backward()
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second"):
        loss.backward()
    loss = tg.sum(net(inp))
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(arr(inp.grad), 3 * np.tile(arr(net.weight).sum(0), (2, 1)),
                               rtol=1e-6)
    out = nn.Linear(3, 2)(tg.tensor([1.0, 2.0, 3.0]))
    assert out.requires_grad and out.grad_fn.name().endswith("Backward0")


def test_module_double_keeps_parameter_identity():
    net = nn.Linear(3, 2)
    w = net.weight
    net(tg.randn(2, 3)).sum()        # the float32 weight is on the current tape
    assert net.double() is net
    assert net.weight is w and w.dtype == tg.float64 and w.requires_grad
    x = tg.randn(4, 3, dtype=tg.float64)
    net(x).sum().backward()
    expected = np.ones((4, 2)).T @ arr(x)
    np.testing.assert_allclose(arr(net.weight.grad), expected, rtol=1e-12)
    assert net.float().weight.dtype == tg.float32


# ---------------------------------------------------------------------------
# state_dict / load_state_dict
def test_state_dict_round_trip_and_sharing():
    a, b = Net(), Net()
    sd = a.state_dict()
    assert list(sd.keys()) == ["scale", "count", "hidden.weight", "hidden.bias",
                               "predict.weight", "predict.bias"]
    assert all(not v.requires_grad for v in sd.values())
    res = b.load_state_dict(sd)
    assert res.missing_keys == [] and res.unexpected_keys == []
    x = tg.randn(5, 2)
    assert arr(a(x)).tolist() == arr(b(x)).tolist()
    with tg.no_grad():                 # state_dict values share storage with the module
        sd["scale"].fill_(2.0)
    assert arr(a.scale).tolist() == [2.0]
    assert b.hidden.weight.requires_grad and b.hidden.weight.is_leaf
    kept = a.state_dict(keep_vars=True)
    assert kept["hidden.weight"] is a.hidden.weight


def test_load_state_dict_errors_change_nothing():
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    before = {k: arr(v).copy() for k, v in net.state_dict().items()}
    good = {k: tg.randn(*v.shape) for k, v in net.state_dict().items()}

    bad = dict(good)
    del bad["1.bias"]
    bad["extra"] = tg.ones(1)
    with pytest.raises(RuntimeError) as info:
        net.load_state_dict(bad)
    msg = str(info.value)
    assert "Error(s) in loading state_dict for Sequential" in msg
    assert 'Missing key(s) in state_dict: "1.bias"' in msg
    assert 'Unexpected key(s) in state_dict: "extra"' in msg

    bad = dict(good)
    bad["1.weight"] = tg.ones(3, 1)
    with pytest.raises(RuntimeError, match="size mismatch for 1.weight: copying a param with "
                                           "shape"):
        net.load_state_dict(bad)
    with pytest.raises(RuntimeError, match="size mismatch"):
        net.load_state_dict(bad, strict=False)
    for k, v in net.state_dict().items():      # nothing was copied by the failed loads
        assert np.array_equal(arr(v), before[k]), k

    partial = {"0.weight": good["0.weight"], "junk": tg.ones(1)}
    res = net.load_state_dict(partial, strict=False)
    assert res.missing_keys == ["0.bias", "1.weight", "1.bias"]
    assert res.unexpected_keys == ["junk"]
    assert np.array_equal(arr(net[0].weight), arr(good["0.weight"]))
    assert np.array_equal(arr(net[1].bias), before["1.bias"])

    net.load_state_dict({k: arr(v) for k, v in good.items()})   # NumPy arrays are accepted
    assert np.array_equal(arr(net[1].weight), arr(good["1.weight"]).astype(np.float32))


def test_load_state_dict_assign():
    net = nn.Linear(2, 2)
    new_w = tg.randn(2, 2, dtype=tg.float64)
    net.load_state_dict({"weight": new_w, "bias": tg.zeros(2, dtype=tg.float64)}, assign=True)
    assert isinstance(net.weight, nn.Parameter) and net.weight.dtype == tg.float64
    assert net.weight.requires_grad


# ---------------------------------------------------------------------------
# Initialisation
def test_linear_default_init_bounds_and_shapes():
    tg.manual_seed(0)
    lin = nn.Linear(400, 300)
    assert tuple(lin.weight.shape) == (300, 400) and tuple(lin.bias.shape) == (300,)
    assert lin.weight.dtype == tg.float32
    bound = 1 / math.sqrt(400)
    w, b = arr(lin.weight), arr(lin.bias)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.99 * bound and np.abs(b).max() > 0.95 * bound
    assert abs(w.var() / (bound ** 2 / 3) - 1) < 0.03       # uniform, not normal
    assert abs(w.mean()) < 0.01 * bound * 10
    lin64 = nn.Linear(5, 2, dtype=tg.float64, bias=False)
    assert lin64.weight.dtype == tg.float64 and lin64.bias is None
    tg.manual_seed(3)
    w1 = arr(nn.Linear(4, 4).weight)
    tg.manual_seed(3)
    assert np.array_equal(w1, arr(nn.Linear(4, 4).weight))


def test_init_functions(th):
    tg.manual_seed(1)
    t = tg.empty(200, 300)
    nn.init.kaiming_uniform_(t, a=0, mode="fan_out", nonlinearity="relu")
    bound = math.sqrt(2.0) * math.sqrt(3.0 / 200)
    assert np.abs(arr(t)).max() <= bound and np.abs(arr(t)).max() > 0.99 * bound
    nn.init.xavier_uniform_(t, gain=2.0)
    bound = 2.0 * math.sqrt(6.0 / 500)
    assert np.abs(arr(t)).max() <= bound and np.abs(arr(t)).max() > 0.99 * bound
    nn.init.normal_(t, mean=3.0, std=0.5)
    assert abs(arr(t).mean() - 3.0) < 0.01 and abs(arr(t).std() - 0.5) < 0.01
    nn.init.kaiming_normal_(t, nonlinearity="relu")
    assert abs(arr(t).std() - math.sqrt(2.0 / 300)) < 0.002
    nn.init.xavier_normal_(t)
    assert abs(arr(t).std() - math.sqrt(2.0 / 500)) < 0.002
    nn.init.uniform_(t, -2.0, -1.0)
    assert arr(t).min() >= -2.0 and arr(t).max() < -1.0
    nn.init.zeros_(t)
    assert not np.any(arr(t))
    nn.init.ones_(t)
    assert np.all(arr(t) == 1)
    nn.init.constant_(t, 0.25)
    assert np.all(arr(t) == 0.25)
    p = nn.Parameter(tg.empty(3, 3))
    nn.init.eye_(p)
    assert np.array_equal(arr(p), np.eye(3)) and p.is_leaf and p.requires_grad
    for name, param in [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                        ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)]:
        assert nn.init.calculate_gain(name, param) == pytest.approx(
            th.nn.init.calculate_gain(name, param))
    for shape in [(3, 4), (5, 2, 3, 3)]:
        assert nn.init._calculate_fan_in_and_fan_out(tg.empty(*shape)) == \
            th.nn.init._calculate_fan_in_and_fan_out(th.empty(*shape))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.xavier_uniform_(tg.empty(3))
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        nn.init.calculate_gain("swish")
    g = np.random.default_rng(5)
    a = nn.init.uniform_(tg.empty(4), generator=g)
    assert np.allclose(arr(a), np.random.default_rng(5).random(4).astype(np.float32))


# ---------------------------------------------------------------------------
# Layers and functional ops against PyTorch
def test_linear_matches_torch(th):
    th.manual_seed(0)
    ref = th.nn.Linear(4, 3).double()
    lin = nn.Linear(4, 3, dtype=tg.float64)
    copy_from_torch(lin, ref)
    for shape in [(4,), (5, 4), (2, 5, 4)]:
        x = rng().standard_normal(shape)
        w, b = (ref.weight.detach().numpy(), ref.bias.detach().numpy())
        compare(th, lambda x, w, b: F.linear(x, w, b), lambda x, w, b: th.nn.functional.linear(
            x, w, b), [x, w, b])
    y = lin(tg.tensor(rng().standard_normal((5, 4))))
    assert y.grad_fn.name().endswith("Backward0")
    compare(th, lambda x, w: F.linear(x, w), lambda x, w: th.nn.functional.linear(x, w),
            [rng().standard_normal((5, 4)), rng(1).standard_normal((3, 4))])


@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid"])
def test_activations_match_torch(th, name):
    x = rng().standard_normal((4, 5)) * 3
    x[0, 0] = 0.0
    compare(th, getattr(F, name), getattr(th.nn.functional, name), [x])
    mod = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[name]()
    np.testing.assert_allclose(arr(mod(tg.tensor(x))), arr(getattr(th, name)(th.tensor(x))),
                               rtol=1e-12)


def test_relu_inplace():
    x = tg.tensor([-1.0, 2.0], requires_grad=True)
    h = x * 1.0
    out = F.relu(h, inplace=True)
    assert out is h and arr(h).tolist() == [0.0, 2.0]
    out.sum().backward()
    assert arr(x.grad).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,dim", [((6,), 0), ((3, 5), 1), ((3, 5), 0), ((2, 3, 4), -1),
                                       ((2, 3, 4), 1)])
def test_softmax_family_matches_torch(th, fn, shape, dim):
    x = rng().standard_normal(shape) * 2
    compare(th, lambda x: getattr(F, fn)(x, dim), lambda x: getattr(th, fn)(x, dim), [x])


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_family_stable_for_large_logits(th, fn):
    x = np.array([[1e4, 0.0, -1e4], [5e3, 5e3 + 1.0, 5e3 - 2.0]])
    out, _ = compare(th, lambda x: getattr(F, fn)(x, 1), lambda x: getattr(th, fn)(x, 1), [x])
    assert np.all(np.isfinite(arr(out)))
    x32 = tg.tensor([[1e4, 0.0, -1e4]], requires_grad=True)
    y = getattr(F, fn)(x32, dim=1)
    y.sum().backward()
    assert np.all(np.isfinite(arr(y))) and np.all(np.isfinite(arr(x32.grad)))
    mod = nn.Softmax(dim=1) if fn == "softmax" else nn.LogSoftmax(dim=1)
    np.testing.assert_allclose(arr(mod(tg.tensor(x))), arr(getattr(F, fn)(tg.tensor(x), 1)))


def test_softmax_implicit_dim_warns(th):
    x = rng().standard_normal((3, 4))
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmax"):
        y = F.softmax(tg.tensor(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = th.nn.functional.softmax(th.tensor(x))
    np.testing.assert_allclose(arr(y), arr(ref), rtol=1e-12)
    with pytest.raises(IndexError, match="Dimension out of range"):
        F.softmax(tg.tensor(x), dim=2)


REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_torch(th, reduction, weighted, ignore, smoothing):
    x = rng().standard_normal((6, 4)) * 2
    t = np.array([0, 3, 1, 1, 2, 3])
    if ignore:
        t[2] = -100
    w = np.array([0.5, 1.0, 2.0, 0.25]) if weighted else None

    def f_tg(x, t):
        return F.cross_entropy(x, t, weight=None if w is None else tg.tensor(w),
                               reduction=reduction, label_smoothing=smoothing)

    def f_th(x, t):
        return th.nn.functional.cross_entropy(x, t, weight=None if w is None else th.tensor(w),
                                              reduction=reduction, label_smoothing=smoothing)

    compare(th, f_tg, f_th, [x, t])
    loss_mod = nn.CrossEntropyLoss(weight=None if w is None else tg.tensor(w),
                                   reduction=reduction, label_smoothing=smoothing)
    np.testing.assert_allclose(arr(loss_mod(tg.tensor(x), tg.tensor(t))),
                               arr(f_tg(tg.tensor(x), tg.tensor(t))))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_other_shapes_match_torch(th, reduction):
    TF = th.nn.functional
    # 1-D logits with a 0-d target
    compare(th, lambda x, t: F.cross_entropy(x, t, reduction=reduction),
            lambda x, t: TF.cross_entropy(x, t, reduction=reduction),
            [rng().standard_normal(5), np.array(3)])
    # (N, C, d) logits with (N, d) targets
    compare(th, lambda x, t: F.cross_entropy(x, t, reduction=reduction),
            lambda x, t: TF.cross_entropy(x, t, reduction=reduction),
            [rng().standard_normal((2, 4, 3)), np.array([[0, 3, 1], [2, 2, 0]])])
    # class probabilities, with label smoothing and weights
    p = rng(2).random((5, 3))
    p /= p.sum(1, keepdims=True)
    w = np.array([1.0, 2.0, 0.5])
    compare(th, lambda x, p: F.cross_entropy(x, p, weight=tg.tensor(w), reduction=reduction,
                                             label_smoothing=0.2),
            lambda x, p: TF.cross_entropy(x, p, weight=th.tensor(w), reduction=reduction,
                                          label_smoothing=0.2),
            [rng().standard_normal((5, 3)), p])


def test_cross_entropy_stable_for_large_logits(th):
    x = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0], [0.0, 0.0, 1e4]])
    t = np.array([1, 1, 0])
    out, _ = compare(th, F.cross_entropy, th.nn.functional.cross_entropy, [x, t])
    assert np.isfinite(arr(out)) and arr(out) > 1e3
    x32 = tg.tensor(x.astype(np.float32), requires_grad=True)
    loss = F.cross_entropy(x32, tg.tensor(t))
    loss.backward()
    assert np.isfinite(loss.item()) and np.all(np.isfinite(arr(x32.grad)))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_matches_torch(th, reduction, weighted):
    logp = np.log(rng().dirichlet(np.ones(5), size=7))
    t = np.array([0, 4, 4, 2, -100, 1, 3])
    w = np.array([1.0, 0.5, 2.0, 3.0, 0.1]) if weighted else None
    compare(th, lambda x, t: F.nll_loss(x, t, weight=None if w is None else tg.tensor(w),
                                        reduction=reduction),
            lambda x, t: th.nn.functional.nll_loss(
                x, t, weight=None if w is None else th.tensor(w), reduction=reduction),
            [logp, t])
    mod = nn.NLLLoss(weight=None if w is None else tg.tensor(w), reduction=reduction,
                     ignore_index=4)
    ref = th.nn.NLLLoss(weight=None if w is None else th.tensor(w), reduction=reduction,
                        ignore_index=4)
    t2 = np.array([0, 4, 4, 2, 3, 1, 3])
    np.testing.assert_allclose(arr(mod(tg.tensor(logp), tg.tensor(t2))),
                               arr(ref(th.tensor(logp), th.tensor(t2))), rtol=1e-12)


def test_class_target_errors_match_torch(th):
    x = rng().standard_normal((3, 5))
    TF = th.nn.functional
    cases = [
        (np.array([1, 2]), ValueError, "Expected input batch_size \\(3\\) to match target"),
        (np.array([1, 2, 7]), IndexError, "Target 7 is out of bounds"),
        (np.array([1, 2, -3]), IndexError, "Target -3 is out of bounds"),
        (np.array([1.0, 2.0, 3.0]), RuntimeError, "expected target dtype to be Long"),
    ]
    for t, exc, msg in cases:
        for f_tg, f_th in [(F.nll_loss, TF.nll_loss), (F.cross_entropy, TF.cross_entropy)]:
            with pytest.raises(exc, match=msg):
                f_tg(tg.tensor(x), tg.tensor(t))
            with pytest.raises(exc):
                f_th(th.tensor(x), th.tensor(t))
    with pytest.raises(ValueError, match="foo is not a valid value for reduction"):
        F.cross_entropy(tg.tensor(x), tg.tensor([1, 2, 3]), reduction="foo")
    with pytest.raises(ValueError):
        nn.MSELoss(reduction="avg")


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_pointwise_losses_match_torch(th, name, reduction):
    x = rng().standard_normal((4, 3))
    y = rng(1).standard_normal((4, 3))
    y[0, 0] = x[0, 0]                          # |x - y| at its kink
    f_tg, f_th = getattr(F, name), getattr(th.nn.functional, name)
    compare(th, lambda x, y: f_tg(x, y, reduction=reduction),
            lambda x, y: f_th(x, y, reduction=reduction), [x, y])
    w = rng(2).random((4, 3))
    compare(th, lambda x, y, w: f_tg(x, y, reduction=reduction, weight=w),
            lambda x, y, w: f_th(x, y, reduction=reduction, weight=w), [x, y, w])
    mod = {"mse_loss": nn.MSELoss, "l1_loss": nn.L1Loss}[name](reduction=reduction)
    np.testing.assert_allclose(arr(mod(tg.tensor(x), tg.tensor(y))),
                               arr(f_th(th.tensor(x), th.tensor(y), reduction=reduction)),
                               rtol=1e-12)


def test_mse_broadcast_warning(th):
    with pytest.warns(UserWarning, match="Using a target size"):
        out = F.mse_loss(tg.tensor([1.0, 2.0, 3.0]), tg.tensor([[1.0], [2.0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = th.nn.functional.mse_loss(th.tensor([1.0, 2.0, 3.0]), th.tensor([[1.0], [2.0]]))
    assert out.item() == pytest.approx(ref.item())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pos_weighted", [False, True])
def test_bce_with_logits_matches_torch(th, reduction, weighted, pos_weighted):
    x = rng().standard_normal((5, 3)) * 3
    x[0] = [0.0, 40.0, -40.0]
    y = rng(1).random((5, 3))
    y[1] = [0.0, 1.0, 1.0]
    kw_tg, kw_th = {"reduction": reduction}, {"reduction": reduction}
    if weighted:
        w = rng(2).random((5, 3))
        kw_tg["weight"], kw_th["weight"] = tg.tensor(w), th.tensor(w)
    if pos_weighted:
        pw = np.array([0.5, 2.0, 3.0])
        kw_tg["pos_weight"], kw_th["pos_weight"] = tg.tensor(pw), th.tensor(pw)
    compare(th, lambda x, y: F.binary_cross_entropy_with_logits(x, y, **kw_tg),
            lambda x, y: th.nn.functional.binary_cross_entropy_with_logits(x, y, **kw_th),
            [x, y])
    mod = nn.BCEWithLogitsLoss(**kw_tg)
    np.testing.assert_allclose(arr(mod(tg.tensor(x), tg.tensor(y))),
                               arr(F.binary_cross_entropy_with_logits(
                                   tg.tensor(x), tg.tensor(y), **kw_tg)))


def test_bce_with_logits_stable_for_large_logits(th):
    x = np.array([1e4, -1e4, 0.0, 800.0, -800.0])
    y = np.array([0.0, 1.0, 0.5, 1.0, 0.0])
    out, _ = compare(th, lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction="none"),
                     lambda x, y: th.nn.functional.binary_cross_entropy_with_logits(
                         x, y, reduction="none"), [x, y])
    assert np.all(np.isfinite(arr(out)))
    xt = tg.tensor(x.astype(np.float32), requires_grad=True)
    F.binary_cross_entropy_with_logits(xt, tg.tensor(y.astype(np.float32))).backward()
    assert np.all(np.isfinite(arr(xt.grad)))
    with pytest.raises(ValueError, match="Target size"):
        F.binary_cross_entropy_with_logits(tg.zeros(3), tg.zeros(3, 1))


def test_dropout():
    tg.manual_seed(0)
    x = tg.ones(200, 100, requires_grad=True)
    y = F.dropout(x, p=0.3)
    vals = arr(y)
    kept = vals != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(vals[kept], 1 / 0.7, rtol=1e-6)
    y.sum().backward()
    assert np.array_equal(arr(x.grad), vals)            # the gradient is the mask
    assert F.dropout(x, 0.3, training=False) is x
    assert not np.any(arr(F.dropout(x, 1.0)))
    assert arr(F.dropout(x, 0.0)).tolist() == arr(x).tolist()
    with pytest.raises(ValueError, match="dropout probability"):
        F.dropout(x, 1.5)
    with pytest.raises(ValueError):
        nn.Dropout(-0.1)
    d = nn.Dropout(0.5)
    assert np.any(arr(d(x)) == 0)
    d.eval()
    assert d(x) is x


# ---------------------------------------------------------------------------
# Gradient clipping
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(th, norm_type, max_norm):
    grads = [rng(i).standard_normal(s) for i, s in enumerate([(3, 4), (4,), (2, 2, 2)])]
    ps = [nn.Parameter(tg.zeros(*g.shape, dtype=tg.float64)) for g in grads]
    qs = [th.nn.Parameter(th.zeros(*g.shape, dtype=th.float64)) for g in grads]
    for p, q, g in zip(ps, qs, grads):
        p.grad = tg.tensor(g)
        q.grad = th.tensor(g)
    extra = nn.Parameter(tg.ones(2, dtype=tg.float64))    # no grad: skipped
    total = tg.nn.utils.clip_grad_norm_(ps + [extra], max_norm, norm_type=norm_type)
    ref = th.nn.utils.clip_grad_norm_(qs, max_norm, norm_type=norm_type)
    assert total.item() == pytest.approx(ref.item(), rel=1e-12)
    for p, q in zip(ps, qs):
        np.testing.assert_allclose(arr(p.grad), arr(q.grad), rtol=1e-12)
    assert extra.grad is None
    if max_norm < 1:
        clipped = np.linalg.norm(np.concatenate([arr(p.grad).ravel() for p in ps]),
                                 ord=norm_type)
        assert clipped == pytest.approx(max_norm, rel=1e-5)


def test_clip_grad_norm_single_tensor_and_nonfinite():
    p = nn.Parameter(tg.zeros(3))
    p.grad = tg.tensor([3.0, 4.0, 0.0])
    total = tg.nn.utils.clip_grad_norm_(p, 1.0)
    assert total.item() == pytest.approx(5.0)
    assert np.linalg.norm(arr(p.grad)) == pytest.approx(1.0, rel=1e-5)
    p.grad = tg.tensor([float("inf"), 1.0, 0.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        tg.nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert tg.nn.utils.clip_grad_norm_([nn.Parameter(tg.zeros(1))], 1.0).item() == 0.0


def test_clip_grad_value_matches_torch(th):
    g = rng().standard_normal((4, 5)) * 3
    p = nn.Parameter(tg.zeros(4, 5, dtype=tg.float64))
    q = th.nn.Parameter(th.zeros(4, 5, dtype=th.float64))
    p.grad, q.grad = tg.tensor(g), th.tensor(g)
    tg.nn.utils.clip_grad_value_([p], 1.5)
    th.nn.utils.clip_grad_value_([q], 1.5)
    assert np.array_equal(arr(p.grad), arr(q.grad))
    assert arr(p.grad).max() == 1.5


# ---------------------------------------------------------------------------
# tg.save / tg.load
def test_save_load_tensors_and_values(tmp_path):
    obj = {
        "f32": tg.tensor([[1.5, -2.0]]),
        "f64": tg.tensor(np.arange(6.0).reshape(2, 3)),
        "i64": tg.tensor([1, 2, 3]),
        "b": tg.tensor([True, False]),
        "scalar": tg.tensor(3.0),
        "param": nn.Parameter(tg.ones(2)),
        "leaf": tg.tensor([1.0], requires_grad=True),
        "nested": {"list": [1, 2.5, None, "s", True], "tuple": (0.9, 0.999),
                   7: float("inf"), "nan": float("nan")},
        "empty": tg.zeros(0, 3),
        "np": np.array([1, 2], dtype=np.int64),
    }
    path = tmp_path / "ck.pt"
    save(obj, path)
    assert path.exists() and not (tmp_path / "ck.pt.npz").exists()
    out = load(path)
    assert set(out.keys()) == set(obj.keys())
    for k in ("f32", "f64", "i64", "b", "scalar", "empty"):
        assert out[k].dtype == obj[k].dtype and tuple(out[k].shape) == tuple(obj[k].shape)
        assert np.array_equal(out[k].numpy(), obj[k].numpy())
    assert isinstance(out["param"], nn.Parameter) and out["param"].requires_grad
    assert out["leaf"].requires_grad and out["leaf"].is_leaf
    nested = out["nested"]
    assert nested["list"] == [1, 2.5, None, "s", True]
    assert nested["tuple"] == (0.9, 0.999) and isinstance(nested["tuple"], tuple)
    assert nested[7] == float("inf") and math.isnan(nested["nan"])
    assert isinstance(out["np"], np.ndarray) and out["np"].tolist() == [1, 2]
    single = tmp_path / "t.npz"
    save(tg.tensor([1.0, 2.0]), single)
    t = load(single)
    assert isinstance(t, tg.Tensor) and arr(t).tolist() == [1.0, 2.0]
    buf = io.BytesIO()
    save([tg.ones(2)], buf)
    buf.seek(0)
    assert arr(load(buf)[0]).tolist() == [1.0, 1.0]


def test_save_load_module_and_optimizer(tmp_path):
    tg.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    opt = tg.optim.Adam(net.parameters(), lr=0.01)
    x, y = tg.randn(8, 3), tg.randn(8, 2)
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(net(x), y).backward()
        opt.step()
    save({"model": net.state_dict(), "optim": opt.state_dict(), "epoch": 3},
         tmp_path / "ck.npz")
    names = np.load(tmp_path / "ck.npz").files      # readable entry names, no pickle
    assert "model/0.weight" in names and "optim/state/0/exp_avg" in names
    ck = load(tmp_path / "ck.npz")
    assert isinstance(ck["model"], OrderedDict) and ck["epoch"] == 3
    net2 = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    net2.load_state_dict(ck["model"])
    assert np.array_equal(arr(net2(x)), arr(net(x)))
    opt2 = tg.optim.Adam(net2.parameters(), lr=0.5)
    opt2.load_state_dict(ck["optim"])
    assert opt2.param_groups[0]["lr"] == 0.01
    assert opt2.param_groups[0]["betas"] == (0.9, 0.999)
    for o in (opt, opt2):
        o.zero_grad()
    F.mse_loss(net(x), y).backward()
    F.mse_loss(net2(x), y).backward()
    opt.step()
    opt2.step()
    for p, q in zip(net.parameters(), net2.parameters()):
        assert np.array_equal(arr(p), arr(q))


def _write_npz(path, arrays, tree):
    manifest = json.dumps({"format": "tapegrad-npz", "version": 1, "tree": tree})
    np.savez(path, __tapegrad__=np.array(manifest), **arrays)


def test_load_errors(tmp_path):
    net = nn.Linear(2, 2)
    save(net.state_dict(), tmp_path / "good.npz")
    before = [arr(p).copy() for p in net.parameters()]
    tree = json.loads(str(np.load(tmp_path / "good.npz")["__tapegrad__"]))["tree"]
    arrays = dict(np.load(tmp_path / "good.npz"))
    del arrays["__tapegrad__"]

    missing = dict(arrays)
    del missing["bias"]
    _write_npz(tmp_path / "missing.npz", missing, tree)
    with pytest.raises(RuntimeError, match="entry 'bias' is missing"):
        load(tmp_path / "missing.npz")

    shaped = dict(arrays)
    shaped["weight"] = np.zeros((3, 2), np.float32)
    _write_npz(tmp_path / "shaped.npz", shaped, tree)
    with pytest.raises(RuntimeError, match="entry 'weight' has shape \\[3, 2\\]"):
        load(tmp_path / "shaped.npz")

    retyped = dict(arrays)
    retyped["weight"] = arrays["weight"].astype(np.float64)
    _write_npz(tmp_path / "retyped.npz", retyped, tree)
    with pytest.raises(RuntimeError, match="dtype float64"):
        load(tmp_path / "retyped.npz")

    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(RuntimeError, match="not a tapegrad .npz file"):
        load(tmp_path / "junk.npz")

    np.savez(tmp_path / "objects.npz", weight=np.array([{"a": 1}], dtype=object))
    with pytest.raises(RuntimeError, match="without pickle"):
        load(tmp_path / "objects.npz")

    with pytest.raises(TypeError, match="cannot save an object of type"):
        save({"fn": print}, tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()

    # A mis-shaped checkpoint changes nothing in the model it is loaded into.
    np.savez(tmp_path / "plain.npz", weight=np.zeros((2, 3), np.float32),
             bias=np.zeros(2, np.float32))
    plain = load(tmp_path / "plain.npz")        # a plain np.savez loads as a dict of tensors
    assert isinstance(plain["weight"], tg.Tensor) and tuple(plain["weight"].shape) == (2, 3)
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        net.load_state_dict(plain)
    assert all(np.array_equal(arr(p), b) for p, b in zip(net.parameters(), before))


def test_save_keeps_shared_tensors_shared(tmp_path):
    t = tg.tensor([1.0, 2.0])
    save({"a": t, "b": t}, tmp_path / "s.npz")
    out = load(tmp_path / "s.npz")
    assert out["a"] is out["b"]


def test_public_api_names():
    """The final API: tg.nn, tg.optim, tg.save, tg.load (tapegrad/__init__.py)."""
    assert tg.nn is nn and tg.nn.functional is F
    assert tg.nn.utils.clip_grad_norm_ is nn.utils.clip_grad_norm_
    assert tg.optim.SGD is tapegrad.optim.SGD
    assert getattr(tg, "save", None) is save, "add `from .serialization import load, save`"
    assert getattr(tg, "load", None) is load

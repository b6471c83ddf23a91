"""More of torch's surface, each against PyTorch: activations and vector helpers of
nn.functional (values and gradients, at the kinks too, gradcheck, errors), their modules
(reprs), the containers ModuleDict / ParameterList / ParameterDict, and top-level
functions; compiled replays of a model built from them match eager bit for bit."""
import warnings

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.nn as nn
import tapegrad.nn.functional as F
from tapegrad.autograd.gradcheck import gradcheck, gradgradcheck

from conftest import assert_close, to_np

# kinks and ordinary points: -3, 3 (hard*), 0, 6 (relu6), 0.5 (threshold below)
POINTS = np.array([[-4.0, -3.0, -1.5, -0.25, 0.0, 0.5],
                   [0.75, 2.0, 3.0, 4.5, 6.0, 7.0]])

# name -> (call with the library's F, smooth enough for gradcheck)
UNARY = {
    "relu6": (lambda F, x: F.relu6(x), False),
    "hardsigmoid": (lambda F, x: F.hardsigmoid(x), False),
    "hardswish": (lambda F, x: F.hardswish(x), False),
    "mish": (lambda F, x: F.mish(x), True),
    "selu": (lambda F, x: F.selu(x), False),
    "celu": (lambda F, x: F.celu(x, 0.7), False),
    "softsign": (lambda F, x: F.softsign(x), False),
    "logsigmoid": (lambda F, x: F.logsigmoid(x), True),
    "softmin": (lambda F, x: F.softmin(x, dim=1), True),
    "glu": (lambda F, x: F.glu(x, dim=1), True),
    "tanhshrink": (lambda F, x: F.tanhshrink(x), True),
    "threshold": (lambda F, x: F.threshold(x, 0.5, -2.0), False),
    "normalize": (lambda F, x: F.normalize(x, p=2.0, dim=1), True),
    "normalize_p1": (lambda F, x: F.normalize(x, p=1.0, dim=0), False),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_functional_matches_torch(name, dtype, torch):
    fn, _ = UNARY[name]
    rng = np.random.default_rng(0)
    data = np.concatenate([POINTS, rng.standard_normal((4, 6)) * 3]).astype(dtype)
    up = rng.standard_normal(to_np(fn(torch.nn.functional,
                                      torch.tensor(data))).shape).astype(dtype)
    x = tg.tensor(data, requires_grad=True)
    xt = torch.tensor(data, requires_grad=True)
    out, ref = fn(F, x), fn(torch.nn.functional, xt)
    assert out.dtype == getattr(tg, dtype)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-13)
    assert_close(out, ref, what=name, **tol)
    (out * tg.tensor(up)).sum().backward()
    (ref * torch.tensor(up)).sum().backward()
    if dtype == "float64" and name in ("hardsigmoid", "celu"):
        tol = dict(rtol=1e-7, atol=1e-9)      # PyTorch's backward uses float32 constants
    assert_close(x.grad, xt.grad, what=f"{name} gradient", **tol)


@pytest.mark.parametrize("name", sorted(k for k, (_, smooth) in UNARY.items() if smooth))
def test_functional_gradcheck(name):
    fn, _ = UNARY[name]
    x = tg.tensor(np.random.default_rng(1).standard_normal((3, 4)), dtype=tg.float64,
                  requires_grad=True)
    assert gradcheck(lambda t: fn(F, t), (x,))
    assert gradgradcheck(lambda t: fn(F, t), (x,))


@pytest.mark.parametrize("call", [
    lambda F, a, b: F.cosine_similarity(a, b),
    lambda F, a, b: F.cosine_similarity(a, b[:1], dim=1, eps=1e-3),     # broadcast
    lambda F, a, b: F.cosine_similarity(a, b * 0.0, dim=1),              # zero norm
    lambda F, a, b: F.pairwise_distance(a, b),
    lambda F, a, b: F.pairwise_distance(a, b, p=1.0, keepdim=True),
])
def test_vector_helpers_match_torch(call, torch):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 5, 4))
    x, y = tg.tensor(a, requires_grad=True), tg.tensor(b, requires_grad=True)
    xt, yt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    out, ref = call(F, x, y), call(torch.nn.functional, xt, yt)
    assert_close(out, ref, rtol=1e-12, atol=1e-13)
    out.sum().backward()
    ref.sum().backward()
    assert_close(x.grad, xt.grad, rtol=1e-10, atol=1e-12)
    assert_close(y.grad, yt.grad, rtol=1e-10, atol=1e-12)


def test_one_hot_and_errors_match_torch(torch):
    labels = np.array([[0, 2], [1, 3]])
    assert np.array_equal(F.one_hot(tg.tensor(labels)).numpy(),
                          torch.nn.functional.one_hot(torch.tensor(labels)).numpy())
    assert F.one_hot(tg.tensor([1]), 4).dtype == tg.int64
    for lib, f in ((tg, F), (torch, torch.nn.functional)):
        with pytest.raises(RuntimeError, match="smaller than num_classes"):
            f.one_hot(lib.tensor([0, 5]), 3)
        with pytest.raises(RuntimeError, match="non-negative"):
            f.one_hot(lib.tensor([-1, 0]))
        with pytest.raises(RuntimeError, match="Halving dimension must be even"):
            f.glu(lib.ones(2, 3), dim=1)


@pytest.mark.parametrize("name, args", [
    ("ReLU6", ()), ("Hardsigmoid", ()), ("Hardswish", ()), ("Mish", ()), ("SELU", ()),
    ("CELU", (0.5,)), ("Threshold", (0.1, 20.0)), ("Softmin", (1,)), ("GLU", ()),
    ("Softsign", ()), ("LogSigmoid", ()), ("Tanhshrink", ()), ("CosineSimilarity", ()),
    ("PairwiseDistance", ()), ("Unflatten", (1, (2, 3)))])
def test_modules_match_torch(name, args, torch):
    ours, theirs = getattr(nn, name)(*args), getattr(torch.nn, name)(*args)
    assert repr(ours) == repr(theirs)
    data = np.random.default_rng(3).standard_normal((4, 6))
    ins = (data, data[::-1].copy()) if name in ("CosineSimilarity", "PairwiseDistance") \
        else (data,)
    assert_close(ours(*map(tg.tensor, ins)), theirs(*map(torch.tensor, ins)), rtol=1e-12)


def test_containers_register_as_torch(torch):
    def build(lib):
        m = lib.nn.Module()
        m.blocks = lib.nn.ModuleDict({"enc": lib.nn.Linear(3, 4), "act": lib.nn.ReLU()})
        m.blocks["dec"] = lib.nn.Linear(4, 2)
        m.scales = lib.nn.ParameterList([lib.nn.Parameter(lib.ones(2)), lib.zeros(3)])
        m.extra = lib.nn.ParameterDict({"b": lib.zeros(2)})
        return m
    ours, theirs = build(tg), build(torch)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [tuple(p.shape) for p in ours.parameters()] == \
        [tuple(p.shape) for p in theirs.parameters()]
    assert all(isinstance(p, nn.Parameter) for p in ours.scales)
    assert list(ours.blocks.keys()) == ["enc", "act", "dec"] and "act" in ours.blocks
    assert isinstance(ours.blocks.pop("act"), nn.ReLU) and len(ours.blocks) == 2
    assert repr(ours.scales).replace("tapegrad", "torch") == repr(theirs.scales)
    for lib in (tg, torch):
        with pytest.raises(ValueError, match="element #0 has length 3; 2 is required"):
            lib.nn.ModuleDict([("a", lib.nn.ReLU(), 1)])


def test_top_level_functions_match_torch(torch):
    rng = np.random.default_rng(4)
    a, b, c = rng.random((3, 3)) + 0.5, rng.random((3, 3)), rng.random(3)
    pairs = [
        (lambda L, x, y, v: L.log2(x), ()), (lambda L, x, y, v: L.log10(x), ()),
        (lambda L, x, y, v: L.lerp(x, y, 0.3), ()),
        (lambda L, x, y, v: L.addmm(x, y, x, beta=0.5, alpha=2.0), ()),
        (lambda L, x, y, v: L.mv(x, v), ()),
        (lambda L, x, y, v: L.swapaxes(x.reshape(1, 3, 3), 0, 2), ()),
        (lambda L, x, y, v: L.movedim(x.reshape(3, 1, 3), (0, 1), (2, 0)), ()),
        (lambda L, x, y, v: L.tile(v, (2, 2)), ()),
        (lambda L, x, y, v: L.hstack([x, y]), ()), (lambda L, x, y, v: L.vstack([v, v]), ()),
        (lambda L, x, y, v: L.concat([x, y], 1), ()),
        (lambda L, x, y, v: L.broadcast_tensors(x, v)[1], ()),
    ]
    for f, _ in pairs:
        x, y, v = (tg.tensor(t, requires_grad=True) for t in (a, b, c))
        xt, yt, vt = (torch.tensor(t, requires_grad=True) for t in (a, b, c))
        out, ref = f(tg, x, y, v), f(torch, xt, yt, vt)
        assert_close(out, ref, rtol=1e-12, atol=1e-14)
        out.sum().backward()
        ref.sum().backward()
        for g, gt in ((x.grad, xt.grad), (y.grad, yt.grad), (v.grad, vt.grad)):
            assert (g is None) == (gt is None)
            if g is not None:
                assert_close(g, gt, rtol=1e-12, atol=1e-14)
    t = tg.tensor([[0.0, 1.0], [2.0, 0.0]])
    assert tg.count_nonzero(t).item() == 2 and tg.count_nonzero(t, 0).tolist() == [1, 1]
    assert tg.is_tensor(t) and not tg.is_tensor(a) and tg.numel(t) == 4
    assert tg.empty_like(t, dtype=tg.float64).dtype == tg.float64
    with tg.inference_mode():
        assert not (tg.ones(2, requires_grad=True) * 2).requires_grad
    with tg.inference_mode(False):
        assert (tg.ones(2, requires_grad=True) * 2).requires_grad


def test_compiled_model_of_new_layers_replays_bit_for_bit():
    tg.manual_seed(0)
    model = nn.ModuleDict({"a": nn.Linear(6, 8), "b": nn.Linear(4, 3)})
    acts = nn.Sequential(nn.Hardswish(), nn.Mish(), nn.GLU())
    scale = nn.ParameterList([tg.ones(3)])
    opt = tg.optim.SGD(list(model.parameters()) + list(scale.parameters()), lr=0.1)

    def step(x, y):
        opt.zero_grad()
        h = model["b"](acts(model["a"](x))) * scale[0]
        loss = (1.0 - F.cosine_similarity(h, y)).mean() + F.logsigmoid(h).mean()
        loss.backward()
        opt.step()
        return loss
    data = [(tg.randn(5, 6), tg.randn(5, 3)) for _ in range(2)]
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    eager = [step(*data[i % 2]).item() for i in range(4)]
    with tg.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(tg.tensor(state[k]))
        scale[0].fill_(1.0)
    opt.state.clear()
    c = tg.compile(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tg.CompileWarning)
        got = [c(*data[i % 2]).item() for i in range(4)]
    assert got == eager and c.replays >= 2


@pytest.mark.parametrize("kw", [dict(), dict(batch_first=True, padding_value=-1.0),
                                dict(batch_first=True, padding_side="left")])
def test_pad_sequence_matches_torch(kw, torch):
    rng = np.random.default_rng(6)
    seqs = [rng.standard_normal((n, 3)) for n in (4, 2, 3)]
    ours = [tg.tensor(s, requires_grad=True) for s in seqs]
    theirs = [torch.tensor(s, requires_grad=True) for s in seqs]
    out = nn.utils.rnn.pad_sequence(ours, **kw)
    ref = torch.nn.utils.rnn.pad_sequence(theirs, **kw)
    assert_close(out, ref)
    (out * out).sum().backward()
    (ref * ref).sum().backward()
    for a, b in zip(ours, theirs):
        assert_close(a.grad, b.grad)


def test_parameters_to_vector_and_back(torch):
    model = nn.Linear(3, 2)
    vec = nn.utils.parameters_to_vector(model.parameters())
    ref = torch.nn.Linear(3, 2)
    ref.load_state_dict({k: torch.tensor(v.numpy()) for k, v in model.state_dict().items()})
    assert_close(vec, torch.nn.utils.parameters_to_vector(ref.parameters()))
    nn.utils.vector_to_parameters(tg.arange(8.0), model.parameters())
    assert model.weight.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert model.bias.tolist() == [6.0, 7.0] and model.weight.requires_grad

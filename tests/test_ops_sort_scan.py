"""sort, argsort, topk, cumsum, einsum, F.unfold and F.fold: against PyTorch (values and
gradients), gradcheck and gradgradcheck, compiled replays equal to eager to the bit, and
PyTorch's errors."""
import numpy as np
import pytest

import tapegrad as tg

try:
    import torch
except ImportError:
    torch = None


def _unfold(L, x):
    return L.nn.functional.unfold(x, (2, 3), dilation=(1, 2), padding=1, stride=(2, 1))


def _fold(L, x):
    cols = L.nn.functional.unfold(x, 2, padding=1)
    return L.nn.functional.fold(cols * cols, (4, 5), 2, padding=1)


# name -> (input shape, f(L, x))
CASES = {
    "sort": ((3, 5), lambda L, x: L.sort(x, 1)[0]),
    "sort_desc_dim0": ((4, 3), lambda L, x: x.sort(0, descending=True).values),
    "sort_3d": ((2, 5, 3), lambda L, x: L.sort(x, dim=1)[0]),
    "topk": ((3, 6), lambda L, x: L.topk(x, 2)[0]),
    "topk_smallest_dim0": ((5, 3), lambda L, x: x.topk(3, 0, largest=False).values),
    "topk_all": ((4,), lambda L, x: L.topk(x, 4)[0]),
    "cumsum": ((3, 7), lambda L, x: L.cumsum(x, 1)),
    "cumsum_dim0": ((9, 2), lambda L, x: x.cumsum(0)),
    "cumsum_1d": ((5,), lambda L, x: L.cumsum(x, -1)),
    "einsum_matmul": ((3, 4), lambda L, x: L.einsum("ij,jk->ik", x, x.t())),
    "einsum_batch": ((2, 3, 4), lambda L, x: L.einsum("bij,bkj->bik", x, x * 2)),
    "einsum_trace": ((4, 4), lambda L, x: L.einsum("ii", x)),
    "einsum_diag": ((4, 4), lambda L, x: L.einsum("ii->i", x)),
    "einsum_sum": ((3, 4), lambda L, x: L.einsum("ij->j", x)),
    "einsum_outer": ((3,), lambda L, x: L.einsum("i,j->ij", x, x.exp())),
    "einsum_ellipsis": ((2, 3, 4), lambda L, x: L.einsum("...ij,jk->...ik", x, x[0].t())),
    "einsum_three": ((3, 3), lambda L, x: L.einsum("ij,jk,kl->il", x, x.sin(), x)),
    "einsum_implicit": ((3, 4), lambda L, x: L.einsum("ij,kj", x, x)),
    "unfold": ((2, 2, 5, 6), _unfold),
    "fold": ((1, 2, 4, 5), _fold),
}


@pytest.mark.skipif(torch is None, reason="PyTorch is the oracle")
@pytest.mark.parametrize("name", CASES)
def test_values_and_gradients_as_pytorch(name):
    shape, f = CASES[name]
    data = np.random.default_rng(len(name)).standard_normal(shape)
    out = []
    for L in (tg, torch):
        x = L.tensor(data, requires_grad=True)
        y = f(L, x)
        w = L.tensor(np.random.default_rng(1).standard_normal(tuple(y.shape)))
        (y * w).sum().backward()
        out.append((y.detach().numpy(), x.grad.numpy()))
    assert out[0][0].shape == out[1][0].shape
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_gradcheck_and_gradgradcheck(name):
    shape, f = CASES[name]
    x = tg.tensor(np.random.default_rng(2).standard_normal(shape), requires_grad=True)
    assert tg.autograd.gradcheck(lambda t: f(tg, t), (x,))
    assert tg.autograd.gradgradcheck(lambda t: f(tg, t), (x,))


@pytest.mark.parametrize("name", CASES)
def test_compiled_replay_equals_eager(name):
    """New inputs each call (a new order for sort and topk): the replay sorts again."""
    shape, f = CASES[name]
    w = tg.tensor(np.random.default_rng(3).standard_normal(shape), requires_grad=True)

    def step(x):
        y = f(tg, x * w)
        loss = (y * y.detach().cos()).sum()
        loss.backward()
        return loss

    compiled = tg.compile(step)
    rng = np.random.default_rng(4)
    for _ in range(4):
        x = tg.tensor(rng.standard_normal(shape))
        w.grad = None
        got, g1 = compiled(x).item(), w.grad.numpy().copy()
        w.grad = None
        want = step(x).item()
        assert got == want and np.array_equal(g1, w.grad.numpy())
    assert (compiled.records, compiled.replays, compiled.fallbacks) == (1, 3, 0)


def test_sort_ties_nan_and_indices_as_pytorch():
    data = [[2.0, np.nan, 1.0, 2.0, -np.inf, 1.0], [0.0, -0.0, 3.0, np.inf, 3.0, -1.0]]
    for descending in (False, True):
        v, i = tg.sort(tg.tensor(data), dim=1, descending=descending, stable=True)
        if torch is not None:
            tv, ti = torch.sort(torch.tensor(data), dim=1, descending=descending, stable=True)
            np.testing.assert_array_equal(v.numpy(), tv.numpy())
            assert i.tolist() == ti.tolist()
        assert i.dtype == tg.int64
    assert tg.argsort(tg.tensor([3.0, 1.0, 2.0]), descending=True).tolist() == [0, 2, 1]
    v, i = tg.sort(tg.tensor([3, 1, 2]))
    assert v.tolist() == [1, 2, 3] and i.tolist() == [1, 2, 0] and v.dtype == tg.int64
    v, i = tg.topk(tg.tensor([1.0, 5.0, 3.0]), 2)
    assert v.tolist() == [5.0, 3.0] and i.tolist() == [1, 2]
    assert repr(v.grad_fn) is not None and tg.topk(tg.ones(3, requires_grad=True), 1)[0] \
        .grad_fn.name() == "TopkBackward0"


def test_cumsum_dtypes_as_pytorch():
    assert tg.cumsum(tg.tensor([1, 2, 3]), 0).tolist() == [1, 3, 6]
    b = tg.cumsum(tg.tensor([True, False, True]), 0)
    assert b.tolist() == [1, 1, 2] and b.dtype == tg.int64
    f = tg.tensor([1.0, 2.0]).cumsum(0, dtype=tg.float64)
    assert f.dtype == tg.float64 and f.tolist() == [1.0, 3.0]
    assert tg.cumsum(tg.tensor(2.5), 0).item() == 2.5


@pytest.mark.parametrize("call, kind, match", [
    (lambda: tg.topk(tg.ones(3), 4), RuntimeError, "selected index k out of range"),
    (lambda: tg.topk(tg.ones(3), -1), RuntimeError, "selected index k out of range"),
    (lambda: tg.sort(tg.ones(3), 1), IndexError, "Dimension out of range"),
    (lambda: tg.cumsum(tg.ones(3), 2), IndexError, "Dimension out of range"),
    (lambda: tg.einsum("ij,jk->ik", tg.ones(2, 3)), RuntimeError, "fewer operands"),
    (lambda: tg.einsum("ij->ij", tg.ones(2, 3), tg.ones(2)), RuntimeError, "more operands"),
    (lambda: tg.einsum("ij,jk->ik", tg.ones(2, 3), tg.ones(4, 2)), RuntimeError,
     "operands do not broadcast"),
    (lambda: tg.einsum("ijk->i", tg.ones(2, 3)), RuntimeError, "number of subscripts"),
    (lambda: tg.einsum("i1->i", tg.ones(2, 3)), RuntimeError, "invalid subscript"),
    (lambda: tg.einsum("ij->k", tg.ones(2, 3)), RuntimeError, "output subscript k"),
    (lambda: tg.einsum(3, tg.ones(2)), TypeError, "equation"),
    (lambda: tg.nn.functional.unfold(tg.ones(2, 3), 2), RuntimeError, "3D or 4D"),
    (lambda: tg.nn.functional.unfold(tg.ones(1, 1, 2, 2), 3), RuntimeError,
     "sliding blocks"),
    (lambda: tg.nn.functional.fold(tg.ones(1, 5, 9), (4, 4), 2), RuntimeError,
     "divisible by the product of kernel_size"),
    (lambda: tg.nn.functional.fold(tg.ones(1, 4, 8), (4, 4), 2), RuntimeError,
     "calculated number of sliding blocks 3 \\* 3 = 9"),
])
def test_bad_input_raises_as_pytorch(call, kind, match):
    with pytest.raises(kind, match=match):
        call()


def test_unfold_fold_modules():
    x = tg.tensor(np.arange(32.0).reshape(1, 2, 4, 4))
    cols = tg.nn.Unfold(2, stride=2)(x)
    assert tuple(cols.shape) == (1, 8, 4)
    back = tg.nn.Fold((4, 4), 2, stride=2)(cols)
    np.testing.assert_array_equal(back.numpy(), x.numpy())    # blocks do not overlap
    assert repr(tg.nn.Fold((4, 4), 2)) == \
        "Fold(output_size=(4, 4), kernel_size=2, dilation=1, padding=0, stride=1)"

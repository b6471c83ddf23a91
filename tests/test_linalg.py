"""tapegrad.linalg against torch.linalg: values and gradients (float64), gradcheck and
gradgradcheck, batches, and errors."""
import math

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.autograd.gradcheck import gradcheck, gradgradcheck

from conftest import assert_close

RNG = np.random.default_rng(0)
A = RNG.standard_normal((2, 3, 3)) + 3.0 * np.eye(3)     # well conditioned, batched
B = RNG.standard_normal((2, 3, 2))
V = RNG.standard_normal((2, 3))

def _eigh_sign_free(res):
    w, V = res
    return (V * V * w.unsqueeze(-2)).sum(-1) + w.sum(-1, keepdim=True) * 0.5


CALLS = {
    "solve": (lambda L, a, b: L.linalg.solve(a, b), (A, B)),
    "solve_vector": (lambda L, a, v: L.linalg.solve(a, v), (A, V)),
    "solve_right": (lambda L, a, b: L.linalg.solve(a, b.transpose(-2, -1), left=False),
                    (A, B)),
    "inv": (lambda L, a: L.linalg.inv(a), (A,)),
    "det": (lambda L, a: L.linalg.det(a), (A,)),
    "slogdet": (lambda L, a: L.linalg.slogdet(a).logabsdet, (A,)),
    "vector_norm": (lambda L, a: L.linalg.vector_norm(a, 3.0, dim=-1), (A,)),
    "vector_norm_all": (lambda L, a: L.linalg.vector_norm(a), (A,)),
    "vector_norm_inf": (lambda L, a: L.linalg.vector_norm(a, math.inf, dim=(0, 2)), (A,)),
    "matrix_norm_fro": (lambda L, a: L.linalg.matrix_norm(a), (A,)),
    "matrix_norm_1": (lambda L, a: L.linalg.matrix_norm(a, 1), (A,)),
    "matrix_norm_-inf": (lambda L, a: L.linalg.matrix_norm(a, -math.inf, keepdim=True),
                         (A,)),
    "norm": (lambda L, a: L.linalg.norm(a[0]), (A,)),
    "norm_dim": (lambda L, a: L.linalg.norm(a, dim=(1, 2)), (A,)),
    "cholesky": (lambda L, a: L.linalg.cholesky(a @ a.transpose(-2, -1)), (A,)),
    "cholesky_upper": (lambda L, a: L.linalg.cholesky(a @ a.transpose(-2, -1), upper=True),
                       (A,)),
    # eigenvectors up to sign (LAPACK's choice): squares are sign-free
    "eigh": (lambda L, a: _eigh_sign_free(L.linalg.eigh(a + a.transpose(-2, -1))), (A,)),
    "eigh_upper": (lambda L, a: _eigh_sign_free(L.linalg.eigh(a + a.transpose(-2, -1),
                                                              UPLO="U")), (A,)),
    "eigvalsh": (lambda L, a: L.linalg.eigvalsh(a + a.transpose(-2, -1)), (A,)),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_values_and_gradients_match_torch(name, torch):
    fn, arrays = CALLS[name]
    ours = [tg.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, ref = fn(tg, *ours), fn(torch, *theirs)
    assert_close(out, ref, rtol=1e-10, atol=1e-12)
    up = RNG.standard_normal(tuple(ref.shape))
    (out * tg.tensor(up)).sum().backward()
    (ref * torch.tensor(up)).sum().backward()
    for a, b in zip(ours, theirs):
        assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["solve", "inv", "det", "slogdet", "matrix_norm_fro",
                                  "cholesky", "eigh", "eigvalsh"])
def test_gradcheck_and_gradgradcheck(name):
    fn, arrays = CALLS[name]
    ts = tuple(tg.tensor(a[0], requires_grad=True) for a in arrays)
    assert gradcheck(lambda *xs: fn(tg, *xs), ts)
    assert gradgradcheck(lambda *xs: fn(tg, *xs), ts)


def test_slogdet_sign_and_errors_as_torch(torch):
    m = np.array([[0.0, 2.0], [3.0, 1.0]])
    ours, theirs = tg.linalg.slogdet(tg.tensor(m)), torch.linalg.slogdet(torch.tensor(m))
    assert ours.sign.item() == theirs.sign.item() == -1.0
    assert_close(ours.logabsdet, theirs.logabsdet)
    for lib in (tg, torch):
        with pytest.raises(RuntimeError, match="square"):
            lib.linalg.inv(lib.ones(2, 3, dtype=lib.float64))
        with pytest.raises(RuntimeError, match="not positive-definite"):
            lib.linalg.cholesky(lib.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=lib.float64))
        with pytest.raises(RuntimeError, match="singular"):
            lib.linalg.solve(lib.zeros(2, 2, dtype=lib.float64),
                             lib.ones(2, dtype=lib.float64))

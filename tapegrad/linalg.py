"""tapegrad.linalg: norms, solve, inv, det, slogdet, cholesky and eigh, as
``torch.linalg``.

Norms are compositions of the core ops. The factorisation-based functions run LAPACK
through NumPy in an ``autograd.Function`` whose backward is written with these same
functions, so gradients of any order follow; the matrices are values Python reads (a
compiled function using them records again when they change)."""
import math
from collections import namedtuple

import numpy as np

import tapegrad as tg

from .autograd import Function

__all__ = ["vector_norm", "matrix_norm", "norm", "solve", "inv", "det", "slogdet",
           "cholesky", "eigh", "eigvalsh"]

SlogdetResult = namedtuple("linalg_slogdet", ["sign", "logabsdet"])
EighResult = namedtuple("linalg_eigh", ["eigenvalues", "eigenvectors"])


def _square(A, fname):
    if not isinstance(A, tg.Tensor):
        raise TypeError(f"linalg.{fname}: expected a Tensor, got {type(A).__name__}")
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise RuntimeError(f"linalg.{fname}: A must be batches of square matrices, but they "
                           f"are {A.shape[-2] if A.ndim > 1 else 1} by {A.shape[-1]} matrices")
    if not A.dtype.is_floating_point:
        raise RuntimeError(f"linalg.{fname}: Expected a floating point tensor as input. Got "
                           f"{A.dtype}")


def _mT(x):
    return x.transpose(-2, -1)


def vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None):
    """The ord-norm of x's entries over ``dim`` (all of them by default)."""
    if isinstance(ord, str):
        raise RuntimeError(f"linalg.vector_norm: ord must be a number, got {ord!r}")
    if dim is None and not keepdim:
        x = x.reshape(-1)
    return x.norm(ord, dim, keepdim=keepdim, dtype=dtype)


def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None):
    """'fro', or the max (min) absolute column sum (ord 1, -1) or row sum (inf, -inf)."""
    if A.ndim < 2:
        raise RuntimeError("linalg.matrix_norm: The input tensor A must have at least 2 "
                           "dimensions.")
    if dtype is not None:
        A = A.to(dtype)
    d0, d1 = (d % A.ndim for d in dim)
    if ord == "fro":
        return A.norm("fro", (d0, d1), keepdim=keepdim)
    if ord in (1, -1, math.inf, -math.inf):
        over, then = (d0, d1) if abs(ord) == 1 else (d1, d0)
        sums = A.abs().sum(over, keepdim=True)
        red = sums.amax(then, keepdim=True) if ord > 0 else sums.amin(then, keepdim=True)
        return red if keepdim else red.squeeze(max(d0, d1)).squeeze(min(d0, d1))
    raise RuntimeError(f"linalg.matrix_norm: Order {ord} not supported (only 'fro', 1, -1, "
                       "inf and -inf).")


def norm(A, ord=None, dim=None, keepdim=False, *, dtype=None):
    """vector_norm over one dim (or all, flattened, when ord is None), matrix_norm over
    two dims (or a 2-D input's with a matrix ord)."""
    if isinstance(dim, int):
        dim = (dim,)
    if dim is not None and len(dim) == 2:
        return matrix_norm(A, "fro" if ord is None else ord, dim, keepdim, dtype=dtype)
    if dim is None and ord is not None and A.ndim == 2:
        return matrix_norm(A, ord, (-2, -1), keepdim, dtype=dtype)
    if dim is None and ord is not None and A.ndim != 1:
        raise RuntimeError(f"linalg.norm: If dim is not specified but ord is, the input must "
                           f"be 1D or 2D. Got {A.ndim}D.")
    return vector_norm(A, 2 if ord is None else ord, dim, keepdim, dtype=dtype)


def _lapack(fn, *arrays):
    try:
        return fn(*arrays)
    except np.linalg.LinAlgError:
        raise RuntimeError("linalg: The diagonal element 1 is zero, the solve could not be "
                           "completed because the input matrix is singular.") from None


class _Solve(Function):
    @staticmethod
    def forward(ctx, A, B):
        X = tg.tensor(_lapack(np.linalg.solve, A.detach().numpy(), B.detach().numpy()))
        ctx.save_for_backward(A, X)
        return X

    @staticmethod
    def backward(ctx, G):
        A, X = ctx.saved_tensors
        gB = solve(_mT(A), G)
        return -(gB @ _mT(X)), gB


class _Inv(Function):
    @staticmethod
    def forward(ctx, A):
        Y = tg.tensor(_lapack(np.linalg.inv, A.detach().numpy()))
        ctx.save_for_backward(Y)
        return Y

    @staticmethod
    def backward(ctx, G):
        (Y,) = ctx.saved_tensors
        return -(_mT(Y) @ G @ _mT(Y))


class _SlogDet(Function):
    @staticmethod
    def forward(ctx, A):
        sign, logabs = np.linalg.slogdet(A.detach().numpy())
        ctx.save_for_backward(A)
        return tg.tensor(sign), tg.tensor(logabs)

    @staticmethod
    def backward(ctx, gsign, glog):
        (A,) = ctx.saved_tensors
        return glog[..., None, None] * _mT(inv(A))


class _Cholesky(Function):
    @staticmethod
    def forward(ctx, A):
        try:
            L = tg.tensor(np.linalg.cholesky(A.detach().numpy()))
        except np.linalg.LinAlgError:
            raise RuntimeError("linalg.cholesky: The factorization could not be completed "
                               "because the input is not positive-definite.") from None
        ctx.save_for_backward(L)
        return L

    @staticmethod
    def backward(ctx, G):
        """PyTorch's formula: with Phi(X) the lower triangle of X, diagonal halved,
        gA = sym(L^-H Phi(L^H G) L^-1)."""
        (L,) = ctx.saved_tensors
        n = L.shape[-1]
        half = 1.0 - 0.5 * tg.eye(n, dtype=L.dtype)
        phi = (_mT(L) @ G).tril() * half
        Linv = inv(L)
        g = _mT(Linv) @ phi @ Linv
        return (g + _mT(g)) * 0.5


class _Eigh(Function):
    @staticmethod
    def forward(ctx, A, uplo):
        w, V = np.linalg.eigh(A.detach().numpy(), UPLO=uplo)
        w, V = tg.tensor(w), tg.tensor(V)
        ctx.save_for_backward(w, V)
        return w, V

    @staticmethod
    def backward(ctx, gw, gV):
        """PyTorch's formula: V (diag(gw) + skew(V^T gV) / (w_j - w_i)) V^T; equal
        eigenvalues make it infinite, as in PyTorch."""
        w, V = ctx.saved_tensors
        eye = tg.eye(w.shape[-1], dtype=w.dtype)
        inner = tg.zeros_like(V) if gw is None else gw.unsqueeze(-1) * eye
        if gV is not None:
            VhgV = _mT(V) @ gV
            gap = w.unsqueeze(-2) - w.unsqueeze(-1) + eye
            inner = inner + 0.5 * (VhgV - _mT(VhgV)) / gap
        return V @ inner @ _mT(V), None


def eigh(A, UPLO="L"):
    """Eigenvalues (ascending) and eigenvectors of symmetric matrices, read from the
    triangle ``UPLO``. Each eigenvector's sign is LAPACK's, which may differ from
    PyTorch's."""
    _square(A, "eigh")
    if UPLO not in ("L", "U"):
        raise RuntimeError(f"Expected UPLO argument to be 'L' or 'U', but got {UPLO}")
    return EighResult(*_Eigh.apply(A, UPLO))


def eigvalsh(A, UPLO="L"):
    return eigh(A, UPLO).eigenvalues


def cholesky(A, *, upper=False):
    """L lower-triangular with A = L L^T (A symmetric positive-definite); ``upper``: L^T."""
    _square(A, "cholesky")
    L = _Cholesky.apply(A)
    return _mT(L) if upper else L


def solve(A, B, *, left=True):
    """X with A @ X = B (B a batch of vectors when it has one dim fewer than A)."""
    _square(A, "solve")
    if not left:
        return _mT(solve(_mT(A), _mT(B)))
    if B.ndim == A.ndim - 1:
        return _Solve.apply(A, B.unsqueeze(-1)).squeeze(-1)
    return _Solve.apply(A, B)


def inv(A):
    _square(A, "inv")
    return _Inv.apply(A)


def slogdet(A):
    """(sign, log |det A|); the gradient flows through the second."""
    _square(A, "slogdet")
    sign, logabs = _SlogDet.apply(A)
    return SlogdetResult(sign.detach(), logabs)


def det(A):
    """sign * exp(log |det A|)."""
    sign, logabs = slogdet(A)
    return sign * logabs.exp()

"""Differential fuzzing against PyTorch: random programs (tests/fuzzgen.py) built from the
same seed in tapegrad and in torch must agree on every intermediate value, on all leaf
gradients, and on second derivatives (grad with create_graph=True, then backward of
sum(g_i * r_i))."""
import subprocess
import sys

import numpy as np
import pytest

import tapegrad as tg
from fuzzgen import generate

torch = pytest.importorskip("torch")

N_PROGRAMS = 400
RTOL = 1e-9

# A crash of the Numba replay (a segfault) would take the whole pytest session down, so a
# known one is first reproduced in a subprocess; while it reproduces, the programs that
# can reach it fail with this explanation instead of running.
ZERO_DIM_CRASH = """
import tapegrad as tg
x = tg.tensor([0.5, 0.2], dtype=tg.float64, requires_grad=True)
s = x.sum()
(s * tg.sign(s)).backward()     # sign/neg of a 0-d tensor hold a NumPy scalar
assert x.grad.tolist() == [1.0, 1.0]
"""


@pytest.fixture(scope="module")
def zero_dim_crash():
    proc = subprocess.run([sys.executable, "-c", ZERO_DIM_CRASH], capture_output=True,
                          timeout=120)
    return proc.returncode != 0 and (proc.returncode < 0 or b"Traceback" not in proc.stderr)


def _np(t):
    if t is None:
        return None
    t = t.detach()
    if isinstance(t, torch.Tensor):
        return t.numpy(force=True)      # also materializes torch's ZeroTensor gradients
    return t.numpy()


def _close(got, want, what, prog):
    want = np.asarray(want)
    got = np.zeros_like(want) if got is None else np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}\n{prog}"
    atol = RTOL * max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=atol,
                               err_msg=f"{what} differs from torch\n{prog}")


def _leaf_grads(ns, leaves):
    return [_np(t.grad) for t in leaves]


def _second_order(ns, prog, r):
    """Leaf .grad after backward of sum_i sum(g_i * r_i), g = grad(loss, create_graph)."""
    leaves = prog.make_leaves(ns)
    loss = prog.loss(ns, prog.run(ns, leaves))
    wrt = prog.grad_leaves(leaves)
    gs = ns.autograd.grad(loss, wrt, create_graph=True, allow_unused=True)
    s = None
    for g, ri in zip(gs, r):
        if g is not None:
            term = (g * ns.tensor(ri, dtype=ns.float64)).sum()
            s = term if s is None else s + term
    if s is not None and s.requires_grad:
        s.backward()
    return [_np(g) for g in gs], _leaf_grads(ns, wrt)


@pytest.mark.parametrize("seed", range(N_PROGRAMS))
def test_random_program(seed, zero_dim_crash):
    prog = generate(seed)
    if zero_dim_crash and any(s == () for s in prog.shapes):
        pytest.fail("not run: this program has 0-d values, and the core still crashes "
                    "(segfault) on a 0-d tensor made by sign() or neg(), whose storage is a "
                    f"NumPy scalar instead of a 0-d array. Reproduction:{ZERO_DIM_CRASH}"
                    f"\n{prog}")

    # forward values of every intermediate, and first-order leaf gradients
    tl, pl = prog.make_leaves(tg), prog.make_leaves(torch)
    tv, pv = prog.run(tg, tl), prog.run(torch, pl)
    for k, (a, b) in enumerate(zip(tv, pv)):
        assert tuple(a.shape) == tuple(b.shape), f"v{k}: shape\n{prog}"
        _close(_np(a), _np(b), f"value v{k}", prog)
    tloss, ploss = prog.loss(tg, tv), prog.loss(torch, pv)
    _close(_np(tloss), _np(ploss), "loss", prog)
    assert tloss.requires_grad == ploss.requires_grad, f"loss.requires_grad\n{prog}"
    if not ploss.requires_grad:      # the loss reads no leaf that requires grad
        return
    tloss.backward()
    ploss.backward()
    for i, (a, b) in enumerate(zip(_leaf_grads(tg, tl), _leaf_grads(torch, pl))):
        if b is None:
            assert a is None or not np.any(a), f"leaf {i}: unexpected grad\n{prog}"
        else:
            _close(a, b, f"grad of leaf {i}", prog)

    # second order: the create_graph path's gradients, then their gradients
    rng = np.random.default_rng(10_000 + seed)
    r = [np.asarray(rng.standard_normal(t.shape)) for t in prog.grad_leaves(pl)]
    tg_g, tg_gg = _second_order(tg, prog, r)
    pt_g, pt_gg = _second_order(torch, prog, r)
    for i, (a, b) in enumerate(zip(tg_g, pt_g)):
        if b is not None:
            _close(a, b, f"create_graph grad of leaf {i}", prog)
    for i, (a, b) in enumerate(zip(tg_gg, pt_gg)):
        if b is None:
            assert a is None or not np.any(a), f"leaf {i}: unexpected 2nd-order grad\n{prog}"
        else:
            _close(a, b, f"second-order grad of leaf {i}", prog)


def test_generator_is_deterministic_and_varied():
    a, b = generate(7), generate(7)
    assert str(a) == str(b)
    assert all(np.array_equal(x, y) for x, y in zip(a.leaf_data, b.leaf_data))
    names = {name for s in range(N_PROGRAMS) for name, _, _ in generate(s).instrs}
    from fuzzgen import OPS
    assert names == set(OPS), f"ops never drawn: {set(OPS) - names}"
    lengths = [len(generate(s).instrs) for s in range(N_PROGRAMS)]
    assert min(lengths) >= 3 and max(lengths) <= 12

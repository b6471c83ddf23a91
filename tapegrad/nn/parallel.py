"""Data-parallel training across processes, as ``torch.nn.parallel``."""
import contextlib
import weakref

import numpy as np

from .. import distributed as dist
from .. import tape as _tape
from ..autograd import engine
from ..grad_mode import no_grad
from ..tape import api
from ..tensor import _wrap
from .module import Module

__all__ = ["DistributedDataParallel"]


class _Bucket:
    """Parameters of one dtype whose gradients travel in one all-reduce: their values
    side by side, then one presence flag per parameter (1 where this rank has a
    gradient), so that ranks agree on which parameters got one."""

    def __init__(self, params):
        self.params = params
        self.sizes = [p._data.size for p in params]
        self.offsets = np.cumsum([0] + self.sizes[:-1]).tolist()
        self.buf = np.empty(sum(self.sizes) + len(params), params[0]._data.dtype)

    def reduce(self, g, grads):
        """Averages ``grads`` (arrays, None where missing) over the ranks in place;
        returns the flags (how many ranks had each gradient)."""
        buf, k, scale = self.buf, 0, 1.0 / g.size
        for n, a in zip(self.sizes, grads):
            if a is None:
                buf[k:k + n] = 0
            else:
                np.multiply(a.reshape(-1), scale, out=buf[k:k + n])
            k += n
        for i, a in enumerate(grads):
            buf[k + i] = a is not None
        g.wait(g.comm.Iallreduce(g.MPI.IN_PLACE, buf, op=g.MPI.SUM), "gradient all-reduce")
        k = 0
        for n, a in zip(self.sizes, grads):
            if a is not None:
                a.reshape(-1)[:] = buf[k:k + n]
            k += n
        return buf[k:]


class DistributedDataParallel(Module):
    """Wraps ``module`` for data-parallel training: parameters and buffers start equal to
    rank 0's, buffers follow rank 0's at each forward (``broadcast_buffers``), and each
    backward() leaves every rank with the gradients averaged over the ranks, one
    all-reduce per bucket of about ``bucket_cap_mb``. Works inside ``tg.compile``: the
    averaging is a stop of the replayed program."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0,
                 broadcast_buffers=True, process_group=None, bucket_cap_mb=None,
                 find_unused_parameters=False, check_reduction=False,
                 gradient_as_bucket_view=False, static_graph=False):
        super().__init__()
        if device_ids is not None or output_device is not None:
            raise ValueError("DistributedDataParallel device_ids and output_device arguments "
                             "only work with single-device/multiple-device GPU modules or CPU "
                             f"modules, but got device_ids {device_ids}, output_device "
                             f"{output_device}, and module parameters {{device(type='cpu')}}.")
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: module must be a tapegrad.nn.Module, "
                            f"got {type(module).__name__}")
        g = dist._group(process_group)
        self.module = module
        self.broadcast_buffers = broadcast_buffers
        self.require_backward_grad_sync = True
        self.find_unused_parameters = find_unused_parameters
        self.dim = dim
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise RuntimeError("DistributedDataParallel is not needed when a module doesn't "
                               "have any parameter that requires a gradient.")
        _same_everywhere(g, module)
        with no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                if t._data.dtype in dist._DTYPES:
                    dist.broadcast(t, 0)
        cap = (25.0 if bucket_cap_mb is None else float(bucket_cap_mb)) * 2 ** 20
        self._buckets = []
        for dt in sorted({p._data.dtype.str for _, p in named}):
            group, size = [], 0
            for _, p in reversed(named):       # gradients of the last layers come first
                if p._data.dtype.str != dt:
                    continue
                if group and size + p._data.nbytes > cap:
                    self._buckets.append(_Bucket(group))
                    group, size = [], 0
                group.append(p)
                size += p._data.nbytes
            self._buckets.append(_Bucket(group))
        self._ids = {id(p) for b in self._buckets for p in b.params}
        self._set_in = None      # the compile recording that entered no_sync, if any
        engine.AFTER_BACKWARD.append(weakref.WeakMethod(self._after_backward))

    def forward(self, *inputs, **kwargs):
        g = dist._GROUP[0]
        if self.broadcast_buffers and g is not None and g.size > 1:
            bufs = [b for b in self.module.buffers() if b._data.dtype in dist._DTYPES]
            if bufs:
                _sync_buffers(bufs)
        return self.module(*inputs, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside keep their gradients local (accumulation); the next
        one outside averages what has been accumulated."""
        old = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        self._set_in = _tape.TRACE[0]
        try:
            yield
        finally:
            self.require_backward_grad_sync = old
            self._set_in = None

    def _after_backward(self, touched):
        if self._ids.isdisjoint(touched):
            return
        tr = _tape.TRACE[0]
        if tr is not None and self._set_in is not tr:
            flag = self.require_backward_grad_sync
            tr.hyper_guard(lambda: self.require_backward_grad_sync == flag)
        g = dist._group()
        if not self.require_backward_grad_sync or g.size == 1:   # (one rank: the average
            return                                               # is its own gradient)
        for b in self._buckets:
            grads = [p._grad for p in b.params]
            if tr is not None:
                if any(t is None for t in grads):
                    tr.fail("DistributedDataParallel: a parameter without a gradient on "
                            "this rank")
                else:
                    tr.pycall(lambda arrays, b=b: b.reduce(g, arrays), grads)
            had = b.reduce(g, [None if t is None else t._data for t in grads])
            for p, t, n, k in zip(b.params, grads, had, b.offsets):
                if t is None and n:          # other ranks' gradients, zero here
                    p._grad = _wrap(b.buf[k:k + p._data.size].reshape(p._data.shape).copy())


@api
def _sync_buffers(bufs):
    """Rank 0's buffers (running statistics) on every rank."""
    for t in bufs:
        dist.broadcast(t, 0)


def _same_everywhere(g, module):
    """Raises on every rank, naming the first difference, unless all ranks hold the same
    parameter and buffer names, shapes and dtypes (no rank would wait forever)."""
    mine = [(n, tuple(t.shape), str(t.dtype)) for n, t in
            list(module.named_parameters()) + list(module.named_buffers())]
    everyone = g.comm.allgather(mine)
    for r, theirs in enumerate(everyone):
        if theirs == everyone[0]:
            continue
        for i in range(max(len(theirs), len(everyone[0]))):
            a = everyone[0][i] if i < len(everyone[0]) else None
            b = theirs[i] if i < len(theirs) else None
            if a != b:
                raise RuntimeError(
                    f"DistributedDataParallel: the ranks' models differ: rank 0 has "
                    f"{_describe(a)}, rank {r} has {_describe(b)}")


def _describe(entry):
    if entry is None:
        return "no more parameters"
    name, shape, dtype = entry
    return f"'{name}' of shape {list(shape)} ({dtype})"

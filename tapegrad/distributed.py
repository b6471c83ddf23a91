"""tapegrad.distributed: collectives across processes, with torch.distributed's names, on
MPI (mpi4py).

Launch with ``mpiexec -n N python script.py``; ``init_process_group(backend="mpi")``
takes the rank and world size from the launcher (one process without a launcher is
world size 1). Collectives work on tensors in place through MPI's buffer interface,
without pickling. Inside a ``tg.compile``d function a collective is a stop in the
program: every replay hands the program's arrays to MPI at that point.

A rank that raises an uncaught exception aborts the whole job (``MPI_Abort``) after
printing its rank, so the others never wait on it forever; a collective that waits
longer than ``timeout`` (30 minutes unless given, as PyTorch's) aborts the job the same
way, naming the rank and the collective. Importing tapegrad never
needs MPI: mpi4py is imported by ``init_process_group``.
"""
import datetime
import importlib.util
import sys
import time

import numpy as np

from . import tape as _tape
from .ops.base import bump_version
from .tape import api
from .tensor import Tensor

__all__ = ["ReduceOp", "Work", "init_process_group", "destroy_process_group",
           "is_initialized", "is_available", "is_mpi_available", "get_rank",
           "get_world_size", "get_backend", "barrier", "all_reduce", "broadcast",
           "all_gather", "reduce", "all_gather_object", "broadcast_object_list"]


class ReduceOp:
    """How a collective combines the ranks' values."""

    class RedOpType:
        def __init__(self, name, value):
            self.name, self.value = name, value

        def __repr__(self):
            return f"<RedOpType.{self.name}: {self.value}>"

    SUM = RedOpType("SUM", 0)
    AVG = RedOpType("AVG", 1)
    PRODUCT = RedOpType("PRODUCT", 2)
    MIN = RedOpType("MIN", 3)
    MAX = RedOpType("MAX", 4)


_MPI_OPS = {"SUM": "SUM", "AVG": "SUM", "PRODUCT": "PROD", "MIN": "MIN", "MAX": "MAX"}
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64))
_TIMEOUT = 1800.0
_NOT_INIT = ("Default process group has not been initialized, please make sure to call "
             "init_process_group.")


class _Group:
    """The default process group: a private duplicate of MPI's world communicator."""

    def __init__(self, MPI, timeout):
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.timeout = timeout
        self.hook = sys.excepthook

    def abort(self, message):
        """Ends every rank of the job: one rank's failure must not leave the others
        waiting in a collective."""
        sys.stderr.write(f"tapegrad.distributed: rank {self.rank} of {self.size}: "
                         f"{message}; aborting all ranks\n")
        sys.stderr.flush()
        time.sleep(0.5)     # (the launcher forwards what was printed before it kills)
        self.MPI.COMM_WORLD.Abort(1)

    def wait(self, req, what, timeout=None):
        """Completes a nonblocking MPI request within the timeout (the group's if None)."""
        timeout = self.timeout if timeout is None else timeout
        start = time.monotonic()
        nap = 0.0
        while not req.Test():
            now = time.monotonic()
            if now - start > timeout:
                self.abort(f"{what} timed out after {timeout:g} s")
            # spin for the first millisecond (a collective's usual time: sleeping made
            # an all-reduce of 0.8 MB 4x slower), then back off, leaving the core to
            # the other ranks and the launcher when a peer is late
            if now - start > 1e-3:
                nap = min(max(nap * 2, 1e-5), 1e-3)
                time.sleep(nap)


_GROUP = [None]


def _group(group=None):
    g = _GROUP[0]
    if g is None:
        raise ValueError(_NOT_INIT)
    if group is not None and group is not g:
        raise ValueError("tapegrad.distributed has one process group, the default one: "
                         "pass group=None")
    return g


def is_available():
    """Whether collectives can run here (mpi4py is installed)."""
    return importlib.util.find_spec("mpi4py") is not None


is_mpi_available = is_available


def is_initialized():
    return _GROUP[0] is not None


def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1,
                       store=None, group_name="", pg_options=None, device_id=None):
    """Joins the job that ``mpiexec`` launched (or a job of one process without it)."""
    if _GROUP[0] is not None:
        raise ValueError("trying to initialize the default process group twice!")
    name = "mpi" if backend is None else str(backend).lower()
    if name in ("gloo", "nccl", "ucc", "xccl"):
        raise RuntimeError(f"Distributed package doesn't have {name.upper()} built in: "
                           "tapegrad.distributed runs on MPI, init_process_group('mpi')")
    if name != "mpi":
        raise ValueError(f"Invalid backend: {backend!r} (tapegrad.distributed supports 'mpi')")
    if init_method not in (None, "env://") or store is not None:
        raise ValueError("init_process_group: with the 'mpi' backend the launcher (mpiexec) "
                         "connects the processes; init_method and store are not used")
    if timeout is None:
        timeout = _TIMEOUT
    else:
        timeout = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) \
            else float(timeout)
        if not timeout > 0:
            raise ValueError(f"init_process_group: timeout must be positive, got {timeout}")
    try:
        from mpi4py import MPI
    except ImportError as exc:      # (mpi4py present without an MPI library raises too)
        raise RuntimeError("init_process_group(backend='mpi') needs mpi4py and an MPI "
                           "library: pip install 'tapegrad[mpi]' (mpi4py and mpich); "
                           f"importing mpi4py failed: {exc}") from None
    g = _Group(MPI, timeout)
    for what, want, have in (("world_size", world_size, g.size), ("rank", rank, g.rank)):
        if want not in (-1, None) and want != have:
            g.comm.Free()
            raise ValueError(f"init_process_group: {what}={want}, but the MPI launcher "
                             f"started this process with {what} {have}")

    def excepthook(kind, value, tb):
        g.hook(kind, value, tb)
        if _GROUP[0] is g and g.size > 1:
            g.abort(f"{kind.__name__}: {value}")

    sys.excepthook = excepthook
    _GROUP[0] = g


def destroy_process_group(group=None):
    """Leaves the group; the process can join again with init_process_group."""
    g = _GROUP[0]
    if g is None:
        raise AssertionError("Process group cannot be None")    # (as PyTorch)
    _group(group)
    _GROUP[0] = None
    sys.excepthook = g.hook
    g.comm.Free()


def get_rank(group=None):
    return _group(group).rank


def get_world_size(group=None):
    return _group(group).size


def get_backend(group=None):
    _group(group)
    return "mpi"


class Work:
    """A collective started with ``async_op=True``: ``wait()`` completes it."""

    def __init__(self, g, req, what, finish):
        self._g, self._req, self._what, self._finish = g, req, what, finish

    def is_completed(self):
        if self._req is not None and self._req.Test():
            self._done()
        return self._req is None

    def wait(self, timeout=None):
        if self._req is not None:
            if isinstance(timeout, datetime.timedelta):
                timeout = timeout.total_seconds()
            self._g.wait(self._req, self._what, timeout)
            self._done()
        return True

    def _done(self):
        self._req = None
        if self._finish is not None:
            self._finish()


def _check(what, t, name="tensor"):
    if not isinstance(t, Tensor):
        raise TypeError(f"Invalid function argument. Expected parameter `{name}` of type "
                        f"tapegrad.Tensor\n             but got {type(t)} instead.")
    if t._data.dtype not in _DTYPES:
        raise TypeError(f"{what}: unsupported dtype {t.dtype} (float32, float64 and int64 "
                        "tensors only)")


def _rank_arg(g, what, r):
    if not isinstance(r, (int, np.integer)) or not 0 <= r < g.size:
        raise RuntimeError(f"{what}: invalid root rank: {r} (world size {g.size})")
    return int(r)


def _run(g, what, tensors, start, async_op, changed):
    """Runs the collective ``start(arrays) -> (request, finish or None)`` over the
    tensors' storage (it writes those of ``changed``); a compile recording makes it a
    stop of its program."""
    tr = _tape.TRACE[0]
    for t in changed:
        bump_version(t)

    def blocking(arrays):
        req, finish = start(arrays)
        g.wait(req, what)
        if finish is not None:
            finish()

    if tr is not None:
        tr.pycall(blocking, tensors)
    elif async_op:
        req, finish = start([t._data for t in tensors])
        return Work(g, req, what, finish)
    blocking([t._data for t in tensors])
    return Work(g, None, what, None) if async_op else None


def _contiguous(arr):
    """A C-contiguous array MPI can read and write, and what puts the result back."""
    if arr.flags.c_contiguous:
        return arr, []
    buf = np.ascontiguousarray(arr)
    return buf, [lambda: np.copyto(arr, buf)]


def _then(steps):
    if not steps:
        return None

    def run():
        for s in steps:
            s()
    return run


def _reduce_op(what, op, t):
    if not isinstance(op, ReduceOp.RedOpType):
        raise TypeError(f"{what}: op must be a tapegrad.distributed.ReduceOp, got {op!r}")
    if op is ReduceOp.AVG and t._data.dtype.kind != "f":
        raise RuntimeError(f"{what}: ReduceOp.AVG needs a floating point tensor, got "
                           f"{t.dtype}")
    return getattr(_GROUP[0].MPI, _MPI_OPS[op.name])


def _averaged(op, g, buf, back):
    """The steps after the sum of an AVG: divide by the world size, then put it back."""
    if op is ReduceOp.AVG:
        return _then([lambda: np.divide(buf, g.size, out=buf)] + back)
    return _then(back)


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Every rank's ``tensor`` becomes the reduction of all ranks' values."""
    g = _group(group)
    _check("all_reduce", tensor)
    mop = _reduce_op("all_reduce", op, tensor)

    def start(arrays):
        buf, back = _contiguous(arrays[0])
        return g.comm.Iallreduce(g.MPI.IN_PLACE, buf, op=mop), _averaged(op, g, buf, back)
    return _run(g, "all_reduce", [tensor], start, async_op, [tensor])


def reduce(tensor, dst, op=ReduceOp.SUM, group=None, async_op=False):
    """Rank ``dst``'s ``tensor`` becomes the reduction of all ranks' values (the others'
    are left as they were)."""
    g = _group(group)
    _check("reduce", tensor)
    dst = _rank_arg(g, "reduce", dst)
    mop = _reduce_op("reduce", op, tensor)

    def start(arrays):
        buf, back = _contiguous(arrays[0])
        if g.rank != dst:
            return g.comm.Ireduce(buf, None, op=mop, root=dst), None
        return (g.comm.Ireduce(g.MPI.IN_PLACE, buf, op=mop, root=dst),
                _averaged(op, g, buf, back))
    return _run(g, "reduce", [tensor], start, async_op, [tensor] if g.rank == dst else [])


def broadcast(tensor, src, group=None, async_op=False):
    """Every rank's ``tensor`` becomes rank ``src``'s."""
    g = _group(group)
    _check("broadcast", tensor)
    src = _rank_arg(g, "broadcast", src)

    def start(arrays):
        buf, back = _contiguous(arrays[0])
        return g.comm.Ibcast(buf, root=src), _then(back)
    return _run(g, "broadcast", [tensor], start, async_op, [tensor])


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """``tensor_list[r]`` becomes rank r's ``tensor``, on every rank."""
    g = _group(group)
    _check("all_gather", tensor)
    if not isinstance(tensor_list, (list, tuple)):
        raise TypeError("all_gather: tensor_list must be a list of tensors, got "
                        f"{type(tensor_list).__name__}")
    if len(tensor_list) != g.size:
        raise RuntimeError(f"all_gather: invalid output tensor list at index 0 (expected "
                           f"length {g.size}, got {len(tensor_list)})")
    for i, t in enumerate(tensor_list):
        _check("all_gather", t, "tensor_list")
        if t._data.shape != tensor._data.shape or t._data.dtype != tensor._data.dtype:
            raise RuntimeError(f"all_gather: invalid tensor at index {i} of tensor_list "
                               f"(expected {list(tensor.shape)} {tensor.dtype}, got "
                               f"{list(t.shape)} {t.dtype})")

    def start(arrays):
        src = np.ascontiguousarray(arrays[0])
        out = np.empty((g.size,) + src.shape, src.dtype)

        def scatter():
            for r, dst in enumerate(arrays[1:]):
                np.copyto(dst, out[r])
        return g.comm.Iallgather(src, out), scatter
    tensors = [tensor] + list(tensor_list)
    return _run(g, "all_gather", tensors, start, async_op, tensors[1:])


def barrier(group=None, async_op=False, device_ids=None):
    """Returns once every rank has called it."""
    g = _group(group)
    return _run(g, "barrier", [], lambda arrays: (g.comm.Ibarrier(), None), async_op, [])


def _objects(what):
    if _tape.TRACE[0] is not None:
        _tape.TRACE[0].fail(f"{what} (a collective of Python objects)")


def all_gather_object(object_list, obj, group=None):
    """``object_list[r]`` becomes rank r's ``obj`` (any picklable object)."""
    g = _group(group)
    _objects("all_gather_object")
    if len(object_list) != g.size:
        raise RuntimeError(f"all_gather_object: object_list has {len(object_list)} "
                           f"entries, the world size is {g.size}")
    object_list[:] = g.comm.allgather(obj)


def broadcast_object_list(object_list, src=0, group=None, device=None):
    """Every rank's ``object_list`` becomes rank ``src``'s (picklable objects)."""
    g = _group(group)
    _objects("broadcast_object_list")
    src = _rank_arg(g, "broadcast_object_list", src)
    got = g.comm.bcast(list(object_list) if g.rank == src else None, root=src)
    if len(got) != len(object_list):
        raise RuntimeError(f"broadcast_object_list: rank {src} sent {len(got)} objects, "
                           f"this rank's list has {len(object_list)}")
    object_list[:] = got


# entries that tg.compile logs: a re-run of a compiled function's Python after a replay
# gets their results from the log instead of running them a second time
all_reduce, reduce, broadcast, all_gather, barrier = (
    api(all_reduce), api(reduce), api(broadcast), api(all_gather), api(barrier))

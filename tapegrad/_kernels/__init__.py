"""Every Numba kernel of tapegrad and the interpreters that call them, by family:
``layout`` (the tape's row table, opcodes), ``vmath`` (vectorisable math), ``elementwise``,
``reduce`` (reductions, views, indexing), ``norm`` (layer normalisation), ``linalg``,
``optim`` (fused optimizer updates),
``reverse`` (the reverse pass), ``program`` (compiled programs' interpreter), ``forward``
(their forward kernels) and ``rng`` (the random stream); ``cache`` holds the on-disk
cache.

Each op's kernels are compiled the first time an op of that kind and dtype runs (a
C function per op, called through a table of addresses), so a program only pays for
the ops it uses. The cache of compiled code is stamped with a hash of every kernel
source (``KERNEL_SOURCES``), so that no edit can load stale machine code.

The tape is an int64 row table ``T`` (one row per tensor value: leaf, constant or op
result) plus a float64 table ``F`` of scalar parameters. Values are ordinary NumPy
arrays; a row stores the addresses of the values its backward needs, and the
interpreter reads them through raw pointers, so nothing is copied into an arena.
Adjoints live in one flat arena per backward, at the row's ``AOFF``.
"""
from .cache import KERNEL_SOURCES, _Locator  # noqa: F401
from .layout import *  # noqa: F401,F403
from .vmath import *  # noqa: F401,F403
from .linalg import *  # noqa: F401,F403
from .elementwise import *  # noqa: F401,F403
from .elementwise import _BINARY_VJPS, _UNARY_VJPS  # noqa: F401
from .reduce import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .optim import *  # noqa: F401,F403
from .reverse import *  # noqa: F401,F403
from .reverse import _COMPILED, _FAMILY_VJPS  # noqa: F401
from .program import *  # noqa: F401,F403
from .forward import *  # noqa: F401,F403
from .rng import *  # noqa: F401,F403
from .forward import _FWD_COMPILED  # noqa: F401

"""The check that a compiled training loop is the eager one: same losses and parameters
to the bit, no fallback, every call after the recordings a replay."""
import numpy as np

import tapegrad as tg


def replays_as_eager(train, calls):
    """``train(wrap)`` runs ``calls`` steps of ``wrap(step)`` from the same start and
    returns (losses, parameter arrays, the wrapped step)."""
    want, wp, _ = train(lambda f: f)
    got, gp, step = train(tg.compile)
    assert got == want
    for g, w in zip(gp, wp):
        np.testing.assert_array_equal(g, w)
    assert step.fallbacks == 0 and step.records <= 2 and step.replays == calls - step.records

"""Anomaly detection: name the op (and where it was recorded) whose backward made a NaN."""
import functools

from ..tape import ANOMALY


class set_detect_anomaly:
    """Turns anomaly detection on or off; also a context manager restoring the old mode."""

    def __init__(self, mode, check_nan=True):
        self._prev = ANOMALY[0]
        ANOMALY[0] = bool(mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        ANOMALY[0] = self._prev
        return False


class detect_anomaly(set_detect_anomaly):
    """Context manager (and decorator) that enables anomaly detection inside it."""

    def __init__(self, check_nan=True):
        self._prev = ANOMALY[0]

    def __enter__(self):
        self._prev = ANOMALY[0]
        ANOMALY[0] = True
        return self

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly():
                return fn(*args, **kwargs)
        return wrapper


def is_anomaly_enabled():
    return ANOMALY[0]

"""Ctrl-C never cuts a backward pass or a compiled replay in half, and is never lost.

A SIGINT that arrives in the main thread while it is inside atomic work (``enter`` ..
``leave``) is delivered as KeyboardInterrupt when that work ends, as PyTorch does for
its backward; a second Ctrl-C meanwhile is delivered at once. One that arrives while
a destructor runs is delivered once it has returned (Python would only print it).
This needs tapegrad's handler in place of Python's default one: it is put there on
first use and behaves as the default elsewhere. A handler of the user's is left
alone (and atomic work then does not defer).
"""
import _thread
import signal
import sys
import threading
import time

_MAIN = threading.main_thread().ident
DEPTH = [0]          # nesting of atomic work in the main thread
_PENDING = [False]
_INSTALLED = [False]
_OWED = [False]      # an interrupt that a destructor held back


def _handler(signum, frame):
    if DEPTH[0] and not _PENDING[0]:
        _PENDING[0] = True
        return
    if _in_destructor(frame):
        redeliver()        # raised here it would only be printed
        return
    _PENDING[0] = _OWED[0] = False
    signal.default_int_handler(signum, frame)


def _in_destructor(frame):
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _install():
    _INSTALLED[0] = True
    try:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _handler)
    except ValueError:     # not the main interpreter
        pass


def enter():
    """Starts atomic work; returns whether it counts (then call ``leave``)."""
    if threading.get_ident() != _MAIN:
        return False
    if not _INSTALLED[0]:
        _install()
    DEPTH[0] += 1
    return True


def leave():
    """Ends atomic work; delivers an interrupt that arrived meanwhile."""
    DEPTH[0] -= 1
    if _PENDING[0] and not DEPTH[0]:
        _PENDING[0] = False
        raise KeyboardInterrupt


def redeliver():
    """An interrupt arrived where Python would only print it (a destructor): a watcher
    thread delivers it again once the main thread has left every destructor."""
    _OWED[0] = True
    threading.Thread(target=_watch, daemon=True, name="tapegrad-interrupt").start()


def _watch():
    for _ in range(20_000):      # destructors are short; give up after 10 s
        frame = sys._current_frames().get(_MAIN)
        if frame is None or not _in_destructor(frame):
            break
        time.sleep(0.0005)
    if _OWED[0]:
        _thread.interrupt_main()

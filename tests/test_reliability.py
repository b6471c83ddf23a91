"""Nothing lost: an interrupt inside a destructor is delivered, and a damaged or missing
checkpoint file gives one documented error without loading anything."""
import os
import time

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.tape import Tape


@pytest.mark.usefixtures("python_sigint_handler")
def test_interrupt_inside_a_destructor_is_delivered(monkeypatch):
    """Python only prints what ``__del__`` raises; the tensor's destructor finishes its
    work and delivers the interrupt again, in the program's own flow."""
    raised = []
    release = Tape.release

    def interrupted_release(self):
        if not raised:
            raised.append(True)
            raise KeyboardInterrupt
        release(self)

    monkeypatch.setattr(Tape, "release", interrupted_release)
    x = tg.ones(3, requires_grad=True)
    y = (x * 2).exp()
    tape = y._tape
    with pytest.raises(KeyboardInterrupt):
        del y
        end = time.perf_counter() + 5
        while time.perf_counter() < end:      # delivered here, within milliseconds
            pass
    assert raised and not tape.live and tape.saved == {}
    z = (x * 3).sum()                # and the next computation is right
    z.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0, 3.0])


@pytest.fixture
def checkpoint(tmp_path):
    model = tg.nn.Sequential(tg.nn.Linear(40, 30), tg.nn.Linear(30, 2))
    path = tmp_path / "model.npz"
    tg.save(model.state_dict(), path)
    return path, path.read_bytes()


def damaged(data):
    third = len(data) // 3
    yield "truncated", data[:len(data) // 2]
    yield "empty", b""
    yield "junk", b"not a zip file at all" * 10
    yield "flipped byte", data[:third] + bytes([data[third] ^ 0x55]) + data[third + 1:]
    yield "cut at the end", data[:-30]


def test_damaged_file_raises_runtime_error_naming_it(checkpoint, tmp_path):
    path, data = checkpoint
    target = tg.nn.Sequential(tg.nn.Linear(40, 30), tg.nn.Linear(30, 2))
    before = {k: v.numpy().copy() for k, v in target.state_dict().items()}
    for what, content in damaged(data):
        bad = tmp_path / f"{what.replace(' ', '_')}.npz"
        bad.write_bytes(content)
        with pytest.raises(RuntimeError, match=str(bad.name)) as info:
            target.load_state_dict(tg.load(bad))
        assert "tg.load" in str(info.value), what
        for k, v in target.state_dict().items():
            np.testing.assert_array_equal(v.numpy(), before[k])
    assert tg.load(path).keys() == target.state_dict().keys()


def test_missing_path_raises_what_open_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        tg.load(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError):
        tg.load(os.fspath(tmp_path / "nope.npz"))
    with pytest.raises(IsADirectoryError):
        tg.load(tmp_path)
